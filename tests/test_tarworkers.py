# SPDX-License-Identifier: GPL-2.0-or-later
"""Packing with worker processes (koji_hostimage/image/tarworkers.py): the same bytes as
without workers, errors and dead workers reported by name, nothing left running."""

from __future__ import annotations

import hashlib
import io
import os
import signal
from pathlib import Path

import pytest

from koji_hostimage.errors import ArchiveError
from koji_hostimage.image import tarwriter

TIMESTAMP = 1767225600


def _children() -> set[int]:
    """This process's child processes, from /proc (every thread's list)."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        pids.update(int(pid) for pid in (task / "children").read_text().split())
    return pids


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A tree with every kind of member, many small files, a file larger than a buffer
    and names that need PAX records."""
    src = tmp_path / "src"
    (src / "objects").mkdir(parents=True)
    for number in range(600):
        sub = src / "objects" / f"{number % 17:02x}"
        sub.mkdir(exist_ok=True)
        (sub / f"{number:064x}.filez").write_bytes(os.urandom(number * 13 % 9000))
    (src / "big.bin").write_bytes(os.urandom(tarwriter.BUFFER_SIZE * 2 + 777))
    (src / ("long" * 40)).write_text("PAX path")
    (src / "ünï").write_text("PAX path, non-ASCII")
    (src / "exec").write_text("#!/bin/sh\n")
    (src / "exec").chmod(0o750)
    (src / "link").symlink_to("exec")
    (src / "empty").mkdir()
    return src


def _pack(src: Path, workers: int, **options) -> tuple[bytes, tarwriter.PackResult]:
    out = io.BytesIO()
    result = tarwriter.pack_tree(src, out, TIMESTAMP, workers=workers, **options)
    return out.getvalue(), result


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_write_the_same_bytes_as_one_process(
    tree: Path, workers: int, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(tarwriter, "CHUNK_MEMBERS", 7)  # many chunks, many handovers
    serial, serial_result = _pack(tree, 1, readable=True)
    progress: list[int] = []
    parallel, result = _pack(tree, workers, readable=True, on_progress=progress.append)
    assert parallel == serial
    assert result == serial_result
    assert result.sha256 == hashlib.sha256(parallel).hexdigest()
    assert result.size == len(parallel)
    assert result.file_count == 600 + 4
    assert progress == sorted(progress) and progress[-1] == len(parallel) - 1024
    assert not _children(), "every worker is reaped"


@pytest.mark.parametrize("ahead", [0, 1, 30, 400])
def test_directories_listed_by_the_workers_give_the_same_bytes(
    tree: Path, ahead: int, monkeypatch: pytest.MonkeyPatch
):
    # The parent lists `ahead` members and leaves the directories it has not entered to
    # the workers: 0 leaves every top-level directory (objects/, empty/) to them, 30
    # stops inside objects/, 400 after most of it.
    serial, serial_result = _pack(tree, 1, readable=True)
    monkeypatch.setattr(tarwriter, "LIST_AHEAD", ahead)
    monkeypatch.setattr(tarwriter, "CHUNK_MEMBERS", 7)
    parallel, result = _pack(tree, 3, readable=True)
    assert parallel == serial
    assert result == serial_result
    assert not _children()


def test_the_listing_leaves_unentered_directories_in_their_place(tree: Path):
    full = tarwriter._list_tree(os.fsencode(tree), TIMESTAMP, 0)
    cut = tarwriter._list_tree(os.fsencode(tree), TIMESTAMP, 0, ahead=30)
    subtrees = [entry for entry in cut if isinstance(entry, tarwriter._Subtree)]
    # objects/ is entered (it is listed before the 30th member); of its 17 directories,
    # those reached after 30 members are left, each right after its own header.
    assert subtrees and all(s.prefix.startswith(b"objects/") for s in subtrees)
    for subtree in subtrees:
        assert cut[cut.index(subtree) - 1][0] == subtree.prefix
    assert len(cut) < len(full)
    assert tarwriter._expand(cut, TIMESTAMP, 0) == full
    chunks = tarwriter._chunks(cut)
    assert [entry for chunk in chunks for entry in chunk] == cut
    assert all(len(chunk) == 1 for chunk in chunks
               if any(isinstance(entry, tarwriter._Subtree) for entry in chunk))


def test_a_worker_that_cannot_list_its_directory_names_it(
    tree: Path, monkeypatch: pytest.MonkeyPatch
):
    fifo = tree / "objects" / "0f" / "not-a-file"
    os.mkfifo(fifo)
    monkeypatch.setattr(tarwriter, "LIST_AHEAD", 0)  # objects/ is listed by a worker
    with pytest.raises(ArchiveError, match=f"{fifo}: cannot pack a fifo"):
        _pack(tree, 2)
    assert not _children()


def test_a_workers_error_reaches_the_caller_with_its_message(
    tree: Path, monkeypatch: pytest.MonkeyPatch
):
    victim = tree / "objects" / "05" / f"{5:064x}.filez"
    real = os.fstat

    def lying_fstat(fd: int) -> os.stat_result:  # the file "grows" after the fstat
        st = real(fd)
        if os.readlink(f"/proc/self/fd/{fd}") != str(victim):
            return st
        fields = list(st)[:10]
        fields[6] -= 1
        return os.stat_result(fields)

    monkeypatch.setattr(tarwriter, "_fstat", lying_fstat)  # inherited by the forks
    monkeypatch.setattr(tarwriter, "CHUNK_MEMBERS", 50)
    with pytest.raises(ArchiveError, match=f"{victim}: file grew while packing"):
        _pack(tree, 2)
    assert not _children()


def test_a_worker_that_dies_is_an_error_not_a_short_tar(
    tree: Path, monkeypatch: pytest.MonkeyPatch
):
    victim = tree / "big.bin"
    real = os.fstat

    def dying_fstat(fd: int) -> os.stat_result:
        if os.readlink(f"/proc/self/fd/{fd}") == str(victim):
            os.kill(os.getpid(), signal.SIGKILL)  # only ever in a worker: the parent
        return real(fd)                          # does not open files here

    monkeypatch.setattr(tarwriter, "_fstat", dying_fstat)
    with pytest.raises(ArchiveError,
                       match=r"packing worker \d \(pid \d+\) exited unexpectedly "
                             r"\(killed by signal 9\)"):
        _pack(tree, 2)
    assert not _children()


def test_an_interrupt_in_the_parent_stops_every_worker(tree: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tarwriter, "CHUNK_MEMBERS", 7)

    def interrupt(written: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _pack(tree, 3, on_progress=interrupt)
    assert not _children()


def test_workers_only_for_big_trees_on_several_cpus():
    big = tarwriter.PARALLEL_MIN_MEMBERS
    assert tarwriter._default_workers(big - 1, cpus=2) == 1
    assert tarwriter._default_workers(big, cpus=2) == 3
    assert tarwriter._default_workers(big, cpus=64) == tarwriter.MAX_WORKERS
    assert tarwriter._default_workers(10 * big, cpus=1) == 1
