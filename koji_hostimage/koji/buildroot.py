# SPDX-License-Identifier: GPL-2.0-or-later
"""A CommandRunner that runs commands inside a Koji buildroot through kojid's mock.

The compose engines take a ``CommandRunner`` (koji_hostimage/runner.py). In kojid the
compose must run inside the build tag's buildroot, so this runner hands every command to
kojid's ``BuildRoot.mock(['--cwd', DIR, '--chroot', '--', ...])`` (the call kiwi's
``createKiwiImage`` and osbuild's koji-image-builder make) and maps paths between the
builder host and the chroot with ``BuildRoot.rootdir()`` (kojid's own
``BuildRoot.path_without_to_within`` does the same strip).

What kojid's ``BuildRoot.mock`` gives and does not give, and what this runner adds:

- It returns the raw ``os.waitpid`` status; this runner turns it into an exit code.
- It sends mock's stdout and stderr to ``<broot.workdir>/mock_output.log`` (appending)
  and streams that file to the hub. The runner reads back what one command appended, so
  a failure's ``CommandError`` quotes the command's own last lines.
- ``mock --chroot`` does not take an environment; ``env K=V ... CMD`` inside the chroot
  does the same without a shell.
- Cancelling: kojid cancels a task by signalling the task process and its children
  (``koji.daemon.TaskManager.cleanupTask``: SIGINT, then SIGTERM, then SIGKILL); the
  handler sees ``KeyboardInterrupt`` or ``SystemExit``. ``BuildRoot.mock`` then returns
  without stopping its mock child, so this runner kills every process that appeared
  below the task process during the command (kojid's ``_childPIDs`` walk of /proc, in
  the same signal order), so no compose outlives its task. A configurable timeout does
  the same from a timer thread.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from koji_hostimage.errors import HostImageError
from koji_hostimage.runner import CommandResult

log = logging.getLogger(__name__)

MOCK_OUTPUT_LOG = "mock_output.log"  # kojid's BuildRoot.mock writes mock's output here


class KojidBuildRoot(Protocol):
    """The part of kojid's ``BuildRoot`` this runner uses."""

    workdir: str | None

    def mock(self, args: list[str]) -> int: ...

    def rootdir(self) -> str: ...


class BuildrootError(HostImageError):
    """A path outside the buildroot, or a command that could not be run in it."""


class BuildrootRunner:
    """Runs argv lists inside ``broot`` (kojid's BuildRoot) with ``mock --chroot``."""

    def __init__(
        self,
        broot: KojidBuildRoot,
        log_path: Path | None = None,
        timeout: float | None = None,
        cancel_grace: float = 5.0,
    ):
        self.broot = broot
        self.log_path = log_path
        self.timeout = timeout or None
        self.cancel_grace = cancel_grace

    # -- paths ------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(os.path.abspath(self.broot.rootdir()))

    def inner_path(self, host_path: Path) -> str:
        """``host_path`` as the chroot sees it; it must lie inside the buildroot."""
        path = Path(os.path.abspath(host_path))
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            raise BuildrootError(
                f"{host_path}: expected a path inside the buildroot {self.root}"
            ) from None
        return "/" + relative.as_posix() if relative.parts else "/"

    def host_path(self, inner_path: str) -> Path:
        """The builder-host path of ``inner_path`` (an absolute path in the chroot)."""
        if not inner_path.startswith("/"):
            raise BuildrootError(f"{inner_path}: expected an absolute path in the buildroot")
        relative = os.path.normpath(inner_path).lstrip("/")
        if relative.startswith(".."):
            raise BuildrootError(f"{inner_path}: expected a path inside the buildroot")
        return self.root / relative

    # -- running ----------------------------------------------------------------------
    def mock_args(
        self, argv: Sequence[str], cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> list[str]:
        """The argument list handed to ``BuildRoot.mock`` for ``argv``."""
        args: list[str] = []
        if cwd is not None:
            args += ["--cwd", self.inner_path(cwd)]
        args += ["--chroot", "--"]
        if env:
            # env(1) sets the variables and execs the command: no shell in between.
            args += ["env", *(f"{key}={value}" for key, value in env.items())]
        return args + [str(arg) for arg in argv]

    def run(
        self,
        argv: Sequence[str],
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> CommandResult:
        argv = [str(a) for a in argv]
        args = self.mock_args(argv, cwd=cwd, env=env)
        output_log = self._mock_output_log()
        offset = output_log.stat().st_size if output_log and output_log.exists() else 0
        before = set(descendants(os.getpid()))
        timed_out = threading.Event()
        timer = None
        if self.timeout:
            timer = threading.Timer(self.timeout, self._on_timeout, args=(before, timed_out))
            timer.daemon = True
            timer.start()
        log.debug("buildroot %s: %s", getattr(self.broot, "name", "?"), argv)
        try:
            status = self.broot.mock(args)
        except BaseException:
            # The task is being cancelled (or kojid is shutting down): stop the compose.
            log.warning("interrupted: stopping %s", argv[0] if argv else "the command")
            stop_new_descendants(before, self.cancel_grace)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        returncode = exit_code(status)
        output = _read_from(output_log, offset) if output_log else ""
        if timed_out.is_set():
            output += f"\nkoji-hostimage: stopped after the {self.timeout:g} s timeout\n"
            returncode = returncode or 124
        self._write_logs(argv, output, returncode, log_path)
        return CommandResult(argv=argv, returncode=returncode, output=output)

    def _on_timeout(self, before: set[int], flag: threading.Event) -> None:
        flag.set()
        log.error("command timed out after %s s: stopping it", self.timeout)
        # Not reaping here: BuildRoot.mock's own waitpid loop collects its child.
        stop_new_descendants(before, self.cancel_grace, reap=False)

    def _mock_output_log(self) -> Path | None:
        workdir = getattr(self.broot, "workdir", None)
        return Path(workdir) / MOCK_OUTPUT_LOG if workdir else None

    def _write_logs(
        self, argv: Sequence[str], output: str, returncode: int, log_path: Path | None
    ) -> None:
        text = f"$ {' '.join(argv)}\n{output}"
        if not text.endswith("\n"):
            text += "\n"
        if returncode:
            text += f"[exit {returncode}]\n"
        for path in {p for p in (self.log_path, log_path) if p is not None}:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(text)


def exit_code(status: Any) -> int:
    """kojid's ``BuildRoot.mock`` returns an ``os.waitpid`` status; make it an exit code."""
    status = int(status or 0)
    try:
        return os.waitstatus_to_exitcode(status)
    except ValueError:
        return status


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


# ------------------------------------------------------------------- process handling


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of ``pid`` from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            data = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(")") + 2 :].split()
    return int(fields[1]), fields[0]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, parents before children (kojid's ``_childPIDs``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = _stat(int(entry))
        if info is not None:
            children.setdefault(info[0], []).append(int(entry))
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop(0)
        for child in sorted(children.get(parent, [])):
            found.append(child)
            queue.append(child)
    return found


def _alive(pid: int) -> bool:
    info = _stat(pid)
    return info is not None and info[1] != "Z"


def stop_new_descendants(before: set[int], grace: float, reap: bool = True) -> list[int]:
    """Stop every descendant of this process not in ``before``; return their pids.

    Signals go deepest first (the compose before the mock that runs it), SIGINT first so
    mock can unmount and clean up, then SIGTERM, then SIGKILL, ``grace`` seconds apart
    (kojid's cleanupTask order). With ``reap``, direct children are reaped so no zombie
    is left (not while someone else still waits for them). A zombie counts as stopped.
    """
    targets = [pid for pid in descendants(os.getpid()) if pid not in before]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid in targets if _alive(pid)]
        if not alive:
            break
        for pid in reversed(alive):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(pid) for pid in alive):
            if reap:
                _reap(targets)
            time.sleep(0.05)
    if reap:
        _reap(targets)
    return targets


def _reap(pids: Sequence[int]) -> None:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass  # not our child (a grandchild), or already reaped
