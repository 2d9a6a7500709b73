# SPDX-License-Identifier: GPL-2.0-or-later
"""The server's request log, written in batches off the event loop (see AccessLog)."""

from __future__ import annotations

import collections
import logging
import threading

# One line per request: "PEER METHOD TARGET STATUS BODY-BYTES" (see AccessLog), on a
# logger of its own at INFO: in-process users filter records by its name, which stays put
# when the code moves between modules.
ACCESS_LOGGER = "koji_hostimage.serve.access"
access_log = logging.getLogger(ACCESS_LOGGER)


class AccessLog:
    """The request log: one line per request, written in batches.

    A ``logging`` call per request cost about a third of the server's CPU time per
    request, so requests only append to a queue here and a background thread writes
    what has queued every ``interval`` seconds as one log record (one line per request;
    with a format that adds a prefix, only a batch's first line gets it). Nothing is
    queued when the ``koji_hostimage.serve.access`` logger would drop INFO anyway.
    """

    def __init__(self, logger: logging.Logger = access_log, interval: float = 0.2):
        self._logger = logger
        self._interval = interval
        self._pending: collections.deque[tuple[str, str, str, int, int]] = collections.deque()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, peer: str, method: str, target: str, status: int, sent: int) -> None:
        if self._logger.isEnabledFor(logging.INFO):
            self._pending.append((peer, method, target, status, sent))

    def flush(self) -> None:
        lines = []
        pop = self._pending.popleft
        while True:
            try:
                lines.append("%s %s %s %d %d" % pop())  # noqa: UP031 (fastest here)
            except IndexError:
                break
        if lines:
            self._logger.info("%s", "\n".join(lines))

    def start(self) -> None:
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="hostimage-access-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            self.flush()
