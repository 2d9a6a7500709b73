# SPDX-License-Identifier: GPL-2.0-or-later
"""What the static server serves: a :class:`Tree` of files, each looked up as a
:class:`Resource` (an open descriptor, an offset and a size).

:class:`DirectoryTree` serves a repo directory; :class:`ArchiveTree` serves the
``srv/repo/`` of an OCI archive's content layer straight from the tar. They know nothing
of HTTP or sockets, which is why they live apart from :mod:`koji_hostimage.serve.server`
(which imports them; nothing here imports the server).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from koji_hostimage.errors import ArchiveError, HostImageError
from koji_hostimage.image.oci_reader import ContentMember, OciArchive, normalize_member_name

log = logging.getLogger(__name__)

_MAX_SYMLINK_HOPS = 40


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


class Tree(Protocol):
    """What the server serves from. ``relpath`` is already split-checked: no empty,
    ``.`` or ``..`` components, no NUL or backslash; the tree still refuses symlink escapes.
    """

    def lookup(self, relpath: str) -> Resource | None: ...


class DirectoryTree:
    """Serve the regular files below ``root`` (a repo directory).

    Each request opens the file (so a rewritten ``summary`` is seen at once); parent
    directories are checked once (resolved, inside the root) and remembered. Symlinks are
    followed only when their target stays inside the root.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ServerError(f"{self.root}: expected a repo directory")
        self._root_real = os.path.realpath(self.root)
        self._root_prefix = self._root_real.rstrip("/") + "/"
        self._good_dirs: set[str] = {""}

    def close(self) -> None:
        """Nothing to release; here so both trees can be used the same way."""

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

    def lookup(self, relpath: str) -> Resource | None:
        reldir = relpath.rpartition("/")[0]
        if not self._dir_ok(reldir):
            return None
        path = self._root_prefix + relpath
        # O_NOFOLLOW: a symlink is resolved and checked below instead of followed blindly;
        # O_NONBLOCK: opening a FIFO must not hang the thread (it is refused right after).
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                return None
            real = os.path.realpath(path)
            if not self._inside(real):
                log.warning("refused %s: symlink points out of %s", relpath, self.root)
                return None
            try:
                fd = os.open(real, flags)
            except OSError:
                return None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return Resource(fd, 0, st.st_size, owned=True)


class ArchiveTree:
    """Serve ``srv/repo/`` from an OCI archive's last (content) layer without unpacking.

    The archive is verified (every layer against its digest) and indexed once at start
    with :class:`koji_hostimage.image.oci_reader.OciArchive` (which finds the content layer
    through index.json and the manifest and gives each file's absolute offset in the
    archive); requests are answered with ``os.sendfile`` from one shared descriptor at
    those offsets (the file position is never used, so concurrent responses cannot
    disturb each other).
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
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ArchiveTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lookup(self, relpath: str) -> Resource | None:
        entry = self._files.get(relpath)
        if entry is None and self._symlinks:
            entry = self._resolve_through_symlinks(relpath)
        if entry is None:
            return None
        return Resource(self._fd, entry[0], entry[1], owned=False)

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
