# SPDX-License-Identifier: GPL-2.0-or-later
"""File-system helpers that keep outputs whole: write to a temporary name, then rename."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

# Scratch directories a build makes inside its output directory: ".<kind>-<pid>-<random>".
# The pid says whether the build that made one still runs; see clean_stale_scratch.
# ".trash-<pid>-<random>" is a tree being removed in the background (see discard_tree).
SCRATCH_KINDS = ("work", "staging", "package", "trash")
_SCRATCH_RE = re.compile(r"^\.(?P<kind>[a-z]+)-(?P<pid>[0-9]+)-[A-Za-z0-9_]+$")


def file_mode(mode: int = 0o666) -> int:
    """``mode`` as a new file would get it under the current umask (open(2)'s rule)."""
    return mode & ~_umask()


def _umask() -> int:
    # /proc says it without changing it (os.umask is process-wide: a thread could see
    # the temporary value); Linux >= 4.7
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory.

    The file gets the mode a plain ``open(path, "w")`` would give it (0644 under the
    usual umask), not mkstemp's private 0600.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only on success.

    Works for files and directories. On any exception the temporary is removed, so an
    interrupted run leaves nothing half-written and can simply run again.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def scratch_prefix(kind: str) -> str:
    """The name prefix of a scratch directory of ``kind`` made by this process."""
    return f".{kind}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid we could have written: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def clean_stale_scratch(directory: Path, kinds: Iterable[str] = SCRATCH_KINDS) -> list[Path]:
    """Remove the scratch directories killed builds left in ``directory``.

    Only directories named as ours (``.<kind>-<pid>-<random>``, see ``scratch_prefix``)
    whose process no longer runs are removed: a build running beside this one keeps its
    own. Returns what was removed.
    """
    removed: list[Path] = []
    wanted = set(kinds)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return removed
    for name in names:
        match = _SCRATCH_RE.match(name)
        if not match or match["kind"] not in wanted:
            continue
        pid = int(match["pid"])
        path = Path(directory) / name
        if pid == os.getpid() or _pid_alive(pid) or path.is_symlink() or not path.is_dir():
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            log.info("removed %s, left by an interrupted build (pid %d)", path, pid)
            removed.append(path)
    return removed


_DISCARDS: list[threading.Thread] = []
_DISCARDS_LOCK = threading.Lock()


def discard_tree(path: Path) -> Path | None:
    """Remove the directory ``path`` off the caller's critical path.

    It is renamed to a ``.trash-<pid>-<random>`` sibling (one cheap rename) and deleted
    by a background thread; the process waits for that thread only when it exits. A
    killed process's trash is collected by ``clean_stale_scratch`` like its other
    scratch. Returns the trash path (None: nothing was there). Falls back to removing in
    place when the rename fails.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return None
    trash = Path(tempfile.mkdtemp(prefix=scratch_prefix("trash"), dir=path.parent))
    try:
        os.replace(path, trash / path.name)
    except OSError:
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        return None
    thread = threading.Thread(target=shutil.rmtree, args=(trash,),
                              kwargs={"ignore_errors": True},
                              name=f"discard {path.name}", daemon=False)
    with _DISCARDS_LOCK:
        _DISCARDS[:] = [t for t in _DISCARDS if t.is_alive()]
        _DISCARDS.append(thread)
    thread.start()
    return trash


def wait_for_discards(timeout: float | None = None) -> bool:
    """Wait until the trees handed to ``discard_tree`` are gone; False on timeout."""
    with _DISCARDS_LOCK:
        threads = list(_DISCARDS)
    for thread in threads:
        thread.join(timeout)
    return not any(t.is_alive() for t in threads)


@contextmanager
def scratch_dir(kind: str, parent: Path) -> Iterator[Path]:
    """A scratch directory ``.<kind>-<pid>-<random>`` in ``parent``, discarded (in the
    background, see ``discard_tree``) when the block ends."""
    path = Path(tempfile.mkdtemp(prefix=scratch_prefix(kind), dir=parent))
    try:
        yield path
    finally:
        discard_tree(path)


def os_error_line(exc: OSError, doing: str = "") -> str:
    """One line for an OSError: the file, what was being done, and the reason."""
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason += " (the file system is full)"
    elif exc.errno == errno.EROFS:
        reason += " (expected a writable output directory)"
    parts = [p for p in (str(where), doing, reason) if p]
    return ": ".join(parts)
