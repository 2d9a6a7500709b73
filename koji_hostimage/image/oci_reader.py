# SPDX-License-Identifier: GPL-2.0-or-later
"""The OCI archive reader: ours or any ``oci-archive`` tar holding one image.

The reader (``OciArchive``) indexes the outer tar once and gives byte offsets of blobs and
of the files inside an uncompressed content layer, so a server can answer requests for
``srv/repo/...`` straight from the archive (``serve.sources.ArchiveTree`` does, through
``uncompressed_content_layer`` and ``iter_content_members``). It also extracts the
content layer, compressed or not, below a directory (``extract_content``).
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import mmap
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from koji_hostimage.errors import ArchiveError

from . import verify
from .extract import Extractor
from .oci_layout import (
    ANNOTATION_REF_NAME,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    GZIP_MAGIC,
    MEDIA_INDEX,
    MEDIA_LAYER,
    MEDIA_LAYER_GZIP,
    MEDIA_MANIFEST,
    ZSTD_MAGIC,
    sha256,
)
from .tarreader import BLOCK, normalize_member_name, scan_tar

_COPY_CHUNK = 4 * 1024 * 1024
_MAX_JSON_BLOB = 4 * 1024 * 1024  # index, manifest and config are a few KiB


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
        if size > _MAX_JSON_BLOB:
            raise ArchiveError(f"{self.path}: {name}: {size} bytes, expected at most "
                               f"{_MAX_JSON_BLOB}")
        return os.pread(self._fd, size, offset)

    def _json(self, what: str, data: bytes) -> dict[str, Any]:
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
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
            f"manifest {descriptor['digest']}", self.read_blob(descriptor["digest"], "manifest")
        )
        if self.manifest.get("mediaType", MEDIA_MANIFEST) not in (MEDIA_MANIFEST,
                                                                  DOCKER_MANIFEST):
            raise ArchiveError(
                f"{self.path}: manifest {descriptor['digest']}: unsupported media type "
                f"{self.manifest.get('mediaType')!r}"
            )
        config_descriptor = self._descriptor(self.manifest.get("config"), "manifest config")
        self.config = self._json(
            f"config {config_descriptor['digest']}",
            self.read_blob(config_descriptor["digest"], "config"),
        )
        self.layers = []
        layers = self.manifest.get("layers") or []
        if not isinstance(layers, list):
            raise ArchiveError(f"{self.path}: manifest layers: expected a list of descriptors")
        for number, entry in enumerate(layers):
            layer = self._descriptor(entry, f"manifest layers[{number}]")
            offset, size = self._blob_location(layer["digest"])
            if size != layer["size"]:
                raise ArchiveError(
                    f"{self.path}: layer {layer['digest']}: blob has {size} bytes, "
                    f"manifest says {layer['size']}"
                )
            media_type = layer.get("mediaType", MEDIA_LAYER)
            if not isinstance(media_type, str):
                raise ArchiveError(f"{self.path}: manifest layers[{number}]: mediaType: "
                                   f"expected a string, got {media_type!r:.40}")
            self.layers.append(LayerInfo(layer["digest"], size, media_type, offset))

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
                if _platform_arch(m) in (None, architecture)
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
            nested = self._json(f"index {chosen['digest']}",
                                self.read_blob(chosen["digest"], "index"))
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
    def image_config(self) -> dict[str, Any]:
        """The config's ``config`` object (Labels, Cmd, ...); {} when missing or not one."""
        value = self.config.get("config")
        return value if isinstance(value, dict) else {}

    @property
    def labels(self) -> dict[str, str]:
        labels = self.image_config.get("Labels")
        if not isinstance(labels, dict):
            return {}
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in labels.items()}

    @property
    def architecture(self) -> str | None:
        value = self.config.get("architecture")
        return value if isinstance(value, str) else None

    @property
    def ref_name(self) -> str | None:
        return (self.manifest_descriptor.get("annotations") or {}).get(ANNOTATION_REF_NAME)

    @property
    def manifest_digest(self) -> str:
        return self.manifest_descriptor["digest"]

    @property
    def size(self) -> int:
        return self._file_size

    def read_blob(self, digest: str, what: str = "JSON") -> bytes:
        """The bytes of a (small) blob, checked against its digest."""
        offset, size = self._blob_location(digest)
        if size > _MAX_JSON_BLOB:
            raise ArchiveError(f"{self.path}: {what} blob {digest}: {size} bytes, expected "
                               f"at most {_MAX_JSON_BLOB}")
        data = os.pread(self._fd, size, offset)
        actual = sha256(data)
        if len(data) != size or actual != digest:
            raise verify.mismatch(self.path, what, digest, actual, offset, size)
        return data

    def open_blob(self, digest: str) -> BinaryIO:
        """A seekable read-only file object over a blob (not verified)."""
        offset, size = self._blob_location(digest)
        return io.BufferedReader(_Slice(self._fd, offset, size), buffer_size=_COPY_CHUNK)

    def copy_blob(self, digest: str, out: BinaryIO) -> None:
        """Write a blob to ``out``, verifying its digest on the way."""
        offset, size = self._blob_location(digest)
        verify.check_range(self.path, "copied", digest, self._fd, offset, size, out.write)

    def verify(self) -> None:
        """Check every layer against its digest, streamed (the index, manifest and config
        were checked when read): ArchiveError naming the archive, the layer, the expected
        and the actual digest. Call before trusting the content."""
        for number, layer in enumerate(self.layers):
            what = "content layer" if number == len(self.layers) - 1 else f"layer {number}"
            verify.check_range(self.path, what, layer.digest, self._fd, layer.offset,
                               layer.size)

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
        extractor = Extractor(self.path, self._fd, str(dest_dir))
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


def _platform_arch(descriptor: dict[str, Any]) -> Any:
    platform = descriptor.get("platform")
    return platform.get("architecture") if isinstance(platform, dict) else None


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
