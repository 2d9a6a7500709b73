# SPDX-License-Identifier: GPL-2.0-or-later
"""Packing a big tree with worker processes: the per-file work in parallel, the stream
hashed and written in order by the parent.

Why: packing tens of thousands of small files is bound by the per-file work (open, fstat,
read, close, the header), about 10 microseconds a file in Python, against which the
hashing thread idles; ``tar | openssl`` runs its two halves on two cores. So the list of
members is cut into chunks (a chunk may also be a directory that its worker lists: what
a chunk holds is up to ``fill``), chunk ``c`` goes to worker ``c % N``, and each worker fills
its chunks' bytes into buffers in shared memory, in the same code as the single-process
path (``tarwriter._fill``). The parent takes the buffers chunk by chunk, in order,
hashes and writes them and hands each buffer back. The bytes are the same as without
workers; only who reads the files differs.

The workers are forked (the buffers are anonymous shared mappings made before the fork;
the chunks are inherited, not pickled). A worker runs only the fill loop, ``os`` calls
and pipe messages: no logging, no imports, no locks that another thread of the parent
could have held at the fork; it always ends with ``os._exit``, so nothing of the
parent's (buffered files, atexit handlers) runs twice. An error in a worker (a file that
cannot be read, grew or shrank) reaches the parent as the same ArchiveError message; a
worker that dies is an error too; the parent kills and reaps every worker on its way
out, whatever happened.

Messages are fixed-size records on one pipe per direction and worker: a worker reports
``(FILLED, slot, length)`` for a full buffer, ``(CHUNK_DONE, files, data bytes)`` at the
end of a chunk, or ``(FAILED, length)`` followed by the error text; the parent answers
with the number of each slot it is done with.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import queue
import signal
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from koji_hostimage.errors import ArchiveError

SLOTS_PER_WORKER = 4
_RECORD = struct.Struct("<BxxxIQQ")  # kind, slot or 0, then two numbers
_FILLED, _CHUNK_DONE, _FAILED = 1, 2, 3
_MAX_ERROR_BYTES = 3500  # one pipe write of at most PIPE_BUF bytes arrives whole

# fill(members, writer) -> (files, data bytes): writes the members' tar bytes through
# writer.take() / writer.submit(buffer, length), ending with a submit.
Fill = Callable[[Sequence[Any], "SlotWriter"], tuple[int, int]]


@dataclass
class WorkersResult:
    size: int
    sha256: str
    files: int
    data_bytes: int


class SlotWriter:
    """A worker's side: hands out its shared buffers and reports filled ones."""

    def __init__(self, slots: list[mmap.mmap], report_fd: int, free_fd: int):
        self._slots = slots
        self._index = {id(slot): number for number, slot in enumerate(slots)}
        self._free = list(range(len(slots)))
        self._report_fd = report_fd
        self._free_fd = free_fd
        self.bytes_written = 0

    def take(self) -> mmap.mmap:
        while not self._free:
            freed = os.read(self._free_fd, 64)
            if not freed:  # the parent is gone
                os._exit(1)
            self._free.extend(freed)
        return self._slots[self._free.pop(0)]

    def submit(self, buf: mmap.mmap, length: int) -> None:
        self.bytes_written += length
        _write_all(self._report_fd, _RECORD.pack(_FILLED, self._index[id(buf)], length, 0))

    def chunk_done(self, files: int, data_bytes: int) -> None:
        _write_all(self._report_fd, _RECORD.pack(_CHUNK_DONE, 0, files, data_bytes))

    def failed(self, message: str) -> None:
        text = message.encode("utf-8", "replace")[:_MAX_ERROR_BYTES]
        _write_all(self._report_fd, _RECORD.pack(_FAILED, 0, len(text), 0) + text)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _read_exactly(fd: int, count: int) -> bytes:
    data = b""
    while len(data) < count:
        more = os.read(fd, count - len(data))
        if not more:
            return data
        data += more
    return data


class _Worker:
    """The parent's handle on one worker process."""

    def __init__(self, number: int, slot_size: int):
        self.number = number
        self.slots = [mmap.mmap(-1, slot_size) for _ in range(SLOTS_PER_WORKER)]
        self.report_r, self.report_w = os.pipe()
        self.free_r, self.free_w = os.pipe()
        self.pid = 0

    def start(self, chunks: Sequence[Sequence[Any]], count: int, fill: Fill,
              others: Sequence[_Worker]) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            status = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                # Only the parent's ends of the other workers' pipes: a worker must see
                # EOF when the parent goes, whichever order things die in.
                for fd in [self.report_r, self.free_w,
                           *(fd for other in others for fd in (other.report_r, other.free_w))]:
                    os.close(fd)
                writer = SlotWriter(self.slots, self.report_w, self.free_r)
                try:
                    for chunk in chunks[self.number :: count]:
                        writer.chunk_done(*fill(chunk, writer))
                    status = 0
                except ArchiveError as exc:
                    writer.failed(str(exc))
                except BaseException as exc:  # reported, never raised in the fork
                    writer.failed(f"packing worker failed: {exc!r}")
            finally:
                os._exit(status)
        self.pid = pid
        os.close(self.report_w)
        os.close(self.free_r)

    def next_record(self) -> tuple[int, int, int, int]:
        record = _read_exactly(self.report_r, _RECORD.size)
        if len(record) != _RECORD.size:
            raise ArchiveError(f"packing worker {self.number} (pid {self.pid}) exited "
                               f"unexpectedly{self._status()}")
        kind, slot, first, second = _RECORD.unpack(record)
        if kind == _FAILED:
            raise ArchiveError(_read_exactly(self.report_r, first).decode("utf-8", "replace"))
        return kind, slot, first, second

    def release(self, slot: int) -> None:
        # A worker that has filled its last chunk may have exited already: nothing to tell.
        with contextlib.suppress(BrokenPipeError):
            _write_all(self.free_w, bytes((slot,)))

    def _status(self) -> str:
        with contextlib.suppress(ChildProcessError):
            pid, status = os.waitpid(self.pid, 0)
            if pid:
                self.pid = 0
                if os.WIFSIGNALED(status):
                    return f" (killed by signal {os.WTERMSIG(status)})"
                return f" (exit status {os.WEXITSTATUS(status)})"
        return ""

    def stop(self) -> None:
        """Kill (if still running) and reap the worker; release its pipes and buffers."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = 0
        for fd in (self.report_r, self.free_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        for slot in self.slots:
            slot.close()


def pack_with_workers(
    chunks: Sequence[Sequence[Any]],
    fill: Fill,
    out: BinaryIO,
    workers: int,
    slot_size: int,
    tail: bytes = b"",
    on_progress: Callable[[int], None] | None = None,
) -> WorkersResult:
    """Write the bytes ``fill`` makes of each chunk, in chunk order, then ``tail``, to
    ``out``; the chunks are filled by ``workers`` forked processes. Returns the size,
    sha256 and the (files, data bytes) the fills counted.

    This thread hashes each buffer and a writer thread writes it (both release the GIL
    for the copy), so the two overlap; the buffer goes back to its worker once written.
    """
    digest = hashlib.sha256()
    size = files = data_bytes = 0
    handles = [_Worker(number, slot_size) for number in range(workers)]
    writer = _BufferWriter(out)
    try:
        for started, handle in enumerate(handles):
            handle.start(chunks, workers, fill, handles[:started])
        for number in range(len(chunks)):
            handle = handles[number % workers]
            while True:
                kind, slot, first, second = handle.next_record()
                if kind == _CHUNK_DONE:
                    files += first
                    data_bytes += second
                    break
                view = memoryview(handle.slots[slot])[:first]
                digest.update(view)
                writer.write(view, handle, slot)
                size += first
                if on_progress is not None:
                    on_progress(size)
        writer.finish()
        out.write(tail)
        digest.update(tail)
        size += len(tail)
    finally:
        writer.finish(raise_error=False)
        for handle in handles:
            handle.stop()
    return WorkersResult(size=size, sha256=digest.hexdigest(), files=files,
                         data_bytes=data_bytes)


class _BufferWriter:
    """Writes hashed buffers to ``out`` in order on its own thread, then gives each
    back to its worker. A write error (a full disk) is raised at the next call."""

    def __init__(self, out: BinaryIO):
        self._out = out
        self._queue: queue.SimpleQueue[tuple[memoryview, _Worker, int] | None] = (
            queue.SimpleQueue()
        )
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="tar-write", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            view, handle, slot = item
            try:
                if self._error is None:
                    self._out.write(view)
            except BaseException as exc:  # handed to the hashing thread
                self._error = exc
            finally:
                view.release()
            handle.release(slot)

    def write(self, view: memoryview, handle: _Worker, slot: int) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((view, handle, slot))

    def finish(self, raise_error: bool = True) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if raise_error and self._error is not None:
            raise self._error
