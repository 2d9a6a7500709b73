# SPDX-License-Identifier: GPL-2.0-or-later
"""The OCI archive: an OCI image layout in a tar (``oci-archive:`` for skopeo).

DESIGN section 4. Layout of the outer tar, in this order (reproducible, not sorted: the
content layer's name is only known once it is written):

    oci-layout, blobs/, blobs/sha256/,
    blobs/sha256/<base layer>...   copied verbatim from the base image, if one is given
    blobs/sha256/<content layer>   uncompressed tar of content_dir (srv/repo, hostimage.json)
    blobs/sha256/<config>, blobs/sha256/<manifest>, index.json

The content layer is streamed straight into the archive while it is hashed: its outer
header is written first with a placeholder name (the size is known from the plan), then
rewritten in place with the real ``blobs/sha256/<digest>`` once the digest is known. So
the layer is written exactly once and never held in memory.

The reader (``OciArchive``) indexes the outer tar once and gives byte offsets of blobs and
of the files inside an uncompressed content layer, so a server can answer requests for
``srv/repo/...`` straight from the archive (``server.ArchiveTree`` does, through
``uncompressed_content_layer`` and ``iter_content_members``).
"""

from __future__ import annotations

import configparser
import functools
import gzip
import hashlib
import io
import json
import logging
import mmap
import os
import posixpath
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from koji_hostimage.errors import ArchiveError, HostImageError
from koji_hostimage.fsutil import atomic_output

from .tarwriter import (
    BLOCK,
    DIRTYPE,
    END_OF_ARCHIVE,
    REGTYPE,
    TarPlan,
    encode_header,
    padded,
    plan_tree,
    scan_tar,
    write_tar,
)

log = logging.getLogger(__name__)

LABEL_PREFIX = "io.koji-hostimage."
LABEL_OSTREE_REF = LABEL_PREFIX + "ostree.ref"
# Labels that mark an ostree-native (bootable) container image. Ours is a repo served by a
# web server, so setting them would make bootc / rpm-ostree treat it as something it is not.
FORBIDDEN_LABELS = ("ostree.bootable", "containers.bootc")

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
# Docker media types of base-image layers map to their OCI twins (same bytes).
_LAYER_MEDIA_MAP = {DOCKER_LAYER_GZIP: MEDIA_LAYER_GZIP, DOCKER_LAYER: MEDIA_LAYER}
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'

# Koji arch -> OCI (GOARCH) architecture.
KOJI_TO_OCI_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}

# Leading bytes of compressed layers whose media type claims a plain tar.
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_COPY_CHUNK = 4 * 1024 * 1024
_PLACEHOLDER_DIGEST = "0" * 64


class OciSpecError(HostImageError):
    """The image description given to the writer is not usable (arch, labels...)."""


@dataclass
class OciImageSpec:
    koji_arch: str
    created: int  # seconds since the epoch: the commit timestamp
    labels: dict[str, str] = field(default_factory=dict)
    ref_name: str | None = None  # index annotation org.opencontainers.image.ref.name
    cmd: list[str] | None = None  # only used with a base image (a base-less image runs nothing)
    exposed_ports: list[str] = field(default_factory=lambda: ["8080/tcp"])
    base_image: Path | None = None  # an oci-archive tar whose layers go first
    # Entrypoint of the image when a base is given. The base's own Entrypoint is never
    # inherited: Cmd must run as written, not as arguments to some wrapper of the base.
    entrypoint: list[str] | None = None


@dataclass
class OciWriteResult:
    path: Path
    size: int  # bytes of the whole archive
    manifest_digest: str  # sha256:...
    config_digest: str
    content_layer_digest: str
    content_layer_size: int
    index_digest: str  # sha256 of index.json
    layer_digests: list[str]  # all layers, base first, content last
    file_count: int  # regular files in the content layer
    seconds: float  # time the write took


@dataclass(frozen=True)
class LayerInfo:
    digest: str  # sha256:...
    size: int
    media_type: str
    offset: int  # where the blob's bytes start inside the outer tar

    @property
    def compressed(self) -> bool:
        return self.media_type not in (MEDIA_LAYER, DOCKER_LAYER)


@dataclass(frozen=True)
class ContentMember:
    """One entry of the content layer."""

    name: str  # path inside the layer, no leading "./", no trailing "/"
    kind: str  # "file", "dir", "symlink", "hardlink" or "other"
    size: int
    mode: int
    mtime: int
    linkname: str = ""
    # Offset of the file data inside the *archive file* (not the layer): set for files of
    # an uncompressed layer, None otherwise. A server can pread() this range directly.
    offset: int | None = None


# ---------------------------------------------------------------------------- labels, arch


def koji_arch_to_oci(arch: str) -> str:
    """The OCI architecture for a Koji arch name; OciSpecError for anything else."""
    try:
        return KOJI_TO_OCI_ARCH[arch]
    except KeyError:
        raise OciSpecError(
            f"unknown Koji arch {arch!r}: expected one of {', '.join(KOJI_TO_OCI_ARCH)}"
        ) from None


def rfc3339(epoch: int) -> str:
    """``2026-01-01T00:00:00Z`` for an epoch timestamp (UTC, whole seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def image_labels(
    commit: str,
    version: str,
    ref: str,
    created: int,
    source_url: str | None = None,
    revision: str | None = None,
) -> dict[str, str]:
    """The image labels of DESIGN section 4. Source labels are left out when unknown."""
    labels = {
        "com.coreos.ostree-commit": commit,
        "version": version,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.created": rfc3339(created),
        LABEL_OSTREE_REF: ref,
    }
    if revision:
        labels["org.opencontainers.image.revision"] = revision
    if source_url:
        labels["org.opencontainers.image.source"] = source_url
    return labels


def _check_labels(labels: dict[str, str]) -> None:
    for key in FORBIDDEN_LABELS:
        if key in labels:
            raise OciSpecError(
                f"labels: {key}: must not be set (it marks an ostree-native bootable image; "
                "this archive is an OSTree repo served over HTTP)"
            )
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise OciSpecError(f"labels: {key!r}: expected a string value, got {value!r}")


# ---------------------------------------------------------------------------- writer


def _canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob_name(digest: str) -> bytes:
    algorithm, _, hexdigest = digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}".encode()


class _OuterTar:
    """Writes the members of the outer tar (all with the same mtime, uid/gid 0)."""

    def __init__(self, out: BinaryIO, mtime: int):
        self.out = out
        self.mtime = mtime
        self.written: set[str] = set()

    def add_dir(self, name: str) -> None:
        self.out.write(encode_header(name.encode() + b"/", DIRTYPE, 0o755, 0, self.mtime))

    def add_bytes(self, name: bytes, data: bytes) -> None:
        self.out.write(encode_header(name, REGTYPE, 0o644, len(data), self.mtime))
        self.out.write(data)
        self.out.write(bytes(padded(len(data)) - len(data)))

    def add_blob(self, data: bytes) -> str:
        digest = _sha256(data)
        if digest not in self.written:
            self.add_bytes(_blob_name(digest), data)
            self.written.add(digest)
        return digest

    def pad(self, size: int) -> None:
        self.out.write(bytes(padded(size) - size))

    def finish(self) -> None:
        self.out.write(END_OF_ARCHIVE)


def write_oci_archive(dest: Path, content_dir: Path, spec: OciImageSpec) -> OciWriteResult:
    """Write the OCI archive of ``content_dir`` (one content layer) to ``dest``.

    ``content_dir`` holds ``srv/repo`` (an archive-mode OSTree repo) and
    ``srv/hostimage.json``; every file under it goes into the content layer with paths
    relative to it. With ``spec.base_image`` the base's layers come first, byte for byte.
    Written to a temporary name beside ``dest`` and renamed at the end: an interrupted
    write leaves nothing at ``dest``.
    """
    started = time.monotonic()
    dest = Path(dest)
    content_dir = Path(content_dir)
    architecture = _check_spec(spec)
    _check_content_dir(content_dir)
    base = _read_base_image(Path(spec.base_image), architecture) if spec.base_image else None
    try:
        plan = plan_tree(content_dir, spec.created)
        log.debug("packing %d entries (%d bytes) from %s", len(plan.entries), plan.size,
                  content_dir)
        with atomic_output(dest) as tmp, open(tmp, "w+b") as out:
            result = _write_archive(out, plan, spec, architecture, base)
            out.flush()
            os.fsync(out.fileno())  # the rename must not publish a file still in flight
    finally:
        if base is not None:
            base.archive.close()
    result.path = dest
    result.seconds = time.monotonic() - started
    log.info(
        "wrote %s: %d bytes, manifest %s, %d files in the content layer, %.2f s",
        dest, result.size, result.manifest_digest, result.file_count, result.seconds,
    )
    return result


def _check_spec(spec: OciImageSpec) -> str:
    """Validate what the writer was asked for; return the OCI architecture."""
    architecture = koji_arch_to_oci(spec.koji_arch)
    _check_labels(spec.labels)
    if isinstance(spec.created, bool) or not isinstance(spec.created, int) or spec.created < 0:
        raise OciSpecError(
            f"created: expected seconds since the epoch (a non-negative integer), "
            f"got {spec.created!r}"
        )
    for port in spec.exposed_ports:
        number, _, protocol = str(port).partition("/")
        if not number.isdigit() or protocol not in ("tcp", "udp", "sctp"):
            raise OciSpecError(f"exposed_ports: expected PORT/tcp or PORT/udp, got {port!r}")
    if spec.cmd is not None and not spec.base_image:
        log.debug("no base image: Cmd %s not set (a content image runs nothing)", spec.cmd)
    return architecture


def _check_content_dir(content_dir: Path) -> None:
    """content_dir must hold srv/repo, an archive-mode OSTree repo (DESIGN section 4)."""
    config_path = content_dir / "srv" / "repo" / "config"
    if not content_dir.is_dir():
        raise ArchiveError(f"{content_dir}: content directory does not exist")
    parser = configparser.ConfigParser()
    try:
        parser.read_string(config_path.read_text(encoding="utf-8"), str(config_path))
    except OSError as exc:
        raise ArchiveError(
            f"{config_path}: cannot read ({exc.strerror}): expected srv/repo to be an "
            "archive-mode OSTree repo"
        ) from exc
    except configparser.Error as exc:
        raise ArchiveError(f"{config_path}: not an OSTree repo config: {exc}") from exc
    mode = parser.get("core", "mode", fallback=None)
    if mode not in ("archive", "archive-z2"):
        raise ArchiveError(
            f"{config_path}: core.mode: expected archive (an archive-mode repo is what "
            f"clients pull over HTTP), got {mode!r}"
        )


def _write_archive(
    out: BinaryIO,
    plan: TarPlan,
    spec: OciImageSpec,
    architecture: str,
    base: _BaseImage | None,
) -> OciWriteResult:
    outer = _OuterTar(out, spec.created)
    outer.add_bytes(b"oci-layout", OCI_LAYOUT)
    outer.add_dir("blobs")
    outer.add_dir("blobs/sha256")
    layers: list[dict[str, Any]] = []
    if base is not None:
        layers.extend(_copy_base_layers(base, outer))
    layer_digest = _write_content_layer(outer, plan)
    layers.append({"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": plan.size})

    config_bytes = _canonical_json(_image_config(spec, architecture, base, layer_digest))
    config_digest = outer.add_blob(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest,
                   "size": len(config_bytes)},
        "layers": layers,
    }
    manifest_bytes = _canonical_json(manifest)
    manifest_digest = outer.add_blob(manifest_bytes)
    descriptor: dict[str, Any] = {
        "mediaType": MEDIA_MANIFEST,
        "digest": manifest_digest,
        "size": len(manifest_bytes),
        "platform": {"architecture": architecture, "os": "linux"},
    }
    if spec.ref_name:
        descriptor["annotations"] = {ANNOTATION_REF_NAME: spec.ref_name}
    index_bytes = _canonical_json(
        {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [descriptor]}
    )
    outer.add_bytes(b"index.json", index_bytes)
    outer.finish()
    return OciWriteResult(
        path=Path(),
        size=out.tell(),
        manifest_digest=manifest_digest,
        config_digest=config_digest,
        content_layer_digest=layer_digest,
        content_layer_size=plan.size,
        index_digest=_sha256(index_bytes),
        layer_digests=[layer["digest"] for layer in layers],
        file_count=plan.file_count,
        seconds=0.0,
    )


def _write_content_layer(outer: _OuterTar, plan: TarPlan) -> str:
    """Stream the content layer into the archive; fix up its header with the digest."""
    out = outer.out
    header_at = out.tell()
    placeholder = encode_header(
        _blob_name("sha256:" + _PLACEHOLDER_DIGEST), REGTYPE, 0o644, plan.size, outer.mtime
    )
    out.write(placeholder)
    out.flush()  # the packer writes through the same file object; keep the order
    hexdigest = write_tar(plan, out)
    outer.pad(plan.size)
    digest = "sha256:" + hexdigest
    header = encode_header(_blob_name(digest), REGTYPE, 0o644, plan.size, outer.mtime)
    if len(header) != len(placeholder):  # same name length, so never; but never ship a bad tar
        raise ArchiveError("content layer header changed size")
    end = out.tell()
    out.seek(header_at)
    out.write(header)
    out.seek(end)
    outer.written.add(digest)
    return digest


def _image_config(
    spec: OciImageSpec, architecture: str, base: _BaseImage | None, layer_digest: str
) -> dict[str, Any]:
    created = rfc3339(spec.created)
    container: dict[str, Any] = {}
    diff_ids: list[str] = []
    history: list[dict[str, Any]] = []
    if base is not None:
        base_config = base.config.get("config") or {}
        # Keep what the base needs to run (its environment, user, working directory);
        # Entrypoint, Cmd, ports and labels describe the base's own purpose, not ours.
        for key in ("Env", "User", "WorkingDir", "StopSignal", "Volumes"):
            if base_config.get(key):
                container[key] = base_config[key]
        diff_ids.extend(base.diff_ids)
        history.extend(base.config.get("history") or [])
        if spec.entrypoint:
            container["Entrypoint"] = list(spec.entrypoint)
        if spec.cmd:
            container["Cmd"] = list(spec.cmd)
    if spec.exposed_ports:
        container["ExposedPorts"] = {port: {} for port in spec.exposed_ports}
    container["Labels"] = dict(spec.labels)
    diff_ids.append(layer_digest)  # uncompressed layer: its digest is its diff_id
    history.append(
        {"created": created, "created_by": "koji-hostimage: OSTree repo content layer"}
    )
    return {
        "architecture": architecture,
        "os": "linux",
        "created": created,
        "config": container,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }


# ---------------------------------------------------------------------------- base image


@dataclass
class _BaseImage:
    archive: OciArchive
    config: dict[str, Any]
    layers: list[LayerInfo]
    diff_ids: list[str]


def _read_base_image(path: Path, architecture: str) -> _BaseImage:
    archive = OciArchive(path, architecture=architecture)
    config = archive.config
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    if len(diff_ids) != len(archive.layers):
        archive.close()
        raise ArchiveError(
            f"{path}: base image config rootfs.diff_ids has {len(diff_ids)} entries "
            f"for {len(archive.layers)} layers"
        )
    base_arch = config.get("architecture")
    if base_arch and base_arch != architecture:
        archive.close()
        raise ArchiveError(
            f"{path}: base image architecture is {base_arch!r}, expected {architecture!r}"
        )
    return _BaseImage(archive=archive, config=config, layers=archive.layers, diff_ids=diff_ids)


def _copy_base_layers(base: _BaseImage, outer: _OuterTar) -> list[dict[str, Any]]:
    """Copy the base's layer blobs verbatim (verifying each digest on the way)."""
    descriptors = []
    for layer in base.layers:
        if layer.digest not in outer.written:
            header = encode_header(
                _blob_name(layer.digest), REGTYPE, 0o644, layer.size, outer.mtime
            )
            outer.out.write(header)
            base.archive.copy_blob(layer.digest, outer.out)
            outer.pad(layer.size)
            outer.written.add(layer.digest)
        descriptors.append(
            {
                "mediaType": _LAYER_MEDIA_MAP.get(layer.media_type, layer.media_type),
                "digest": layer.digest,
                "size": layer.size,
            }
        )
    return descriptors


# ---------------------------------------------------------------------------- reader


class _Slice(io.RawIOBase):
    """A read-only, seekable window [start, start+length) of an open file."""

    def __init__(self, fd: int, start: int, length: int):
        self._fd = fd
        self._start = start
        self._length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._length - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._start + self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


class OciArchive:
    """Read an OCI archive (ours or any ``oci-archive`` tar with one image).

    ``architecture`` picks the manifest when the index lists several (by platform).
    Raises ArchiveError naming the file for anything that is not a whole OCI archive.
    """

    def __init__(self, path: Path, architecture: str | None = None):
        self.path = Path(path)
        self._map: mmap.mmap | None = None
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ArchiveError(f"{self.path}: cannot open: {exc.strerror}") from exc
        try:
            self._file_size = os.fstat(self._fd).st_size
            if self._file_size < BLOCK:
                raise ArchiveError(
                    f"{self.path}: not a tar archive, so not an OCI archive: only "
                    f"{self._file_size} bytes"
                )
            self._map = mmap.mmap(self._fd, 0, prot=mmap.PROT_READ)
            self._members = self._index_members()
            self._load(architecture)
        except BaseException:
            self.close()
            raise

    # -- context manager
    def __enter__(self) -> OciArchive:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- outer tar
    def _index_members(self) -> dict[str, tuple[int, int]]:
        """name -> (data offset, size) of every regular file in the outer tar."""
        assert self._map is not None
        members: dict[str, tuple[int, int]] = {}
        try:
            for header in scan_tar(self._map, 0, self._file_size, str(self.path)):
                if header.kind == "file":
                    members[normalize_member_name(header.name)] = (header.offset, header.size)
        except ArchiveError as exc:
            if not members:  # not even one good header: say what the file is not
                raise ArchiveError(
                    f"{self.path}: not a tar archive, so not an OCI archive ({exc})"
                ) from exc
            raise
        return members

    def _member_bytes(self, name: str) -> bytes:
        if name not in self._members:
            raise ArchiveError(f"{self.path}: not an OCI archive: no {name}")
        offset, size = self._members[name]
        return os.pread(self._fd, size, offset)

    def _json(self, what: str, data: bytes) -> dict[str, Any]:
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise ArchiveError(f"{self.path}: {what}: not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ArchiveError(f"{self.path}: {what}: expected a JSON object")
        return value

    def _load(self, architecture: str | None) -> None:
        layout = self._json("oci-layout", self._member_bytes("oci-layout"))
        if "imageLayoutVersion" not in layout:
            raise ArchiveError(f"{self.path}: oci-layout: imageLayoutVersion missing")
        self.index = self._json("index.json", self._member_bytes("index.json"))
        descriptor = self._pick_manifest(self.index, "index.json", architecture)
        self.manifest_descriptor = descriptor
        self.manifest = self._json(
            f"manifest {descriptor['digest']}", self.read_blob(descriptor["digest"])
        )
        if self.manifest.get("mediaType", MEDIA_MANIFEST) not in (MEDIA_MANIFEST,
                                                                  DOCKER_MANIFEST):
            raise ArchiveError(
                f"{self.path}: manifest {descriptor['digest']}: unsupported media type "
                f"{self.manifest.get('mediaType')!r}"
            )
        config_descriptor = self._descriptor(self.manifest.get("config"), "manifest config")
        self.config = self._json(
            f"config {config_descriptor['digest']}", self.read_blob(config_descriptor["digest"])
        )
        self.layers = []
        for number, entry in enumerate(self.manifest.get("layers") or []):
            layer = self._descriptor(entry, f"manifest layers[{number}]")
            offset, size = self._blob_location(layer["digest"])
            if size != layer["size"]:
                raise ArchiveError(
                    f"{self.path}: layer {layer['digest']}: blob has {size} bytes, "
                    f"manifest says {layer['size']}"
                )
            self.layers.append(
                LayerInfo(layer["digest"], size, layer.get("mediaType", MEDIA_LAYER), offset)
            )

    def _descriptor(self, entry: Any, what: str) -> dict[str, Any]:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("digest"), str)
            or not isinstance(entry.get("size"), int)
        ):
            raise ArchiveError(f"{self.path}: {what}: expected a descriptor with digest and size")
        return entry

    def _pick_manifest(
        self, index: dict[str, Any], what: str, architecture: str | None, depth: int = 0
    ) -> dict[str, Any]:
        manifests = index.get("manifests")
        if not isinstance(manifests, list) or not manifests:
            raise ArchiveError(f"{self.path}: {what}: no manifests")
        candidates = [self._descriptor(m, f"{what} manifests[]") for m in manifests]
        if len(candidates) > 1 and architecture:
            candidates = [
                m for m in candidates
                if (m.get("platform") or {}).get("architecture") in (None, architecture)
            ] or candidates
        if len(candidates) != 1:
            raise ArchiveError(
                f"{self.path}: {what}: {len(candidates)} manifests; expected one"
                + (f" for architecture {architecture}" if architecture else "")
            )
        chosen = candidates[0]
        if chosen.get("mediaType") in (MEDIA_INDEX, DOCKER_MANIFEST_LIST):
            if depth > 2:
                raise ArchiveError(f"{self.path}: {what}: image indexes nested too deep")
            nested = self._json(f"index {chosen['digest']}", self.read_blob(chosen["digest"]))
            return self._pick_manifest(nested, f"index {chosen['digest']}", architecture,
                                       depth + 1)
        return chosen

    # -- blobs
    def _blob_location(self, digest: str) -> tuple[int, int]:
        algorithm, _, hexdigest = digest.partition(":")
        name = f"blobs/{algorithm}/{hexdigest}"
        if algorithm != "sha256" or name not in self._members:
            raise ArchiveError(f"{self.path}: blob {digest} is missing")
        return self._members[name]

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.config.get("config") or {}).get("Labels") or {})

    @property
    def architecture(self) -> str | None:
        return self.config.get("architecture")

    @property
    def ref_name(self) -> str | None:
        return (self.manifest_descriptor.get("annotations") or {}).get(ANNOTATION_REF_NAME)

    @property
    def manifest_digest(self) -> str:
        return self.manifest_descriptor["digest"]

    @property
    def size(self) -> int:
        return self._file_size

    def read_blob(self, digest: str) -> bytes:
        """The bytes of a blob, checked against its digest."""
        offset, size = self._blob_location(digest)
        data = os.pread(self._fd, size, offset)
        if len(data) != size or _sha256(data) != digest:
            raise ArchiveError(f"{self.path}: blob {digest} does not match its digest")
        return data

    def open_blob(self, digest: str) -> BinaryIO:
        """A seekable read-only file object over a blob (not verified)."""
        offset, size = self._blob_location(digest)
        return io.BufferedReader(_Slice(self._fd, offset, size), buffer_size=_COPY_CHUNK)

    def copy_blob(self, digest: str, out: BinaryIO) -> None:
        """Write a blob to ``out``, verifying its digest on the way."""
        offset, size = self._blob_location(digest)
        hasher = hashlib.sha256()
        done = 0
        while done < size:
            chunk = os.pread(self._fd, min(_COPY_CHUNK, size - done), offset + done)
            if not chunk:
                raise ArchiveError(f"{self.path}: blob {digest} is truncated")
            hasher.update(chunk)
            out.write(chunk)
            done += len(chunk)
        if "sha256:" + hasher.hexdigest() != digest:
            raise ArchiveError(f"{self.path}: blob {digest} does not match its digest")

    def verify(self) -> None:
        """Check every layer's digest (the JSON blobs were checked when read)."""
        for layer in self.layers:
            self.copy_blob(layer.digest, _NullWriter())

    # -- content layer
    def content_layer(self) -> LayerInfo:
        """The last layer: the one holding srv/repo and srv/hostimage.json."""
        if not self.layers:
            raise ArchiveError(f"{self.path}: the image has no layers")
        return self.layers[-1]

    def uncompressed_content_layer(self) -> LayerInfo:
        """The content layer, checked to be a plain tar: its files' ``offset`` is set, so
        they can be read (or served) in place. ArchiveError naming the file for a
        compressed layer, by its media type or by its first bytes when the media type
        claims a plain tar."""
        layer = self.content_layer()
        head = os.pread(self._fd, len(ZSTD_MAGIC), layer.offset)
        sniffed = head.startswith(GZIP_MAGIC) or head.startswith(ZSTD_MAGIC)
        if layer.compressed or sniffed:
            found = "compressed bytes" if sniffed else "compressed"
            raise ArchiveError(
                f"{self.path}: the content layer {layer.digest} is {found} (media type "
                f"{layer.media_type}); reading files in place needs an uncompressed content "
                "layer (rebuild the archive with one, or extract the image and serve its "
                "repo directory)"
            )
        return layer

    def _iter_content(self) -> Iterator[tuple[ContentMember, Callable[[], BinaryIO] | None]]:
        """(member, opener) for each content entry; opener is None when ``offset`` is set.

        Uncompressed layers (ours) are scanned in place; compressed ones (other tools')
        are streamed through tarfile, and their data can only be read via the opener
        while the iteration is at that member.
        """
        layer = self.content_layer()
        label = f"{self.path}: content layer {layer.digest}"
        if not layer.compressed:
            self.uncompressed_content_layer()  # gzip bytes under a plain-tar media type
            assert self._map is not None
            end = layer.offset + layer.size
            for header in scan_tar(self._map, layer.offset, end, label):
                member = _content_member(header.name, header.kind, header.size, header.mode,
                                         header.mtime, header.linkname, header.offset)
                if member.name:
                    yield member, None
            return
        if layer.media_type not in (MEDIA_LAYER_GZIP, DOCKER_LAYER_GZIP):
            raise ArchiveError(f"{label}: unsupported media type {layer.media_type!r}")
        raw = io.BufferedReader(_Slice(self._fd, layer.offset, layer.size))
        try:
            with tarfile.open(fileobj=gzip.GzipFile(fileobj=raw, mode="rb"), mode="r|") as tar:
                for info in tar:
                    member = _content_member(info.name, _kind(info), info.size, info.mode,
                                             int(info.mtime), info.linkname, None)
                    if member.name:
                        yield member, functools.partial(_extractfile, tar, info)
        except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
            raise ArchiveError(f"{label}: damaged tar: {exc}") from exc

    def iter_content_members(self) -> Iterator[ContentMember]:
        """Every entry of the content layer, in archive order."""
        for member, _opener in self._iter_content():
            yield member

    def content_index(self) -> dict[str, ContentMember]:
        """name -> member for the content layer (for serving files straight from the tar)."""
        return {member.name: member for member in self.iter_content_members()}

    def read_content_file(self, relpath: str) -> bytes:
        """A regular file of the content layer, e.g. ``srv/hostimage.json``."""
        wanted = normalize_member_name(relpath)
        for member, opener in self._iter_content():
            if member.name != wanted:
                continue
            if member.kind != "file":
                raise ArchiveError(f"{self.path}: {relpath}: is a {member.kind}, not a file")
            if opener is None:
                return os.pread(self._fd, member.size, member.offset)
            return opener().read()
        raise ArchiveError(f"{self.path}: {relpath}: not in the content layer")

    def extract_content(self, dest_dir: Path, prefix: str = "srv/repo/") -> int:
        """Extract the content entries under ``prefix`` into ``dest_dir`` (prefix removed).

        ``dest_dir`` is created; it must not exist or be empty. Returns the number of
        files written. Names or links that would leave ``dest_dir`` raise ArchiveError.
        """
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        if any(dest_dir.iterdir()):
            raise ArchiveError(f"{dest_dir}: extraction target is not empty")
        prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        extractor = _Extractor(self, str(dest_dir))
        found_prefix = not prefix
        for member, opener in self._iter_content():
            if not (member.name + "/").startswith(prefix):
                continue
            found_prefix = True
            relative = member.name[len(prefix) :]
            if relative:
                extractor.add(member, relative, opener, prefix)
        if not found_prefix:
            raise ArchiveError(f"{self.path}: content layer has nothing under {prefix}")
        extractor.finish()
        return extractor.files


class _Extractor:
    """Writes content members below a directory. Plain string paths: this is a hot loop
    (tens of thousands of small files), and pathlib costs more than the system calls."""

    def __init__(self, archive: OciArchive, root: str):
        self.archive = archive
        self.root = root
        self.files = 0
        self.made_dirs: set[str] = {""}
        self.dir_modes: list[tuple[str, int]] = []
        self.symlinks: set[str] = set()
        self.copy_in_kernel = True

    def add(
        self,
        member: ContentMember,
        relative: str,
        opener: Callable[[], BinaryIO] | None,
        prefix: str,
    ) -> None:
        self._check_path(member.name, relative)
        target = self.root + "/" + relative
        parent = relative.rpartition("/")[0]
        if parent not in self.made_dirs:
            os.makedirs(self.root + "/" + parent, exist_ok=True)
            self.made_dirs.add(parent)
        kind = member.kind
        if kind == "file":
            self._write_file(member, opener, target)
        elif kind == "dir":
            if relative not in self.made_dirs:
                os.makedirs(target, exist_ok=True)
                self.made_dirs.add(relative)
            self.dir_modes.append((target, member.mode))
        elif kind == "symlink":
            _check_link_target(self.archive.path, member.name, relative, member.linkname)
            os.symlink(member.linkname, target)
            self.symlinks.add(relative)
        elif kind == "hardlink":
            source = normalize_member_name(member.linkname)
            if not source.startswith(prefix):
                raise ArchiveError(
                    f"{self.archive.path}: {member.name}: hard link to {member.linkname} "
                    f"outside {prefix}"
                )
            self._check_path(member.linkname, source[len(prefix) :])
            shutil.copy2(self.root + "/" + source[len(prefix) :], target)
            self.files += 1
        else:
            raise ArchiveError(
                f"{self.archive.path}: {member.name}: cannot extract this kind of entry"
            )

    def _check_path(self, name: str, relative: str) -> None:
        parts = relative.split("/")
        if relative.startswith("/") or ".." in parts or "" in parts:
            raise ArchiveError(f"{self.archive.path}: {name}: unsafe path in the content layer")
        if self.symlinks:  # never write through a symlink we made: it may lead outside
            for depth in range(1, len(parts)):
                if "/".join(parts[:depth]) in self.symlinks:
                    raise ArchiveError(
                        f"{self.archive.path}: {name}: path goes through a symlink"
                    )

    def _write_file(
        self, member: ContentMember, opener: Callable[[], BinaryIO] | None, target: str
    ) -> None:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            if opener is not None:
                with os.fdopen(os.dup(fd), "wb") as out:
                    shutil.copyfileobj(opener(), out, _COPY_CHUNK)
            elif member.size:
                assert member.offset is not None
                self._copy_range(member.offset, member.size, fd)
            os.fchmod(fd, member.mode)
        finally:
            os.close(fd)
        self.files += 1

    def _copy_range(self, offset: int, size: int, dst_fd: int) -> None:
        """Copy archive bytes into a file: in the kernel when the file system allows."""
        src_fd = self.archive._fd
        done = 0
        while done < size:
            copied = 0
            if self.copy_in_kernel:
                try:
                    copied = os.copy_file_range(src_fd, dst_fd, size - done, offset + done)
                except OSError:  # another file system (EXDEV) or no support: copy here
                    self.copy_in_kernel = False
            if not self.copy_in_kernel:
                chunk = os.pread(src_fd, min(_COPY_CHUNK, size - done), offset + done)
                copied = os.write(dst_fd, chunk) if chunk else 0
            if copied == 0:
                raise ArchiveError(
                    f"{self.archive.path}: unexpected end of data at byte {offset + done}"
                )
            done += copied

    def finish(self) -> None:
        # Directory modes last, deepest first: a read-only directory must not stop the
        # extraction of its own contents.
        for directory, mode in reversed(self.dir_modes):
            os.chmod(directory, mode)


def _extractfile(tar: tarfile.TarFile, info: tarfile.TarInfo) -> BinaryIO:
    handle = tar.extractfile(info)
    if handle is None:
        raise ArchiveError(f"{info.name}: no data to read")
    return handle


def _content_member(
    name: str, kind: str, size: int, mode: int, mtime: int, linkname: str, offset: int | None
) -> ContentMember:
    return ContentMember(
        name=normalize_member_name(name),
        kind=kind,
        size=size if kind == "file" else 0,
        mode=mode & 0o7777,
        mtime=mtime,
        linkname=linkname,
        offset=offset if kind == "file" else None,
    )


class _NullWriter:
    def write(self, data: bytes) -> int:
        return len(data)


def normalize_member_name(name: str) -> str:
    """Tar member name without a leading "./" or "/" and without a trailing "/"."""
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def _kind(info: tarfile.TarInfo) -> str:
    if info.isfile():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    return "other"


def _check_link_target(archive: Path, name: str, relative: str, linkname: str) -> None:
    """Symlinks must stay inside the extraction directory."""
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(relative), linkname))
    if linkname.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise ArchiveError(
            f"{archive}: {name}: symlink to {linkname} points outside the extracted tree"
        )
