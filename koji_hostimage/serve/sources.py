# SPDX-License-Identifier: GPL-2.0-or-later
"""What the static server serves: a :class:`Tree` of files. :meth:`Tree.read` gives a
small file's bytes (sent with the response header in one ``writev``) or, for a larger
one, a :class:`Resource` (an open descriptor, an offset and a size, for ``os.sendfile``).

:class:`DirectoryTree` serves a repo directory; :class:`ArchiveTree` serves the
``srv/repo/`` of an OCI archive's content layer straight from the tar. They know nothing
of HTTP or sockets, which is why they live apart from :mod:`koji_hostimage.serve.server`
(which imports them; nothing here imports the server).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from koji_hostimage.errors import ArchiveError, HostImageError
from koji_hostimage.image.oci_reader import ContentMember, OciArchive, normalize_member_name

log = logging.getLogger(__name__)

_MAX_SYMLINK_HOPS = 40
# Files up to this size are read (or sliced from the archive's mapping) and sent with the
# response header in one writev: for ostree's typical few-KiB objects that is fewer
# syscalls than a header send plus a sendfile. Larger ones are sent with sendfile.
SMALL_BODY = 128 * 1024
# Files named by their content's checksum: they never change under the same name.
CONTENT_ADDRESSED = ("objects/", "deltas/", "delta-indexes/")
# How many bytes of small content-addressed files a DirectoryTree keeps in memory: when
# several clients pull the same commit at once, an object asked for again is answered
# from memory (three syscalls saved per request, as in archive mode). Only objects asked
# for a second time are kept: copying every one would cost a single client more than
# it ever gets back.
CACHE_BYTES = 64 * 1024 * 1024
# ... and only when asked again within this many requests for other small files (between
# one and two times it): a client a little behind another one on the same commit. One
# asked again only much later (the next machine pulling the same commit) is read again.
# Keeping those made every request of a second pull of a repo larger than CACHE_BYTES
# copy the file and drop another, and none was ever answered from memory (measured on a
# 158 MB repo of 20,206 objects: 0.52 s of server CPU for the second and third pulls,
# 0.48 s for the first; with the window, 0.45 s).
RECENT_REQUESTS = 8192
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class ServerError(HostImageError):
    """The server could not start: bad tree, address in use, ..."""


@dataclass(slots=True)
class Resource:
    """One file to send: ``size`` bytes from ``offset`` of the open file ``fd``."""

    fd: int
    offset: int
    size: int
    owned: bool  # True: the caller closes ``fd`` after sending

    def close(self) -> None:
        if self.owned:
            os.close(self.fd)


Body = memoryview | Resource  # what Tree.read gives: a small file's bytes, or a Resource


class Tree(Protocol):
    """What the server serves from. ``relpath`` is already split-checked: no empty,
    ``.`` or ``..`` components, no NUL or backslash; the tree still refuses symlink escapes.

    ``read`` gives a file of at most :data:`SMALL_BODY` bytes as a memoryview of its whole
    content, valid until the tree's next ``read`` (send it or copy it before then), and a
    larger one as a :class:`Resource`; None for anything not served.
    """

    def read(self, relpath: str) -> Body | None: ...


class DirectoryTree:
    """Serve the regular files below ``root`` (a repo directory).

    Each request opens the file (so a rewritten ``summary`` is seen at once), except
    for small content-addressed files (CONTENT_ADDRESSED) asked for again soon after
    (RECENT_REQUESTS), which are kept in memory (up to CACHE_BYTES, the oldest dropped
    first); parent directories are checked once (resolved, inside the root) and
    remembered. Symlinks are followed only when their target stays inside the root.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ServerError(f"{self.root}: expected a repo directory")
        self._root_real = os.path.realpath(self.root)
        self._root_prefix = self._root_real.rstrip("/") + "/"
        self._good_dirs: set[str] = {""}
        # Files are opened relative to the root's descriptor: a shorter path walk.
        self._root_fd = os.open(self._root_real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # One reused read buffer: a byte more than SMALL_BODY, so a full read means
        # "larger than SMALL_BODY" (or not a regular file), never a whole small file.
        buffer = bytearray(SMALL_BODY + 1)
        self._buffers = [buffer]
        self._view = memoryview(buffer)
        # Oldest first; OrderedDict pops its oldest in O(1) (a dict's first key after
        # many deletions from the front is a linear scan).
        self._cache: OrderedDict[str, memoryview] = OrderedDict()
        self._cached_bytes = 0
        # Content-addressed names asked for once: lately, and in the window before.
        self._seen: set[str] = set()
        self._seen_before: set[str] = set()

    def close(self) -> None:
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> DirectoryTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _inside(self, real: str) -> bool:
        return real == self._root_real or real.startswith(self._root_prefix)

    def _dir_ok(self, reldir: str) -> bool:
        if reldir in self._good_dirs:
            return True
        real = os.path.realpath(os.path.join(self._root_real, reldir))
        if not (self._inside(real) and os.path.isdir(real)):
            return False
        if len(self._good_dirs) > 100_000:  # bound memory on trees with many dirs
            self._good_dirs.clear()
        self._good_dirs.add(reldir)
        return True

    def _open_symlink(self, relpath: str) -> int:
        # O_NOFOLLOW refused a symlink: follow it only when it stays inside the root.
        real = os.path.realpath(self._root_prefix + relpath)
        if not self._inside(real):
            log.warning("refused %s: symlink points out of %s", relpath, self.root)
            return -1
        try:
            return os.open(real, _OPEN_FLAGS)
        except OSError:
            return -1

    def read(self, relpath: str) -> Body | None:
        """Read a small file whole into the tree's buffer (one read, no fstat: a short
        read of a regular file is its end); a larger one is returned as a Resource.
        (This runs for every request: written for few interpreter steps.)"""
        cache = self._cache
        if cache:  # mostly empty with one client: no lookup then
            cached = cache.get(relpath)
            if cached is not None:
                return cached
        reldir = relpath.rpartition("/")[0]
        if reldir not in self._good_dirs and not self._dir_ok(reldir):
            return None
        try:
            fd = os.open(relpath, _OPEN_FLAGS, dir_fd=self._root_fd)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                return None
            fd = self._open_symlink(relpath)
            if fd < 0:
                return None
        try:
            got = os.readv(fd, self._buffers)
        except OSError:  # a directory (EISDIR), a FIFO without data (EAGAIN), ...
            os.close(fd)
            return None
        if 0 < got <= SMALL_BODY:
            # Only a regular file (or a FIFO that a writer fills, which is no more than
            # what that writer could put in a file) reads short; a FIFO without writer or
            # a device reads 0 bytes or the whole buffer, which are checked below.
            os.close(fd)
            # Every small file's name is noted, and only one asked for again is checked
            # for being content-addressed: one prefix test per repeat, not per request.
            seen = self._seen
            if relpath in seen or relpath in self._seen_before:
                if relpath.startswith(CONTENT_ADDRESSED):
                    return self._remember(relpath, got)
            else:
                seen.add(relpath)
                if len(seen) >= RECENT_REQUESTS:
                    self._seen_before, self._seen = seen, set()
            return self._view[:got]
        return self._checked(fd)

    def _remember(self, relpath: str, size: int) -> memoryview:
        """Keep the ``size`` bytes just read for ``relpath`` (a copy: the read buffer is
        reused), dropping the oldest kept files beyond CACHE_BYTES."""
        body = memoryview(self._view[:size].tobytes())
        cache = self._cache
        cache[relpath] = body
        self._cached_bytes += size
        while self._cached_bytes > CACHE_BYTES:
            self._cached_bytes -= len(cache.popitem(last=False)[1])
        return body

    def _checked(self, fd: int) -> Body | None:
        """What ``read`` gives for a file that read empty or filled the buffer: an
        empty body, a Resource to send from, or None when it is not a regular file."""
        size = _regular_size(fd)
        if size <= 0:
            os.close(fd)
            return self._view[:0] if size == 0 else None
        return Resource(fd, 0, size, owned=True)


def _regular_size(fd: int) -> int:
    """The size of the regular file open as ``fd``; -1 for anything else."""
    try:
        st = os.fstat(fd)
    except OSError:
        return -1
    return st.st_size if stat.S_ISREG(st.st_mode) else -1


class ArchiveTree:
    """Serve ``srv/repo/`` from an OCI archive's last (content) layer without unpacking.

    The archive is verified (every layer against its digest) and indexed once at start
    with :class:`koji_hostimage.image.oci_reader.OciArchive` (which finds the content layer
    through index.json and the manifest and gives each file's absolute offset in the
    archive). Small files are slices of one read-only mapping of the archive (no syscall
    per request; the kernel copies them into the socket, and a page that is gone because
    the archive was truncated makes that send fail with EFAULT, not the server crash,
    since Python code never touches the mapped bytes). Larger ones are sent with
    ``os.sendfile`` from one shared descriptor at their offsets (the file position is
    never used, so concurrent responses cannot disturb each other).
    """

    def __init__(self, path: Path | str, prefix: str = "srv/repo"):
        self.path = Path(path)
        if not self.path.is_file():
            raise ServerError(f"{self.path}: expected an OCI archive file")
        self.prefix = prefix.strip("/")
        started = time.monotonic()
        with OciArchive(self.path) as archive:
            self.layer = archive.uncompressed_content_layer()
            archive.verify()  # nothing is served from a layer that fails its digest
            self._files, self._symlinks = _served_tree(
                archive.iter_content_members(), self.prefix
            )
        if not self._files:  # symlinks alone can only lead to files under the prefix
            raise ArchiveError(
                f"{self.path}: the content layer {self.layer.digest} has no files under "
                f"{self.prefix}/"
            )
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._map = mmap.mmap(self._fd, 0, prot=mmap.PROT_READ)
        except (OSError, ValueError) as exc:
            os.close(self._fd)
            raise ServerError(f"{self.path}: cannot map the archive: {exc}") from None
        self._view = memoryview(self._map)
        log.debug(
            "indexed %d files of %s (layer %s) in %.2f s",
            len(self._files),
            self.path,
            self.layer.digest,
            time.monotonic() - started,
        )

    def __len__(self) -> int:
        return len(self._files)

    def close(self) -> None:
        if self._fd >= 0:
            self._view.release()
            try:
                self._map.close()
            except BufferError:  # a response still holds a slice: the GC unmaps it later
                log.debug("%s: archive mapping still in use at close", self.path)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ArchiveTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lookup(self, relpath: str) -> Resource | None:
        """Where ``relpath``'s bytes are in the archive, whatever its size (None: not
        served); ``read`` is what the server uses."""
        entry = self._entry(relpath)
        return None if entry is None else Resource(self._fd, entry[0], entry[1], owned=False)

    def read(self, relpath: str) -> Body | None:
        entry = self._entry(relpath)
        if entry is None:
            return None
        offset, size = entry
        if size <= SMALL_BODY:
            return self._view[offset : offset + size]
        return Resource(self._fd, offset, size, owned=False)

    def _entry(self, relpath: str) -> tuple[int, int] | None:
        """(offset, size) of ``relpath``'s bytes in the archive, symlinks in the layer
        followed; None when it is not a file under the prefix."""
        entry = self._files.get(relpath)
        if entry is None and self._symlinks:
            return self._resolve_through_symlinks(relpath)
        return entry

    def _resolve_through_symlinks(self, relpath: str) -> tuple[int, int] | None:
        """Resolve symlinks inside the layer as the container would see them; the result
        must be a file under the prefix (a link pointing anywhere else is refused)."""
        pending = [*self.prefix.split("/"), *relpath.split("/")]
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/".join([*resolved, part])
            target = self._symlinks.get(candidate)
            if target is None:
                resolved.append(part)
                continue
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                return None
            if target.startswith("/"):
                resolved = []  # absolute links point from the container's root
            pending[:0] = target.split("/")
        full = "/".join(resolved)
        root = self.prefix + "/"
        if not full.startswith(root):
            log.warning("refused %s: symlink points out of /%s", relpath, self.prefix)
            return None
        return self._files.get(full[len(root) :])


def _served_tree(
    members: Iterable[ContentMember], prefix: str
) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """What an archive serves: ``(files, symlinks)``.

    ``files`` maps paths relative to ``prefix`` to ``(offset, size)`` in the archive, hard
    links resolved to their target's data; ``symlinks`` maps layer paths (not relative)
    to link targets, for :meth:`ArchiveTree._resolve_through_symlinks`. As when a tar is
    unpacked, a later member replaces an earlier one of the same name.
    """
    root = prefix + "/"
    cut = len(root)
    by_name: dict[str, tuple[int, int]] = {}  # every file of the layer, for hard links
    files: dict[str, tuple[int, int]] = {}
    symlinks: dict[str, str] = {}
    for member in members:
        name = member.name
        kind = member.kind
        if kind == "file":
            entry = (member.offset, member.size)
        elif kind == "hardlink":
            # A hard link shares the data of an earlier member (named by its full path).
            target = by_name.get(normalize_member_name(member.linkname))
            if target is None:
                continue
            entry = target
        else:
            if kind == "symlink":
                symlinks[name] = member.linkname
            by_name.pop(name, None)
            if name.startswith(root):
                files.pop(name[cut:], None)
            continue
        if symlinks:
            symlinks.pop(name, None)
        by_name[name] = entry
        if name.startswith(root):
            files[name[cut:]] = entry
    return files, symlinks


def open_tree(path: Path | str) -> DirectoryTree | ArchiveTree:
    """A directory must be an OSTree repo (``config`` and ``objects/``); a file must be an
    OCI archive (its digests are verified before anything is served)."""
    path = Path(path)
    if path.is_dir():
        missing = [name for name, is_kind in (("config", Path.is_file), ("objects", Path.is_dir))
                   if not is_kind(path / name)]
        if missing:
            raise ServerError(
                f"{path}: expected an OSTree repo directory (with config and objects/), "
                f"got a directory without {' and '.join(missing)}"
            )
        return DirectoryTree(path)
    if path.is_file():
        return ArchiveTree(path)
    raise ServerError(f"{path}: expected a repo directory or an OCI archive (.tar), not found")
