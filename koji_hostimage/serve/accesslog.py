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
    with a format that adds a prefix, only a batch's first line gets it). When the
    ``koji_hostimage.serve.access`` logger would drop INFO, the queue is emptied unwritten.
    """

    def __init__(self, logger: logging.Logger = access_log, interval: float = 0.2):
        self._logger = logger
        self._interval = interval
        self._pending: collections.deque[tuple[str, str, str, int, int]] = collections.deque()
        # ``append((peer, method, target, status, sent))``: the server's per-request call,
        # the deque's own append (no Python frame, no level check per request: flush
        # drops the lines when the logger would drop INFO).
        self.append = self._pending.append
        # Requests and body bytes of the entries flushed so far; the lock makes taking
        # entries off the queue and counting them one step for totals().
        self._flushed = (0, 0)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, peer: str, method: str, target: str, status: int, sent: int) -> None:
        self.append((peer, method, target, status, sent))

    def totals(self) -> tuple[int, int]:
        """Requests answered and body bytes sent so far: every entry ever appended, also
        those not written yet and those dropped (the server's stats come from here, so
        the event loop keeps no counters of its own)."""
        with self._lock:
            requests, body_bytes = self._flushed
            pending = list(self._pending)
        return requests + len(pending), body_bytes + sum(entry[4] for entry in pending)

    def flush(self) -> None:
        # Taking entries and writing them is one step under the lock: two flushes (the
        # timer thread's and stop()'s) must not write their batches out of order.
        with self._lock:
            pop = self._pending.popleft
            entries = [pop() for _ in range(len(self._pending))]
            requests, body_bytes = self._flushed
            self._flushed = (requests + len(entries), body_bytes + sum(e[4] for e in entries))
            if entries and self._logger.isEnabledFor(logging.INFO):
                # An f-string: half the time of "%s %s %s %d %d" % entry per line.
                lines = [f"{p} {m} {t} {s} {n}" for p, m, t, s, n in entries]
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
