# SPDX-License-Identifier: GPL-2.0-or-later
"""The OCI archive writer: an OCI image layout in a tar (``oci-archive:`` for skopeo).

DESIGN section 4. Layout of the outer tar, in this order (reproducible, not sorted: the
content layer's name is only known once it is written):

    oci-layout, blobs/, blobs/sha256/,
    blobs/sha256/<base layer>...   copied verbatim from the base image, if one is given
    blobs/sha256/<server layer>    or else, if asked for, static busybox (serverlayer.py)
    blobs/sha256/<content layer>   uncompressed tar of content_dir (srv/repo, hostimage.json)
    blobs/sha256/<config>, blobs/sha256/<manifest>, index.json

The content layer is streamed straight into the archive while it is hashed: its outer
header is written first with a placeholder name and size, then rewritten in place with
the real ``blobs/sha256/<digest>`` and size once the layer is written (a header of the
same length whatever the size: ``tarheaders.fixed_length_header``). So the layer is
written exactly once, never held in memory, and the first byte goes out before the
tree has been walked.

A base image is read with ``oci_reader.OciArchive``; its layers are copied byte for byte.
Without one, ``spec.server_busybox`` adds the server layer and the config that runs it
(Cmd, User nobody, WorkingDir /srv/repo). The content layer is always the last layer.

Everything in the content layer is made world-readable (files ``+r``, directories
``+rx``) in the tar headers: the repo is served to anyone over HTTP anyway, and the
server in the image (ours or a base image's) may run as an unprivileged user.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from koji_hostimage.errors import ArchiveError
from koji_hostimage.fsutil import atomic_output

from .oci_layout import (
    ANNOTATION_REF_NAME,
    LAYER_MEDIA_MAP,
    MEDIA_CONFIG,
    MEDIA_INDEX,
    MEDIA_LAYER,
    MEDIA_MANIFEST,
    OCI_LAYOUT,
    OciSpecError,
    check_labels,
    koji_arch_to_oci,
    rfc3339,
    sha256,
)
from .oci_reader import LayerInfo, OciArchive
from .serverlayer import (
    SERVER_CMD,
    SERVER_ENV,
    SERVER_STOP_SIGNAL,
    SERVER_USER,
    SERVER_WORKDIR,
    ServerLayer,
    build_server_layer,
)
from .tarheaders import DIRTYPE, END_OF_ARCHIVE, REGTYPE, encode_header, fixed_length_header
from .tarreader import padded
from .tarwriter import PackResult, pack_tree

log = logging.getLogger(__name__)

_PLACEHOLDER_DIGEST = "0" * 64


@dataclass
class OciImageSpec:
    koji_arch: str
    created: int  # seconds since the epoch: the commit timestamp
    labels: dict[str, str] = field(default_factory=dict)
    ref_name: str | None = None  # index annotation org.opencontainers.image.ref.name
    cmd: list[str] | None = None  # only used with a base image
    exposed_ports: list[str] = field(default_factory=lambda: ["8080/tcp"])
    base_image: Path | None = None  # an oci-archive tar whose layers go first
    # Entrypoint of the image when a base is given. The base's own Entrypoint is never
    # inherited: Cmd must run as written, not as arguments to some wrapper of the base.
    entrypoint: list[str] | None = None
    # Without a base image: a static busybox, put in its own layer under the content layer;
    # the image then runs ``busybox httpd`` on /srv/repo as nobody. None (and no base
    # image): a content-only image that runs nothing.
    server_busybox: Path | None = None


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


def _canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


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
        digest = sha256(data)
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
    server = (build_server_layer(Path(spec.server_busybox), spec.koji_arch)
              if spec.server_busybox else None)
    base = _read_base_image(Path(spec.base_image), architecture) if spec.base_image else None
    try:
        with atomic_output(dest) as tmp, open(tmp, "w+b") as out:
            result = _write_archive(out, content_dir, spec, architecture, base, server)
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
    check_labels(spec.labels)
    if isinstance(spec.created, bool) or not isinstance(spec.created, int) or spec.created < 0:
        raise OciSpecError(
            f"created: expected seconds since the epoch (a non-negative integer), "
            f"got {spec.created!r}"
        )
    for port in spec.exposed_ports:
        number, _, protocol = str(port).partition("/")
        if not number.isdigit() or protocol not in ("tcp", "udp", "sctp"):
            raise OciSpecError(f"exposed_ports: expected PORT/tcp or PORT/udp, got {port!r}")
    if spec.base_image and spec.server_busybox:
        raise OciSpecError(
            f"server_busybox {spec.server_busybox}: expected no server layer with a base "
            f"image ({spec.base_image}): the base image's server runs the Cmd"
        )
    if spec.cmd is not None and not spec.base_image:
        log.debug("no base image: Cmd %s not used", spec.cmd)
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
    content_dir: Path,
    spec: OciImageSpec,
    architecture: str,
    base: _BaseImage | None,
    server: ServerLayer | None,
) -> OciWriteResult:
    outer = _OuterTar(out, spec.created)
    outer.add_bytes(b"oci-layout", OCI_LAYOUT)
    outer.add_dir("blobs")
    outer.add_dir("blobs/sha256")
    layers: list[dict[str, Any]] = []
    if base is not None:
        layers.extend(_copy_base_layers(base, outer))
    if server is not None:
        outer.add_blob(server.data)
        layers.append({"mediaType": MEDIA_LAYER, "digest": server.digest, "size": server.size})
    packed = _write_content_layer(outer, content_dir)
    layer_digest = "sha256:" + packed.sha256
    layers.append({"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": packed.size})

    config_bytes = _canonical_json(
        _image_config(spec, architecture, base, server, layer_digest)
    )
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
        content_layer_size=packed.size,
        index_digest=sha256(index_bytes),
        layer_digests=[layer["digest"] for layer in layers],
        file_count=packed.file_count,
        seconds=0.0,
    )


def _write_content_layer(outer: _OuterTar, content_dir: Path) -> PackResult:
    """Stream the content layer into the archive; then fix up its outer header with the
    layer's digest and size. Files ``+r``, directories ``+rx`` (module docstring)."""
    out = outer.out
    header_at = out.tell()
    placeholder = fixed_length_header(
        _blob_name("sha256:" + _PLACEHOLDER_DIGEST), 0o644, 0, outer.mtime
    )
    out.write(placeholder)
    out.flush()  # the packer writes through the same file object; keep the order
    packed = pack_tree(content_dir, out, outer.mtime, readable=True)
    outer.pad(packed.size)
    digest = "sha256:" + packed.sha256
    header = fixed_length_header(_blob_name(digest), 0o644, packed.size, outer.mtime)
    end = out.tell()
    out.seek(header_at)
    out.write(header)
    out.seek(end)
    outer.written.add(digest)
    log.debug("content layer of %s: %d files, %d bytes", content_dir, packed.file_count,
              packed.size)
    return packed


def _image_config(
    spec: OciImageSpec,
    architecture: str,
    base: _BaseImage | None,
    server: ServerLayer | None,
    layer_digest: str,
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
    elif server is not None:
        container.update(Env=list(SERVER_ENV), Cmd=list(SERVER_CMD), User=SERVER_USER,
                         WorkingDir=SERVER_WORKDIR, StopSignal=SERVER_STOP_SIGNAL)
        diff_ids.append(server.digest)  # uncompressed: the digest is the diff_id
        history.append({"created": created, "created_by": server.created_by})
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
                "mediaType": LAYER_MEDIA_MAP.get(layer.media_type, layer.media_type),
                "digest": layer.digest,
                "size": layer.size,
            }
        )
    return descriptors
