# SPDX-License-Identifier: GPL-2.0-or-later
"""A small, fast static web server for OSTree archive-mode repos (DESIGN section 6).

It serves one tree of files, either a repo directory (:class:`DirectoryTree`) or the
``srv/repo/`` of an OCI archive's content layer read straight from the tar
(:class:`ArchiveTree`), to ``ostree pull`` and friends: GET, HEAD and single byte ranges,
HTTP/1.1 keep-alive, long cache lifetimes for content-addressed objects and deltas.
This module is the connection handling; the trees are in
:mod:`koji_hostimage.serve.sources`, the socket-free HTTP parsing in
:mod:`koji_hostimage.serve.http`, the batched request log in
:mod:`koji_hostimage.serve.accesslog`.

Using it in-process (tests, tools)::

    from koji_hostimage.serve.server import HostImageServer
    from koji_hostimage.serve.sources import ArchiveTree, DirectoryTree

    with DirectoryTree("/path/to/repo") as tree, HostImageServer(tree, port=0) as server:
        # HostImageServer binds in __init__; entering the `with` calls start(), which
        # serves from a background thread; leaving it calls stop().
        url = server.url  # "http://127.0.0.1:PORT/"
        ...  # ostree remote add --no-gpg-verify r URL; ostree pull r REF
        print(server.stats())  # requests and body bytes served so far

``port=0`` picks a free port (read it back from ``server.port``). ``serve_forever()``
serves in the calling thread instead of ``start()`` (what ``koji-hostimage serve`` does).

Why not :mod:`http.server`: it took 2.0x nginx's time for a full ``ostree pull``. This
one keeps per-request work small, so that it spends no more server CPU per pull than
nginx (``bench/bench_pull.py`` measures that): one epoll event loop for all connections
(no thread or interpreter-lock handoffs per request); for the request ostree sends for
nearly every object, a plain ``GET /path HTTP/1.1`` whose header lines are the same in
every request, a fast path (:func:`~koji_hostimage.serve.http.parse_plain_get`: one
regex match and a dict hit instead of the full parser); a small body (up to
:data:`~koji_hostimage.serve.sources.SMALL_BODY`) sent with its head in one ``writev``,
read with one ``readv`` (directory: open, read, close, no fstat) or sliced from a mapping
of the archive (no file syscall at all), so a typical request costs a ``read`` and a
``writev`` where nginx makes about nine syscalls; larger bodies sent with
``os.sendfile``; and the request log written in batches.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import threading
import time
from dataclasses import dataclass

from .accesslog import AccessLog
from .http import (
    IMMUTABLE_DIRS,
    MAX_HEADER_BYTES,
    BadRequest,
    DateCache,
    error_response,
    find_head_end,
    ok_header,
    parse_head,
    parse_plain_get,
    parse_range,
    request_relpath,
)
from .limits import (
    DEFAULT_HEAD_TIMEOUT,
    DEFAULT_MAX_HALF_OPEN_PER_CLIENT,
    Connection,
    ConnectionLimits,
    connection_limit_for_fds,
)
from .sources import Body, ServerError, Tree

log = logging.getLogger(__name__)
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_IDLE_TIMEOUT = 30.0


@dataclass(frozen=True)
class ServerStats:
    requests: int
    body_bytes: int
    connections: int


class HostImageServer:
    """HTTP/1.1 static server for one :class:`Tree`, on one event loop (epoll).

    The socket is bound in ``__init__`` (so ``port`` is known at once; ``port=0`` picks a
    free one). ``start()`` serves from a background thread and returns self;
    ``serve_forever()`` serves in the calling thread until ``stop()``. ``stop()`` closes
    the listener and every open connection; ``request_stop()`` (safe in a signal handler)
    only asks the loop to end, after the request it is answering is sent and logged.

    Slow clients cannot take the server over: a request head must arrive whole within
    ``head_timeout`` seconds, each source address may hold at most
    ``max_half_open_per_client`` connections with an incomplete head, and with all
    ``max_connections`` slots taken the longest-waiting connection gives up its slot
    (:mod:`koji_hostimage.serve.limits`).

    One thread serves every connection, nginx-style: non-blocking sockets, epoll, and
    sends that resume when the socket drains (the unsent rest of a small body is kept as
    bytes of its own, since the tree reuses its read buffer; a large one resumes its
    ``sendfile``). An earlier thread-per-connection version spent 15-25% more CPU per
    request with 8 clients at once (interpreter-lock handoffs and context switches). A
    lookup is a dict hit (archive) or an open and a read (directory), so it does not
    block the loop for long while the repo is in the page cache.
    """

    def __init__(
        self,
        tree: Tree,
        bind: str = "127.0.0.1",
        port: int = 8080,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
        max_half_open_per_client: int = DEFAULT_MAX_HALF_OPEN_PER_CLIENT,
    ):
        self.tree = tree
        self.bind = bind
        self.idle_timeout = idle_timeout
        self.limits = ConnectionLimits(head_timeout, idle_timeout, max_half_open_per_client)
        self._stopped = False
        self.max_connections = max(1, min(max_connections, connection_limit_for_fds()))
        self._listener = self._listen(bind, port)
        self.port: int = self._listener.getsockname()[1]
        self._family = int(self._listener.family)
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._serving = threading.Lock()
        self._serving_thread: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        self._dates = DateCache()
        self.access_log = AccessLog()
        self._log = self.access_log.append
        self._tree_read = tree.read
        self._connections: dict[int, Connection] = {}
        self._epoll: select.epoll | None = None
        self._accepting = True
        self._accepted = 0

    @staticmethod
    def _listen(bind: str, port: int) -> socket.socket:
        try:
            infos = socket.getaddrinfo(
                bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family = infos[0][0]
            listener = socket.create_server(
                (bind, port), family=family, backlog=1024, reuse_port=False
            )
        except OSError as exc:
            raise ServerError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
        listener.setblocking(False)
        # Accepted sockets inherit TCP_NODELAY from the listener (Linux): one syscall
        # less per connection. Without it, the last segment of a response bigger than
        # one segment could wait for the client's delayed ACK.
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return listener

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/"

    def stats(self) -> ServerStats:
        """Requests answered, body bytes sent and connections accepted so far."""
        requests, body_bytes = self.access_log.totals()
        return ServerStats(requests, body_bytes, self._accepted)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> HostImageServer:
        """Serve from a daemon thread; returns self (``HostImageServer(...).start()``)."""
        if self._thread is not None:
            raise ServerError("server already started")
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"hostimage-server-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def __enter__(self) -> HostImageServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` is called (from another thread or a signal handler)."""
        if not self._serving.acquire(blocking=False):
            raise ServerError("server is already serving")
        self._serving_thread = threading.current_thread()
        self.access_log.start()
        try:
            if not self._stopping.is_set():
                self._event_loop()
        finally:
            self._close_all()
            self.access_log.stop()  # before release: stop() flushes once we are done
            self._serving.release()

    def request_stop(self) -> None:
        """Ask the event loop to end; it finishes (and logs) the response it is in the
        middle of, then ``serve_forever`` closes every connection, flushes the request
        log and returns. Only sets a flag and writes a byte: safe in a signal handler."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: close the listener and every connection (waits up to ``timeout``
        for the serving thread)."""
        if self._stopped:
            return
        self._stopped = True
        self.request_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        # Wait for a serve_forever() running in another thread to finish cleaning up (not
        # when called from a signal handler in the serving thread itself).
        if self._serving_thread is not threading.current_thread():
            if self._serving.acquire(timeout=timeout):
                self._serving.release()
        self._listener.close()
        self.access_log.flush()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the event loop --------------------------------------------------------------------

    def _event_loop(self) -> None:
        epoll = self._epoll = select.epoll()
        listen_fd = self._listener.fileno()
        epoll.register(listen_fd, select.EPOLLIN)
        epoll.register(self._wake_r, select.EPOLLIN)
        connections = self._connections
        interval = self.limits.sweep_interval
        next_sweep = time.monotonic() + interval
        next_second = self._dates.refresh(time.monotonic())
        while not self._stopping.is_set():
            events = epoll.poll(interval)
            now = time.monotonic()
            if now >= next_second:  # the Date header changes: once a second, not per request
                next_second = self._dates.refresh(now)
            for fd, _mask in events:
                conn = connections.get(fd)
                if conn is not None:
                    conn.last_active = now
                    try:
                        if conn.writing:
                            self._write(conn)
                        else:
                            self._read(conn)
                    except OSError as exc:
                        # Client went away or reset: nothing left to answer.
                        log.debug("connection from %s closed: %s", conn.peer, exc)
                        self._close(conn)
                    except Exception:
                        # A bug must cost one connection, not the server.
                        log.exception("error serving %s", conn.peer)
                        self._close(conn)
                elif fd == listen_fd:
                    self._accept(now)
                elif fd == self._wake_r:
                    return
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + interval

    def _accept(self, now: float) -> None:
        """Accept one connection per readiness event, as nginx does (``multi_accept
        off``; epoll is level-triggered): looping until EAGAIN cost a failed accept and
        an exception for nearly every connection (970 of 1,036 in one ostree pull)."""
        epoll = self._epoll
        if len(self._connections) >= self.max_connections:
            # All slots taken: the connection waiting longest for a request head gives its
            # slot up; with none waiting long, new clients wait in the backlog for a slot.
            victim = self.limits.victim(self._connections.values(), now)
            if victim is None:
                epoll.modify(self._listener.fileno(), 0)
                self._accepting = False
                return
            log.debug("all %d slots taken: closing %s's waiting connection",
                      self.max_connections, victim.peer)
            self._close(victim)
        try:
            # The C base class's accept: socket.accept() converts the listener's family
            # and type to enums each time, half the interpreter work of a connection.
            fd, address = self._listener._accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log.warning("accept: %s; dropping idle connections", exc)
                self._sweep(now + self.idle_timeout / 2)
                return
            raise
        sock = socket.socket(self._family, socket.SOCK_STREAM, 0, fd)
        if not self.limits.admit(address[0]):
            log.debug("refused %s: too many connections with incomplete heads", address[0])
            sock.close()
            return
        sock.setblocking(False)
        conn = Connection(sock, address[0], now)
        self.limits.head_started(conn, now)  # a new connection owes a request head
        self._connections[conn.fd] = conn
        epoll.register(conn.fd, select.EPOLLIN)
        self._accepted += 1

    def _close(self, conn: Connection) -> None:
        if self._connections.pop(conn.fd, None) is None:
            return
        self.limits.head_done(conn, conn.last_active)
        if conn.resource is not None:
            conn.resource.close()
            conn.resource = None
        conn.sock.close()  # which also takes it out of the epoll set (never dup'ed)
        if not self._accepting and len(self._connections) < self.max_connections:
            self._epoll.modify(self._listener.fileno(), select.EPOLLIN)
            self._accepting = True

    def _close_all(self) -> None:
        for conn in list(self._connections.values()):
            self._close(conn)
        if self._epoll is not None:
            self._epoll.close()

    def _sweep(self, now: float) -> None:
        """Drop connections whose request head is past its deadline, idle (or stalled
        mid-response) longer than the idle timeout, or half-closed ones whose client
        never closed its side; with new clients waiting for a slot, free one."""
        expired = self.limits.expired
        for conn in list(self._connections.values()):
            if expired(conn, now):
                log.debug("closing %s's connection: %s", conn.peer,
                          "request head too slow" if conn.half_open else "idle")
                self._close(conn)
        if not self._accepting:
            victim = self.limits.victim(self._connections.values(), now)
            if victim is not None:
                self._close(victim)  # re-enables accepting

    # -- one connection --------------------------------------------------------------------

    def _read(self, conn: Connection) -> None:
        """Read from ``conn`` and answer what it asked. The common case, ostree asking
        for an object (one whole plain GET head in one read, see parse_plain_get, for a
        small file that the socket takes at once, the connection staying open), is
        answered right here, in few interpreter steps (it runs for nearly every request):
        one writev of the head and the file's bytes. Anything else goes the general way."""
        try:
            # os.read, os.writev: the socket methods' syscalls in fewer interpreter steps.
            data = os.read(conn.fd, 65536)
        except BlockingIOError:
            return
        plain = None if conn.inbuf or conn.draining else parse_plain_get(data)
        if plain is None:
            self._read_general(conn, data)
            return
        target, close = plain
        if conn.half_open:  # the first request of a new connection
            self.limits.head_done(conn, conn.last_active)
        relpath = target[1:]
        body = self._tree_read(relpath)
        if close or type(body) is not memoryview:
            self._respond(conn, "GET", target, relpath, close, None, body)
            self._write(conn)
            return
        size = len(body)
        header = self._dates.ok_heads[relpath.startswith(IMMUTABLE_DIRS)] % size
        try:
            sent = os.writev(conn.fd, (header, body))
        except BlockingIOError:
            sent = 0
        if sent < len(header) + size:
            # The socket is full. The body may be a view of the tree's reused read
            # buffer: keep the unsent rest as bytes of our own, sent when it drains.
            conn.header = (header + body)[sent:]
            conn.body = conn.resource = None
            conn.left = 0
            conn.close_after = False
            conn.log_entry = (conn.peer, "GET", target, 200, size)
            self._want_write(conn)
            return
        self._log((conn.peer, "GET", target, 200, size))
        conn.head_since = conn.last_active  # idle from now

    def _read_general(self, conn: Connection, data: bytes) -> None:
        if not data:
            self._close(conn)
            return
        if conn.draining:  # half-closed by us: discard what the client still sends
            return
        if not conn.half_open:  # the first bytes of a new request: its head's deadline
            self.limits.head_started(conn, conn.last_active)
        conn.inbuf += data
        self._process(conn)

    def _process(self, conn: Connection) -> None:
        """Answer the complete requests buffered on ``conn``, in order, one at a time."""
        connections = self._connections
        while connections.get(conn.fd) is conn and not conn.writing and not conn.draining:
            inbuf = conn.inbuf
            end, rest = find_head_end(inbuf)
            if end > MAX_HEADER_BYTES or (end < 0 and len(inbuf) > MAX_HEADER_BYTES):
                conn.inbuf = b""
                self.limits.head_done(conn, conn.last_active)
                self._prepare_error(conn, "-", "-", 431, close=True)
                self._write(conn)
                return
            if end < 0:
                return
            head = inbuf[:end].strip(b"\r\n")
            conn.inbuf = inbuf[rest:]
            if not head:  # stray CRLFs between requests are allowed; skip them
                continue
            self.limits.head_done(conn, conn.last_active)
            self._prepare(conn, head)
            self._write(conn)

    def _write(self, conn: Connection) -> None:
        """Send what is left of the current response; when the socket is full, wait for
        EPOLLOUT. A finished response is logged, then the connection reads again."""
        sock = conn.sock
        body = conn.body
        if body is not None:
            # A small body: header and body in one writev, no copy in Python.
            header = conn.header
            try:
                sent = os.writev(conn.fd, (header, body))
            except BlockingIOError:
                sent = 0
            conn.body = None
            if sent < len(header) + len(body):
                # The socket is full. The body may be a view of the tree's reused read
                # buffer: keep the unsent rest as bytes of our own, sent when it drains.
                conn.header = (header + body)[sent:]
            else:
                conn.header = b""
        if conn.header:
            try:
                sent = sock.send(conn.header, socket.MSG_MORE if conn.left else 0)
            except BlockingIOError:
                sent = 0
            conn.header = conn.header[sent:]
            if conn.header:
                self._want_write(conn)
                return
        if conn.left:
            out_fd = conn.fd
            in_fd = conn.resource.fd
            while conn.left:
                try:
                    sent = os.sendfile(out_fd, in_fd, conn.offset, conn.left)
                except BlockingIOError:
                    self._want_write(conn)
                    return
                if sent == 0:  # the file shrank under us: the response cannot be completed
                    raise OSError(errno.EIO, "file shorter than announced")
                conn.offset += sent
                conn.left -= sent
        self._finish(conn)

    def _want_write(self, conn: Connection) -> None:
        if not conn.writing:
            conn.writing = True
            self._epoll.modify(conn.fd, select.EPOLLOUT)

    def _finish(self, conn: Connection) -> None:
        if conn.resource is not None:
            conn.resource.close()
            conn.resource = None
        self._log(conn.log_entry)
        if conn.close_after:
            # Half-close and read what the client still sends: closing with unread
            # bytes would send a reset, which can destroy the response in flight.
            conn.draining = True
            conn.sock.shutdown(socket.SHUT_WR)
            if conn.writing:
                conn.writing = False
                self._epoll.modify(conn.fd, select.EPOLLIN)
            return
        conn.head_since = conn.last_active  # idle from now, unless more is buffered
        if conn.inbuf:  # pipelined bytes of the next request: its head is under way
            self.limits.head_started(conn, conn.last_active)
        if conn.writing:
            conn.writing = False
            self._epoll.modify(conn.fd, select.EPOLLIN)
            if conn.inbuf:  # pipelined requests that arrived while we were writing
                self._process(conn)

    # -- building responses ----------------------------------------------------------------

    def _prepare(self, conn: Connection, head: bytes) -> None:
        """Parse one request and set ``conn`` up to send its response."""
        try:
            request = parse_head(head)
        except BadRequest as exc:
            self._prepare_error(conn, "-", "-", exc.status, close=True)
            return
        # A request body we do not read would be parsed as the next request: close.
        close = request.close or request.has_body
        method = request.method
        if method != "GET" and method != "HEAD":
            self._prepare_error(conn, method, request.target, 405, close=close)
            return
        relpath = request_relpath(request.target)
        body = self._tree_read(relpath) if relpath is not None else None
        self._respond(
            conn, method, request.target, relpath, close,
            None if request.if_range else request.range, body,
        )  # fmt: skip

    def _respond(
        self,
        conn: Connection,
        method: str,
        target: str,
        relpath: str | None,
        close: bool,
        range_spec: bytes | None,
        body: Body | None,
    ) -> None:
        """Set ``conn`` up to answer a GET or HEAD of ``relpath``; ``body``: what the
        tree's read gave for it (None: not served, or ``relpath`` refused: a 404)."""
        if body is None:
            self._prepare_error(conn, method, target, 404, close=close)
            return
        if type(body) is memoryview:
            size = count = len(body)
            resource = None
        else:
            resource = body
            size = count = resource.size
        status = 200
        extra = b""
        if range_spec is not None:
            wanted = parse_range(range_spec, size)
            if wanted is False:
                if resource is not None:
                    resource.close()
                extra = b"Content-Range: bytes */%d\r\n" % size
                self._prepare_error(conn, method, target, 416, close=close, extra=extra)
                return
            if wanted:
                start, end = wanted
                status = 206
                count = end - start + 1
                extra = b"Content-Range: bytes %d-%d/%d\r\n" % (start, end, size)
                if resource is None:
                    body = body[start : end + 1]
                else:
                    resource.offset += start
        conn.header = ok_header(
            status, self._dates.get(), count, relpath.startswith(IMMUTABLE_DIRS), extra, close
        )
        if method == "HEAD" or count == 0:
            if resource is not None:
                resource.close()
            conn.body = conn.resource = None
            conn.left = 0
            count = 0
        elif resource is None:
            conn.body = body
        else:
            conn.resource = resource
            conn.offset = resource.offset
            conn.left = count
        conn.close_after = close
        conn.log_entry = (conn.peer, method, target, status, count)

    def _prepare_error(
        self,
        conn: Connection,
        method: str,
        target: str,
        status: int,
        *,
        close: bool,
        extra: bytes = b"",
    ) -> None:
        """Set ``conn`` up to send an error response (``method`` "-" for a head that
        could not be parsed)."""
        conn.header = error_response(
            status, self._dates.get(), extra, close=close, head_only=method == "HEAD"
        )
        conn.body = conn.resource = None
        conn.left = 0
        conn.close_after = close
        conn.log_entry = (conn.peer, method, target, status, 0)
