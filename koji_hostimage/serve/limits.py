# SPDX-License-Identifier: GPL-2.0-or-later
"""Connection state and accounting for the static server: who may hold a slot, how long.

A slot costs a socket (and, for a directory tree, an open file), so a client that opens
connections and sends its request heads slowly (one byte every few seconds,
"slowloris") could hold every slot and lock everybody else out. Three rules stop that
(:class:`ConnectionLimits` keeps the books, the event loop in
:mod:`koji_hostimage.serve.server` applies them):

- a **deadline for the whole request head** (``head_timeout``, counted from the first
  byte of the request, or from the accept for a new connection), not per byte;
- a **per-client limit on half-open connections** (those still sending a request head),
  counted by source address: a client over it gets its new connection closed at once;
- when every slot is taken, the connection that has **waited longest for a head** (a
  slow head or an idle keep-alive) gives its slot to the new client, once it has waited
  longer than ``evict_after``; clients that keep sending requests are never pushed out.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from resource import RLIM_INFINITY, RLIMIT_NOFILE, getrlimit

from .sources import Resource

DEFAULT_HEAD_TIMEOUT = 10.0
DEFAULT_MAX_HALF_OPEN_PER_CLIENT = 32
DRAIN_TIMEOUT = 2.0  # half-closed by us: how long the client may take to close its side


def connection_limit_for_fds() -> int:
    """Connections we can hold with the open-file limit: each may need a socket and an
    open file (directory mode), and the process needs some descriptors of its own."""
    soft, _hard = getrlimit(RLIMIT_NOFILE)
    if soft == RLIM_INFINITY:
        return 1 << 20
    return max(1, (soft - 32) // 2)


class Connection:
    """State of one client connection in the event loop."""

    __slots__ = (
        "sock",
        "fd",
        "peer",
        "inbuf",
        "header",
        "body",
        "resource",
        "offset",
        "left",
        "close_after",
        "log_entry",
        "writing",
        "draining",
        "last_active",
        "half_open",
        "head_since",
    )

    def __init__(self, sock: socket.socket, peer: str, now: float):
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.inbuf = b""
        # The response being sent: ``header``, then ``body`` (a small file, sent with the
        # header in one writev) or ``left`` bytes of ``resource`` from ``offset``.
        self.header = b""
        self.body: memoryview | None = None
        self.resource: Resource | None = None
        self.offset = 0
        self.left = 0
        self.close_after = False
        # The access-log entry of that response: (peer, method, target, status, bytes).
        self.log_entry: tuple[str, str, str, int, int] | None = None
        self.writing = False  # waiting for the socket to take more of a response
        self.draining = False  # half-closed by us, reading what the client still sends
        self.last_active = now
        # True while a request head is awaited and incomplete (from the accept, or from
        # the first byte of a later request); head_since: when that started, or for an
        # idle keep-alive connection, when it became idle.
        self.half_open = False
        self.head_since = now

    @property
    def waiting(self) -> bool:
        """Holding a slot without a request to answer: a head in progress, or idle."""
        return not self.writing and not self.draining


class ConnectionLimits:
    """The books on half-open connections per client, and the deadlines."""

    def __init__(
        self,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
        idle_timeout: float = 30.0,
        max_half_open_per_client: int = DEFAULT_MAX_HALF_OPEN_PER_CLIENT,
    ):
        self.head_timeout = head_timeout
        self.idle_timeout = idle_timeout
        self.max_half_open_per_client = max(1, max_half_open_per_client)
        # A slot is taken from a waiting connection only after this long: legitimate
        # clients send a head within milliseconds of connecting or of the last response.
        self.evict_after = min(1.0, head_timeout / 4)
        self.half_open_by_peer: dict[str, int] = {}
        self.refused = 0
        self.timed_out = 0
        self.evicted = 0

    @property
    def sweep_interval(self) -> float:
        return max(0.05, min(1.0, self.head_timeout / 4, self.idle_timeout / 4))

    def admit(self, peer: str) -> bool:
        """May ``peer`` open one more connection (it will be half-open at first)?"""
        if self.half_open_by_peer.get(peer, 0) >= self.max_half_open_per_client:
            self.refused += 1
            return False
        return True

    def head_started(self, conn: Connection, now: float) -> None:
        if not conn.half_open:
            conn.half_open = True
            self.half_open_by_peer[conn.peer] = self.half_open_by_peer.get(conn.peer, 0) + 1
        conn.head_since = now

    def head_done(self, conn: Connection, now: float) -> None:
        """A whole head arrived (or the connection closes): no longer half-open."""
        if conn.half_open:
            conn.half_open = False
            count = self.half_open_by_peer[conn.peer] - 1
            if count:
                self.half_open_by_peer[conn.peer] = count
            else:
                del self.half_open_by_peer[conn.peer]
        conn.head_since = now

    def expired(self, conn: Connection, now: float) -> bool:
        """Whether ``conn`` has overstayed: a head past its deadline, an idle or stalled
        connection past the idle timeout, a half-closed one its client never closed."""
        if conn.draining:
            return now - conn.last_active > DRAIN_TIMEOUT
        if conn.half_open and not conn.writing and now - conn.head_since > self.head_timeout:
            self.timed_out += 1
            return True
        return now - conn.last_active > self.idle_timeout

    def victim(self, connections: Iterable[Connection], now: float) -> Connection | None:
        """The connection that has waited longest for a request head, if longer than
        ``evict_after``: it gives up its slot when all are taken."""
        oldest: Connection | None = None
        for conn in connections:
            if conn.waiting and (oldest is None or conn.head_since < oldest.head_since):
                oldest = conn
        if oldest is None or now - oldest.head_since <= self.evict_after:
            return None
        self.evicted += 1
        return oldest
