# SPDX-License-Identifier: GPL-2.0-or-later
"""Running external programs: always argv lists, never a shell.

Compose engines do not call subprocess themselves; they take a ``CommandRunner`` so the
same engine code runs on the host (local builds, tests) and inside a Koji buildroot (the
builder plugin supplies a runner that goes through ``BuildRoot.mock``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from koji_hostimage.errors import CommandError

log = logging.getLogger(__name__)


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    output: str


@dataclass
class ToolTime:
    """Wall time spent waiting for external programs run by ``HostRunner``, by program
    name (``dnf``, ``ostree``...): what a build spends in the tools, not in our code."""

    seconds: float = 0.0
    calls: int = 0
    by_tool: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, argv: Sequence[str], seconds: float) -> None:
        tool = os.path.basename(str(argv[0])) if argv else "?"
        with self._lock:
            self.seconds += seconds
            self.calls += 1
            self.by_tool[tool] = self.by_tool.get(tool, 0.0) + seconds

    def reset(self) -> None:
        with self._lock:
            self.seconds, self.calls = 0.0, 0
            self.by_tool.clear()


# Every HostRunner adds to this (benchmarks read and reset it).
TOOL_TIME = ToolTime()


class CommandRunner(Protocol):
    """Where and how a command runs.

    ``inner_path`` maps a host path to the path the command sees (identity on the host;
    the path below the chroot root in a buildroot).
    """

    def run(
        self,
        argv: Sequence[str],
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> CommandResult: ...

    def inner_path(self, host_path: Path) -> str: ...


class HostRunner:
    """Runs commands directly on this machine, in their own process group.

    Output goes to ``log_path`` when given (and is returned either way). If the caller is
    interrupted (a cancelled Koji task raises in the handler), the whole process group is
    killed so no compose is left running.
    """

    def __init__(self, extra_env: Mapping[str, str] | None = None):
        self.extra_env = dict(extra_env or {})

    def inner_path(self, host_path: Path) -> str:
        return str(host_path)

    def run(
        self,
        argv: Sequence[str],
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> CommandResult:
        argv = [str(a) for a in argv]
        full_env = dict(os.environ)
        full_env.update(self.extra_env)
        if env:
            full_env.update(env)
        log.debug("running %s", argv)
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=str(cwd) if cwd else None,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            raw, _ = proc.communicate()
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            TOOL_TIME.add(argv, time.monotonic() - started)
        output = raw.decode("utf-8", "replace")
        if log_path is not None:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(f"$ {' '.join(argv)}\n{output}")
        return CommandResult(argv=argv, returncode=proc.returncode, output=output)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_checked(
    argv: Sequence[str],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    what: str = "",
    runner: CommandRunner | None = None,
    log_path: Path | None = None,
) -> str:
    """Run ``argv`` and return its output; raise ``CommandError`` with the tail on failure."""
    result = (runner or HostRunner()).run(argv, cwd=cwd, env=env, log_path=log_path)
    if result.returncode != 0:
        raise CommandError(result.argv, result.returncode, result.output, what=what)
    return result.output
