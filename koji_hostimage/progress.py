# SPDX-License-Identifier: GPL-2.0-or-later
"""Where a build's time goes: stage timings and progress of long stages.

``StageTimer`` times the stages of one build: one log line per stage with its wall
time, and the seconds by stage name for ``hostimage.json``'s ``stage_seconds``.

``Progress`` reports a long stage (objects exported, bytes packed) with a rate: on a
terminal a line redrawn in place about twice a second; otherwise (a log file, Koji) an
ordinary log line at most every ``QUIET_INTERVAL`` seconds. A ``watch`` thread can sample
a count from outside (the size of a file being written, objects in a repo) for work a
subprocess does. Everything goes through ``logging``; nothing is printed.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

QUIET_INTERVAL = 10.0  # seconds between progress lines when stderr is not a terminal
TTY_INTERVAL = 0.5


@dataclass
class StageTimer:
    """Wall time per stage of one build, in the order the stages ran."""

    seconds: dict[str, float] = field(default_factory=dict)
    _taken: dict[str, float] = field(default_factory=dict, repr=False)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name`` (added up when a stage runs twice); the
        time is recorded and logged even when the block raises."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - started)

    def add(self, name: str, seconds: float) -> None:
        seconds = max(0.0, seconds - self._taken.pop(name, 0.0))
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 3)
        log.info("stage %s: %.2f s", name, seconds)

    def take(self, name: str, part: str, seconds: float) -> None:
        """Record ``seconds`` of the running stage ``name`` as its own stage ``part``
        (deltas made inside the export): moved out of ``name``, not counted twice."""
        seconds = max(0.0, seconds)
        self._taken[name] = self._taken.get(name, 0.0) + seconds
        self.seconds[part] = round(self.seconds.get(part, 0.0) + seconds, 3)
        log.info("stage %s: %.2f s", part, seconds)

    def snapshot(self) -> dict[str, float]:
        return dict(self.seconds)


def bytes_in(directory: Path) -> int:
    """The bytes of the files directly in ``directory`` (a file being written there)."""
    with os.scandir(directory) as entries:
        return sum(e.stat().st_size for e in entries if e.is_file(follow_symlinks=False))


def count_files(directory: Path) -> int:
    """The files under ``directory`` (objects written into a repo so far)."""
    return sum(len(files) for _, _, files in os.walk(directory))


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _human(value: float, unit: str) -> str:
    if unit != "bytes":
        return f"{value:,.0f} {unit}"
    for suffix in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or suffix == "GiB":
            return f"{value:.1f} {suffix}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


class Progress:
    """Progress of one long stage: ``update(done)``; ``finish()`` logs the total."""

    def __init__(self, what: str, unit: str = "objects", total: int | None = None,
                 terminal: bool | None = None, interval: float | None = None,
                 logger: logging.Logger | None = None):
        self.what = what
        self.unit = unit
        self.total = total
        self.terminal = _is_terminal() if terminal is None else terminal
        self.interval = interval if interval is not None else (
            TTY_INTERVAL if self.terminal else QUIET_INTERVAL)
        self.log = logger or log
        self.started = time.monotonic()
        self.last = self.started
        self.done = 0
        self.lines = 0
        self._lock = threading.Lock()

    def line(self, done: int, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = _human(done / elapsed, self.unit) + "/s"
        of = f" of {_human(self.total, self.unit)}" if self.total else ""
        return f"{self.what}: {_human(done, self.unit)}{of} in {elapsed:.0f} s ({rate})"

    def update(self, done: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.done = done
            if now - self.last < self.interval:
                return
            self.last = now
            self.lines += 1
        text = self.line(done, now)
        if self.terminal and self.lines > 1:
            # redraw in place: up to the previous progress line, clear it, write anew
            self.log.info("\x1b[1A\r\x1b[K%s", text)
        else:
            self.log.info("%s", text)

    def finish(self) -> None:
        if self.lines:
            self.log.info("%s (done)", self.line(self.done, time.monotonic()))

    @contextmanager
    def watch(self, sample: Callable[[], int]) -> Iterator[Progress]:
        """Call ``sample()`` in a background thread and report it, while the block
        runs (work a subprocess or another module does); stops with the block."""
        stop = threading.Event()
        period = max(min(self.interval, 1.0), 0.05)

        def run() -> None:
            while not stop.wait(period):
                try:
                    self.update(sample())
                except OSError:
                    continue  # the thing sampled is being renamed or removed

        thread = threading.Thread(target=run, name=f"progress {self.what}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            try:
                self.update(sample())
            except OSError:
                pass
            self.finish()
