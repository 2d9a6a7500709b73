# SPDX-License-Identifier: GPL-2.0-or-later
"""A fast, reproducible tar writer for the OCI content layer.

Why not ``tarfile``: a plain ``tarfile`` + ``hashlib`` loop packs an OSTree archive repo
(tens of thousands of small zlib objects) at about a seventh of the speed of
``tar -cf - REPO | openssl dgst -sha256``. The cost is per file (TarInfo objects, header
encoding, ``shutil.copyfileobj`` through small buffers), so here, as in tar itself:

- one pass: the tree is listed first by name and kind only (``d_type``: no stat per
  file), then each regular file is opened, fstat'ed for its header and read with one
  ``readv`` straight into a large reusable buffer, no intermediate ``bytes`` objects.
  Nothing about the size of the tar is known before it is written; the OCI writer
  fixes up the outer header afterwards (it already does so for the digest). An earlier
  version walked and stat'ed the whole tree before writing a byte, which alone took as
  long as ``tar | openssl`` for the whole job;
- a common header (short ASCII name, no link) is filled into a template cached per
  (type, mode, mtime): only name, size and checksum vary;
- each full buffer is hashed and written on a helper thread (``hashlib`` and
  ``os.write`` release the GIL for large buffers), so hashing overlaps with reading the
  next files, like the two processes of ``tar | openssl``;
- a big tree (PARALLEL_MIN_MEMBERS members or more, on more than one CPU) is read by
  worker processes, chunk by chunk, while this process hashes and writes the chunks in
  order (``tarworkers.py``): the per-file work, not the hashing, is what bounds packing
  many small files. This process lists only the first LIST_AHEAD members; directories
  it has not entered by then are chunks of their own, listed by their worker, so the
  listing is spread over the workers too. Same bytes either way.
  ``bench/bench_pack.py`` measures it.

The output is reproducible: entries in sorted order (parents before children), every
mtime the same fixed value, uid/gid 0, no user or group names, modes ``st_mode & 0o7777``,
symlinks as symlinks and hard links as separate regular files. Headers are POSIX ustar;
a PAX extended header is added only when a value does not fit ustar (long or non-ASCII
names, long link targets, files of 8 GiB or more): see ``tarheaders.py``.
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from koji_hostimage.errors import ArchiveError

from .tarheaders import (
    DIRTYPE,
    END_OF_ARCHIVE,
    MAX_OCTAL_SIZE,
    NUL_PAD,
    REGTYPE,
    SYMTYPE,
    encode_header,
    header_template,
)
from .tarreader import BLOCK, ZEROS
from .tarworkers import pack_with_workers

# Buffers handed to the hashing thread. Large enough that per-buffer overhead vanishes,
# small enough to stay in cache-friendly territory; three of them keep both threads busy.
BUFFER_SIZE = 4 * 1024 * 1024
BUFFER_COUNT = 3
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass
class PackResult:
    """What :func:`pack_tree` wrote."""

    size: int  # bytes of the tar, including the two zero blocks at the end
    sha256: str  # hex digest of those bytes
    file_count: int  # regular files
    data_bytes: int  # the sum of their sizes


# One member of the listing: (name in the tar, path of a regular file to open, header).
# Directories and symlinks get their header while listing: (name, None, header). Regular
# files get theirs in the fill loop from the fstat of the open file (one stat per file,
# as tar does; in the workers, when there are any): (name, path, b"").
_Listed = tuple[bytes, bytes | None, bytes]


@dataclass(frozen=True)
class _Subtree:
    """The members below a directory whose own header is already listed, left to be
    listed by the worker that packs them (see LIST_AHEAD)."""

    path: bytes
    prefix: bytes  # the directory's name in the tar, ending in "/"


def _list_tree(root: bytes, mtime: int, dir_bits: int,
               ahead: int | None = None) -> list[_Listed | _Subtree]:
    """Every member under ``root`` in tar order (sorted, parents first). Kinds come from
    the directory entries (``d_type``), so regular files cost no stat here.

    With ``ahead``: once that many members are listed, directories not entered yet are
    left as :class:`_Subtree` items in their place (their headers are listed)."""
    entries: list[_Listed | _Subtree] = []
    _list_dir(root, b"", mtime, dir_bits, entries, ahead)
    return entries


def _list_dir(directory: bytes, prefix: bytes, mtime: int, dir_bits: int,
              out: list[_Listed | _Subtree], ahead: int | None = None) -> None:
    try:
        with os.scandir(directory) as scan:
            children = sorted(scan, key=lambda child: child.name)
    except OSError as exc:
        raise ArchiveError(f"{os.fsdecode(directory)}: cannot list: {exc.strerror}") from exc
    append = out.append
    for child in children:
        name = prefix + child.name
        try:
            if child.is_file(follow_symlinks=False):
                append((name, child.path, b""))
                continue
            st_mode = child.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(st_mode):
                name += b"/"
                mode = st_mode & 0o7777 | dir_bits
                append((name, None, encode_header(name, DIRTYPE, mode, 0, mtime)))
                if ahead is not None and len(out) >= ahead:
                    append(_Subtree(child.path, name))
                else:
                    _list_dir(child.path, name, mtime, dir_bits, out, ahead)
            elif stat.S_ISLNK(st_mode):
                target = os.readlink(child.path)
                header = encode_header(name, SYMTYPE, st_mode & 0o7777, 0, mtime, target)
                append((name, None, header))
            else:
                raise _cannot_pack(child.path, st_mode)
        except OSError as exc:
            raise ArchiveError(f"{os.fsdecode(child.path)}: cannot stat: {exc.strerror}") from exc


def _cannot_pack(path: bytes, st_mode: int) -> ArchiveError:
    return ArchiveError(
        f"{os.fsdecode(path)}: cannot pack a {_kind_name(st_mode)}: "
        "expected a directory, regular file or symlink"
    )


def _kind_name(mode: int) -> str:
    for test, label in (
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return label
    return f"file of type {stat.S_IFMT(mode):o}"


class HashingWriter:
    """Hashes (sha256) and writes filled buffers on a helper thread.

    The producer takes an empty buffer with ``take()``, fills it, hands it back with
    ``submit(buf, length)``; ``finish()`` waits for the thread and returns the digest.
    An error on the thread (a full disk) is raised in the producer at its next call.
    """

    def __init__(self, out: BinaryIO, buffer_size: int = BUFFER_SIZE):
        self._out = out
        self._hash = hashlib.sha256()
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._work: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self.bytes_written = 0
        for _ in range(BUFFER_COUNT):
            self._free.put(bytearray(buffer_size))
        self._thread = threading.Thread(target=self._run, name="tar-hash-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            buf, length = item
            if self._error is None:
                try:
                    view = memoryview(buf)[:length]
                    self._hash.update(view)
                    self._out.write(view)
                    view.release()
                except BaseException as exc:  # handed to the producer thread
                    self._error = exc
            self._free.put(buf)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def take(self) -> bytearray:
        buf = self._free.get()
        self._check()
        return buf

    def submit(self, buf: bytearray, length: int) -> None:
        self._check()
        self.bytes_written += length
        self._work.put((buf, length))

    def finish(self) -> str:
        """Wait for all buffers to be written; return the sha256 hex digest."""
        self._work.put(None)
        self._thread.join()
        self._check()
        return self._hash.hexdigest()

    def abort(self) -> None:
        """Stop the thread without raising (used when the producer failed)."""
        self._work.put(None)
        self._thread.join()


# With at least this many members, and more than one CPU, worker processes read the files
# (tarworkers.py); below it, forking costs more than it saves.
PARALLEL_MIN_MEMBERS = 4096
CHUNK_MEMBERS = 512  # members per chunk handed to a worker (about 4 MB of OSTree objects)
MAX_WORKERS = 4
# When workers may be used, this process lists only this many members (enough to know
# the tree is big) before it starts them; the directories it has not entered by then
# are listed by the worker that packs them, one chunk each. Listing all of a 50,000-object
# repo first took about 55 ms, 12% of the whole pack, with every worker waiting. An
# OSTree repo's objects are spread evenly over objects/00..ff, so those chunks are
# evenly sized; a tree whose bulk sits below one directory entered late is packed
# mostly by one worker (the same bytes, only slower).
LIST_AHEAD = PARALLEL_MIN_MEMBERS
# Each worker's shared buffers. Measured on the 50,000-object repo (2 CPUs): 2 MiB
# buffers packed in 0.48 s, 4 MiB ones in 0.64 s; a buffer filled by a worker is then
# hashed and written while it is still in the CPU's caches. Smaller ones cost more in
# per-buffer messages (1 MiB: 0.54 s).
WORKER_BUFFER_SIZE = 2 * 1024 * 1024


def pack_tree(
    root: Path,
    out: BinaryIO,
    mtime: int,
    *,
    readable: bool = False,
    on_progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> PackResult:
    """Write the tar of everything under ``root`` to ``out``, hashing it on the way.

    Paths in the tar are relative to ``root``; directories are included. ``readable``
    makes files ``+r`` and directories ``+rx`` in the headers. ``on_progress(bytes)`` is
    called as buffers are written. ``workers``: processes reading the files (None: one
    per CPU up to MAX_WORKERS for trees of PARALLEL_MIN_MEMBERS members or more, else
    none); the bytes are the same either way. Raises ArchiveError for anything but
    directories, regular files and symlinks, and for a file whose size changes while it
    is read (the header would not match the data).
    """
    dir_bits = 0o555 if readable else 0
    file_bits = 0o444 if readable else 0
    cpus = len(os.sched_getaffinity(0))
    may_fork = cpus > 1 if workers is None else workers > 1
    entries = _list_tree(os.fsencode(root), mtime, dir_bits, LIST_AHEAD if may_fork else None)
    if workers is None:
        workers = _default_workers(len(entries), cpus)
    if workers > 1:
        def fill(chunk: list[_Listed | _Subtree], writer: Any) -> tuple[int, int]:
            return _fill(_expand(chunk, mtime, dir_bits), writer, mtime, file_bits, None,
                         end=b"")

        done = pack_with_workers(_chunks(entries), fill, out, workers, WORKER_BUFFER_SIZE,
                                 tail=END_OF_ARCHIVE, on_progress=on_progress)
        return PackResult(size=done.size, sha256=done.sha256, file_count=done.files,
                          data_bytes=done.data_bytes)
    writer = HashingWriter(out)
    try:
        files, data_bytes = _fill(_expand(entries, mtime, dir_bits), writer, mtime, file_bits,
                                  on_progress)
        digest = writer.finish()
    except BaseException:
        writer.abort()
        raise
    return PackResult(size=writer.bytes_written, sha256=digest, file_count=files,
                      data_bytes=data_bytes)


def _expand(entries: list[_Listed | _Subtree], mtime: int, dir_bits: int) -> list[_Listed]:
    """The listing with each _Subtree replaced by the members below it."""
    expanded: list[_Listed] = []
    for entry in entries:
        if type(entry) is _Subtree:
            _list_dir(entry.path, entry.prefix, mtime, dir_bits, expanded)
        else:
            expanded.append(entry)
    return expanded


def _chunks(entries: list[_Listed | _Subtree]) -> list[list[_Listed | _Subtree]]:
    """The listing cut into the chunks handed to workers: up to CHUNK_MEMBERS listed
    members each, and each _Subtree alone."""
    chunks: list[list[_Listed | _Subtree]] = []
    current: list[_Listed | _Subtree] = []
    for entry in entries:
        if type(entry) is _Subtree:
            if current:
                chunks.append(current)
                current = []
            chunks.append([entry])
            continue
        current.append(entry)
        if len(current) == CHUNK_MEMBERS:
            chunks.append(current)
            current = []
    if current:
        chunks.append(current)
    return chunks


def _default_workers(members: int, cpus: int) -> int:
    if members < PARALLEL_MIN_MEMBERS or cpus < 2:
        return 1
    # One more worker than CPUs: workers wait on the pipe for buffers now and then, and
    # the spare keeps the CPUs busy meanwhile (measured: 3 workers on 2 CPUs about 5%
    # faster than 2).
    return min(MAX_WORKERS, cpus + 1)


# os.fstat, looked up through the module so a test can make a file "change size" between
# the stat and the read, which is otherwise a race too narrow to hit.
_fstat = os.fstat


def _fill(
    entries: list[_Listed],
    writer: HashingWriter,
    mtime: int,
    file_bits: int,
    on_progress: Callable[[int], None] | None,
    end: bytes = END_OF_ARCHIVE,
) -> tuple[int, int]:
    """The hot loop: headers and file data into buffers, then ``end`` (the tar's end
    blocks, or nothing for a chunk of a tar); returns (files, data bytes).

    Per regular file: open, fstat (size and mode for the header), one readv of size+1
    bytes straight into the buffer (a file that grew shows up as the extra byte; a
    short read is retried before calling the file shrunk), close. State is in locals.
    """
    buf = writer.take()
    view = memoryview(buf)
    capacity = len(buf)
    pos = 0
    readv, open_, close, fstat, join = os.readv, os.open, os.close, _fstat, b"".join
    flags = _OPEN_FLAGS
    templates: dict[int, tuple[bytes, bytes, bytes, int]] = {}  # by mode
    files = data_bytes = 0
    for name, source, header in entries:
        if source is None:  # a directory or symlink: the header is all there is
            if capacity - pos < len(header):
                buf, view, pos = _next_buffer(writer, buf, view, pos, on_progress)
            view[pos : pos + len(header)] = header
            pos += len(header)
            continue
        try:
            fd = open_(source, flags)
        except OSError as exc:
            raise ArchiveError(f"{os.fsdecode(source)}: cannot open: {exc.strerror}") from exc
        try:
            st = fstat(fd)
            st_mode = st.st_mode
            if st_mode & 0o170000 != 0o100000:  # replaced since listing (O_NONBLOCK: a
                raise _cannot_pack(source, st_mode)  # FIFO did not hang the open)
            size = st.st_size
            mode = st_mode & 0o7777 | file_bits
            if len(name) <= 100 and size <= MAX_OCTAL_SIZE and name.isascii():
                # encode_header's common case, inlined
                template = templates.get(mode)
                if template is None:
                    template = templates[mode] = header_template(REGTYPE, mode, mtime)
                ids, times, tail, fixed = template
                size_field = b"%011o\0" % size
                checksum = b"%06o\0 " % (fixed + sum(name) + sum(size_field))
                header = join((name, NUL_PAD[len(name):], ids, size_field, times, checksum,
                               tail))
            else:
                header = encode_header(name, REGTYPE, mode, size, mtime)
            pad = -size % BLOCK
            # Room for the header, the data, its padding and the spare byte?
            need = len(header) + size + pad + 1
            if capacity - pos < need:
                buf, view, pos = _next_buffer(writer, buf, view, pos, on_progress)
            view[pos : pos + len(header)] = header
            pos += len(header)
            if need > capacity:  # a big file: streamed through several buffers
                buf, view, pos = _copy_big_file(fd, source, size, writer, buf, view, pos)
            else:
                got = readv(fd, [view[pos : pos + size + 1]])
                while got < size:
                    more = readv(fd, [view[pos + got : pos + size + 1]])
                    if more == 0:
                        raise _shrank(source, size)
                    got += more
                if got > size:
                    raise _grew(source, size)
                pos += size
        finally:
            close(fd)
        if pad:
            view[pos : pos + pad] = ZEROS[:pad]
            pos += pad
        files += 1
        data_bytes += size
    if capacity - pos < len(end):
        buf, view, pos = _next_buffer(writer, buf, view, pos, on_progress)
    view[pos : pos + len(end)] = end
    pos += len(end)
    view.release()
    writer.submit(buf, pos)
    return files, data_bytes


def _copy_big_file(
    fd: int,
    source: bytes,
    size: int,
    writer: HashingWriter,
    buf: bytearray,
    view: memoryview,
    pos: int,
) -> tuple[bytearray, memoryview, int]:
    """Stream an open file larger than a buffer; return the buffer state to continue
    with. Leaves room for the padding after the data (at most 511 bytes)."""
    capacity = len(buf)
    remaining = size
    while remaining:
        if capacity - pos < BLOCK:
            buf, view, pos = _next_buffer(writer, buf, view, pos, None)
        want = min(remaining, capacity - pos)
        got = os.readv(fd, [view[pos : pos + want]])
        if got == 0:
            raise _shrank(source, size)
        pos += got
        remaining -= got
    if os.read(fd, 1):
        raise _grew(source, size)
    if capacity - pos < BLOCK:
        buf, view, pos = _next_buffer(writer, buf, view, pos, None)
    return buf, view, pos


def _next_buffer(
    writer: HashingWriter,
    buf: bytearray,
    view: memoryview,
    filled: int,
    on_progress: Callable[[int], None] | None,
) -> tuple[bytearray, memoryview, int]:
    """Hand the first ``filled`` bytes of ``buf`` to the writer; return a fresh buffer
    (and its view and position, 0)."""
    view.release()
    writer.submit(buf, filled)
    if on_progress is not None:
        on_progress(writer.bytes_written)
    buf = writer.take()
    return buf, memoryview(buf), 0


def _shrank(source: bytes, size: int) -> ArchiveError:
    return ArchiveError(
        f"{os.fsdecode(source)}: file shrank while packing (expected {size} bytes)"
    )


def _grew(source: bytes, size: int) -> ArchiveError:
    return ArchiveError(
        f"{os.fsdecode(source)}: file grew while packing (expected {size} bytes)"
    )
