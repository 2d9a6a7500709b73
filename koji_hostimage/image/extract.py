# SPDX-License-Identifier: GPL-2.0-or-later
"""Writing an OCI archive's content-layer entries below a directory, safely: no name or
link may lead out of it (``OciArchive.extract_content`` drives it)."""

from __future__ import annotations

import os
import posixpath
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from koji_hostimage.errors import ArchiveError

from .tarreader import normalize_member_name

_COPY_CHUNK = 4 * 1024 * 1024


class Extractor:
    """Writes content members below a directory. Plain string paths: this is a hot loop
    (tens of thousands of small files), and pathlib costs more than the system calls."""

    def __init__(self, path: Path, fd: int, root: str):
        self.path = path  # the archive, for messages
        self.fd = fd  # the archive, for reading members by offset
        self.root = root
        self.files = 0
        self.made_dirs: set[str] = {""}
        self.dir_modes: list[tuple[str, int]] = []
        self.symlinks: set[str] = set()
        self.copy_in_kernel = True

    def add(
        self,
        member: Any,  # an oci_reader.ContentMember
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
            _check_link_target(self.path, member.name, relative, member.linkname)
            os.symlink(member.linkname, target)
            self.symlinks.add(relative)
        elif kind == "hardlink":
            source = normalize_member_name(member.linkname)
            if not source.startswith(prefix):
                raise ArchiveError(
                    f"{self.path}: {member.name}: hard link to {member.linkname} "
                    f"outside {prefix}"
                )
            self._check_path(member.linkname, source[len(prefix) :])
            shutil.copy2(self.root + "/" + source[len(prefix) :], target)
            self.files += 1
        else:
            raise ArchiveError(
                f"{self.path}: {member.name}: cannot extract this kind of entry"
            )

    def _check_path(self, name: str, relative: str) -> None:
        parts = relative.split("/")
        if relative.startswith("/") or ".." in parts or "" in parts:
            raise ArchiveError(f"{self.path}: {name}: unsafe path in the content layer")
        if self.symlinks:  # never write through a symlink we made: it may lead outside
            for depth in range(1, len(parts)):
                if "/".join(parts[:depth]) in self.symlinks:
                    raise ArchiveError(
                        f"{self.path}: {name}: path goes through a symlink"
                    )

    def _write_file(
        self, member: Any, opener: Callable[[], BinaryIO] | None, target: str
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
        src_fd = self.fd
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
                    f"{self.path}: unexpected end of data at byte {offset + done}"
                )
            done += copied

    def finish(self) -> None:
        # Directory modes last, deepest first: a read-only directory must not stop the
        # extraction of its own contents.
        for directory, mode in reversed(self.dir_modes):
            os.chmod(directory, mode)


def _check_link_target(archive: Path, name: str, relative: str, linkname: str) -> None:
    """Symlinks must stay inside the extraction directory."""
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(relative), linkname))
    if linkname.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise ArchiveError(
            f"{archive}: {name}: symlink to {linkname} points outside the extracted tree"
        )
