# SPDX-License-Identifier: GPL-2.0-or-later
"""A small, fast static web server for OSTree archive-mode repos (DESIGN section 6).

It serves one tree of files, either a repo directory (:class:`DirectoryTree`) or the
``srv/repo/`` of an OCI archive's content layer read straight from the tar
(:class:`ArchiveTree`), to ``ostree pull`` and friends: GET, HEAD and single byte ranges,
HTTP/1.1 keep-alive, long cache lifetimes for content-addressed objects and deltas.

Using it in-process (tests, tools)::

    from koji_hostimage.server import ArchiveTree, DirectoryTree, HostImageServer

    with DirectoryTree("/path/to/repo") as tree, HostImageServer(tree, port=0) as server:
        # HostImageServer binds in __init__; entering the `with` calls start(), which
        # serves from a background thread; leaving it calls stop().
        url = server.url  # "http://127.0.0.1:PORT/"
        ...  # ostree remote add --no-gpg-verify r URL; ostree pull r REF
        print(server.stats())  # requests and body bytes served so far

``port=0`` picks a free port (read it back from ``server.port``). ``serve_forever()``
serves in the calling thread instead of ``start()`` (what ``koji-hostimage serve`` does).

Why not :mod:`http.server`: it took 2.0x nginx's time for a full ``ostree pull``. This
one keeps per-request Python work small: one epoll event loop for all connections (no
thread or interpreter-lock handoffs per request), a hand-written parser for the few
request headers that matter, paths checked once and cached, the archive indexed once,
bodies sent with ``os.sendfile`` (zero-copy) from the repo file or from the archive's
file descriptor at the member's offset, and the request log written in batches.
``bench/bench_pull.py`` measures it against nginx.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import re
import select
import socket
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from resource import RLIM_INFINITY, RLIMIT_NOFILE, getrlimit
from typing import Protocol
from urllib.parse import unquote

from koji_hostimage.errors import ArchiveError, HostImageError
from koji_hostimage.image.oci import ContentMember, OciArchive, normalize_member_name

log = logging.getLogger(__name__)
# One line per request: "PEER METHOD TARGET STATUS BODY-BYTES" (see AccessLog), on a
# logger of its own at INFO: in-process users filter records by its name, which stays put
# when the code moves between modules.
ACCESS_LOGGER = "koji_hostimage.serve.access"
access_log = logging.getLogger(ACCESS_LOGGER)

IMMUTABLE = b"public, max-age=31536000, immutable"
NO_CACHE = b"no-cache"
# Content-addressed files never change under the same name; everything else can.
_IMMUTABLE_TOPS = frozenset({"objects", "deltas", "delta-indexes"})

MAX_HEADER_BYTES = 16384
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_IDLE_TIMEOUT = 30.0
_MAX_SYMLINK_HOPS = 40


class ServerError(HostImageError):
    """The server could not start: bad tree, address in use, ..."""


@dataclass(slots=True)
class Resource:
    """One file to send: ``size`` bytes from ``offset`` of the open file ``fd``."""

    fd: int
    offset: int
    size: int
    owned: bool  # True: the caller closes ``fd`` after sending

    def close(self) -> None:
        if self.owned:
            os.close(self.fd)


class Tree(Protocol):
    """What the server serves from. ``relpath`` is already split-checked: no empty,
    ``.`` or ``..`` components, no NUL or backslash; the tree still refuses symlink escapes.
    """

    def lookup(self, relpath: str) -> Resource | None: ...


class DirectoryTree:
    """Serve the regular files below ``root`` (a repo directory).

    Each request opens the file (so a rewritten ``summary`` is seen at once); parent
    directories are checked once (resolved, inside the root) and remembered. Symlinks are
    followed only when their target stays inside the root.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ServerError(f"{self.root}: expected a repo directory")
        self._root_real = os.path.realpath(self.root)
        self._root_prefix = self._root_real.rstrip("/") + "/"
        self._good_dirs: set[str] = {""}

    def close(self) -> None:
        """Nothing to release; here so both trees can be used the same way."""

    def __enter__(self) -> DirectoryTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _inside(self, real: str) -> bool:
        return real == self._root_real or real.startswith(self._root_prefix)

    def _dir_ok(self, reldir: str) -> bool:
        if reldir in self._good_dirs:
            return True
        real = os.path.realpath(os.path.join(self._root_real, reldir))
        if not (self._inside(real) and os.path.isdir(real)):
            return False
        if len(self._good_dirs) > 100_000:  # bound memory on trees with many dirs
            self._good_dirs.clear()
        self._good_dirs.add(reldir)
        return True

    def lookup(self, relpath: str) -> Resource | None:
        reldir = relpath.rpartition("/")[0]
        if not self._dir_ok(reldir):
            return None
        path = self._root_prefix + relpath
        # O_NOFOLLOW: a symlink is resolved and checked below instead of followed blindly;
        # O_NONBLOCK: opening a FIFO must not hang the thread (it is refused right after).
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                return None
            real = os.path.realpath(path)
            if not self._inside(real):
                log.warning("refused %s: symlink points out of %s", relpath, self.root)
                return None
            try:
                fd = os.open(real, flags)
            except OSError:
                return None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return Resource(fd, 0, st.st_size, owned=True)


class ArchiveTree:
    """Serve ``srv/repo/`` from an OCI archive's last (content) layer without unpacking.

    The archive is indexed once at start with :class:`koji_hostimage.oci.OciArchive`
    (which finds the content layer through index.json and the manifest and gives each
    file's absolute offset in the archive); requests are answered with ``os.sendfile``
    from one shared descriptor at those offsets (the file position is never used, so
    concurrent responses cannot disturb each other).
    """

    def __init__(self, path: Path | str, prefix: str = "srv/repo"):
        self.path = Path(path)
        if not self.path.is_file():
            raise ServerError(f"{self.path}: expected an OCI archive file")
        self.prefix = prefix.strip("/")
        started = time.monotonic()
        with OciArchive(self.path) as archive:
            self.layer = archive.uncompressed_content_layer()
            self._files, self._symlinks = _served_tree(
                archive.iter_content_members(), self.prefix
            )
        if not self._files:  # symlinks alone can only lead to files under the prefix
            raise ArchiveError(
                f"{self.path}: the content layer {self.layer.digest} has no files under "
                f"{self.prefix}/"
            )
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        log.debug(
            "indexed %d files of %s (layer %s) in %.2f s",
            len(self._files),
            self.path,
            self.layer.digest,
            time.monotonic() - started,
        )

    def __len__(self) -> int:
        return len(self._files)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ArchiveTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lookup(self, relpath: str) -> Resource | None:
        entry = self._files.get(relpath)
        if entry is None and self._symlinks:
            entry = self._resolve_through_symlinks(relpath)
        if entry is None:
            return None
        return Resource(self._fd, entry[0], entry[1], owned=False)

    def _resolve_through_symlinks(self, relpath: str) -> tuple[int, int] | None:
        """Resolve symlinks inside the layer as the container would see them; the result
        must be a file under the prefix (a link pointing anywhere else is refused)."""
        pending = [*self.prefix.split("/"), *relpath.split("/")]
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/".join([*resolved, part])
            target = self._symlinks.get(candidate)
            if target is None:
                resolved.append(part)
                continue
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                return None
            if target.startswith("/"):
                resolved = []  # absolute links point from the container's root
            pending[:0] = target.split("/")
        full = "/".join(resolved)
        root = self.prefix + "/"
        if not full.startswith(root):
            log.warning("refused %s: symlink points out of /%s", relpath, self.prefix)
            return None
        return self._files.get(full[len(root) :])


def _served_tree(
    members: Iterable[ContentMember], prefix: str
) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """What an archive serves: ``(files, symlinks)``.

    ``files`` maps paths relative to ``prefix`` to ``(offset, size)`` in the archive, hard
    links resolved to their target's data; ``symlinks`` maps layer paths (not relative)
    to link targets, for :meth:`ArchiveTree._resolve_through_symlinks`. As when a tar is
    unpacked, a later member replaces an earlier one of the same name.
    """
    root = prefix + "/"
    cut = len(root)
    by_name: dict[str, tuple[int, int]] = {}  # every file of the layer, for hard links
    files: dict[str, tuple[int, int]] = {}
    symlinks: dict[str, str] = {}
    for member in members:
        name = member.name
        kind = member.kind
        if kind == "file":
            entry = (member.offset, member.size)
        elif kind == "hardlink":
            # A hard link shares the data of an earlier member (named by its full path).
            target = by_name.get(normalize_member_name(member.linkname))
            if target is None:
                continue
            entry = target
        else:
            if kind == "symlink":
                symlinks[name] = member.linkname
            by_name.pop(name, None)
            if name.startswith(root):
                files.pop(name[cut:], None)
            continue
        if symlinks:
            symlinks.pop(name, None)
        by_name[name] = entry
        if name.startswith(root):
            files[name[cut:]] = entry
    return files, symlinks


def open_tree(path: Path | str) -> DirectoryTree | ArchiveTree:
    """A directory is served as a repo; a file must be an OCI archive."""
    path = Path(path)
    if path.is_dir():
        return DirectoryTree(path)
    if path.is_file():
        return ArchiveTree(path)
    raise ServerError(f"{path}: expected a repo directory or an OCI archive (.tar), not found")


@dataclass(frozen=True)
class ServerStats:
    requests: int
    body_bytes: int
    connections: int


class _Request:
    __slots__ = ("method", "target", "version", "range", "if_range", "close", "has_body")

    def __init__(self) -> None:
        self.range: bytes | None = None
        self.if_range = False
        self.close = False
        self.has_body = False


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


_REASONS = {
    200: "OK",
    206: "Partial Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    505: "HTTP Version Not Supported",
}


def _header_value(headers: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (``b"\\r\\nname:"``) in the lower-cased header block."""
    at = headers.find(name)
    if at < 0:
        return None
    start = at + len(name)
    stop = headers.find(b"\r\n", start)
    return headers[start : stop if stop >= 0 else len(headers)].strip()


def _parse_head(head: bytes) -> _Request:
    """Parse a request line and the few headers that matter to a static server.

    Headers are found by searching the lower-cased block for ``CRLF name:`` rather than
    by splitting every line: ostree sends a handful of headers we ignore, and this keeps
    the per-request work in C.
    """
    line_end = head.find(b"\r\n")
    if line_end < 0:
        line_end = len(head)
    parts = head[:line_end].split(b" ")
    if len(parts) != 3:
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    if not version.startswith(b"HTTP/1."):
        raise _BadRequest(505 if version.startswith(b"HTTP/") else 400, "bad HTTP version")
    request = _Request()
    request.method = method.decode("ascii", "replace")
    request.target = target.decode("latin-1")
    request.version = version
    headers = head[line_end:].lower()
    if b"\r\nrange:" in headers:
        # Range values are case-insensitive in the unit only ("bytes"); digits have no case.
        request.range = _header_value(headers, b"\r\nrange:")
    request.if_range = b"\r\nif-range:" in headers
    length = _header_value(headers, b"\r\ncontent-length:")
    request.has_body = b"\r\ntransfer-encoding:" in headers or (
        length is not None and length != b"0"
    )
    connection = _header_value(headers, b"\r\nconnection:") or b""
    if version == b"HTTP/1.0":
        request.close = b"keep-alive" not in connection
    else:
        request.close = b"close" in connection
    return request


# The shape of every path ostree asks for (objects, deltas, refs, summary, config):
# segments of plain characters, none starting with a dot, so none can be "." or "..".
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*)+")


def request_relpath(target: str) -> str | None:
    """Map a request target to a path relative to the tree, or None to refuse it.

    Refused: anything with ``.``/``..``/empty components (also when percent-encoded),
    encoded slashes, backslashes, NUL or other control characters.
    """
    if _PLAIN_PATH.fullmatch(target):  # fast path: nothing to decode or to refuse
        return target[1:]
    if target.startswith(("http://", "https://")):  # absolute-form (RFC 9112 3.2.2)
        slash = target.find("/", target.find("//") + 2)
        target = target[slash:] if slash >= 0 else "/"
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        return None
    segments = path[1:].split("/")
    if "%" in path:
        try:
            segments = [unquote(s, errors="strict") for s in segments]
        except UnicodeDecodeError:
            return None
    for segment in segments:
        if segment in ("", ".", "..") or "/" in segment or "\\" in segment:
            return None
        if not segment.isprintable():  # NUL, CR, LF and other control characters
            return None
    return "/".join(segments)


def _parse_range(spec: bytes, size: int) -> tuple[int, int] | None | bool:
    """Parse a single ``bytes=`` range. Returns (start, end inclusive), None to ignore the
    header (serve the whole file: syntax we do not handle, or several ranges), or False
    when the range cannot be satisfied (416)."""
    if not spec.startswith(b"bytes=") or b"," in spec:
        return None
    first, sep, last = spec[6:].strip().partition(b"-")
    if not sep:
        return None
    try:
        if first:
            start = int(first)
            end = int(last) if last else max(start, size - 1)
            if start < 0 or end < start:
                return None
        else:
            suffix = int(last)
            if suffix < 0:
                return None
            if suffix == 0:
                return False
            start, end = max(0, size - suffix), size - 1
    except ValueError:
        return None
    if start >= size:
        return False
    return start, min(end, size - 1)


class _DateCache:
    """The Date header, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._value = formatdate(now, usegmt=True).encode("ascii")
            self._second = now
        return self._value


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


def _connection_limit_for_fds() -> int:
    """Connections we can hold with the open-file limit: each may need a socket and an
    open file (directory mode), and the process needs some descriptors of its own."""
    soft, _hard = getrlimit(RLIMIT_NOFILE)
    if soft == RLIM_INFINITY:
        return 1 << 20
    return max(1, (soft - 32) // 2)


class _Connection:
    """State of one client connection in the event loop."""

    __slots__ = (
        "sock",
        "fd",
        "peer",
        "inbuf",
        "header",
        "resource",
        "offset",
        "left",
        "sent",
        "close_after",
        "log_entry",
        "writing",
        "draining",
        "last_active",
    )

    def __init__(self, sock: socket.socket, peer: str, now: float):
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.inbuf = b""
        self.header = b""
        self.resource: Resource | None = None
        self.offset = 0
        self.left = 0
        self.sent = 0
        self.close_after = False
        self.log_entry: tuple[str, str, int] | None = None
        self.writing = False  # waiting for the socket to take more of a response
        self.draining = False  # half-closed by us, reading what the client still sends
        self.last_active = now


class HostImageServer:
    """HTTP/1.1 static server for one :class:`Tree`, on one event loop (epoll).

    The socket is bound in ``__init__`` (so ``port`` is known at once; ``port=0`` picks a
    free one). ``start()`` serves from a background thread and returns self;
    ``serve_forever()`` serves in the calling thread until ``stop()``. ``stop()`` closes
    the listener and every open connection.

    One thread serves every connection, nginx-style: non-blocking sockets, epoll, and
    ``os.sendfile`` that resumes when the socket drains. An earlier thread-per-connection
    version spent 15-25% more CPU per request with 8 clients at once (interpreter-lock
    handoffs and context switches); the per-request Python work is the same. A lookup
    is a dict hit (archive) or an open+fstat (directory), so it does not block the loop
    for long while the repo is in the page cache.
    """

    def __init__(
        self,
        tree: Tree,
        bind: str = "127.0.0.1",
        port: int = 8080,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ):
        self.tree = tree
        self.bind = bind
        self.idle_timeout = idle_timeout
        self.max_connections = max(1, min(max_connections, _connection_limit_for_fds()))
        self._listener = self._listen(bind, port)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._serving = threading.Lock()
        self._serving_thread: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        self._dates = _DateCache()
        self.access_log = AccessLog()
        self._connections: dict[int, _Connection] = {}
        self._epoll: select.epoll | None = None
        self._accepting = True
        self._requests = 0
        self._body_bytes = 0
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
        return listener

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.port}/"

    def stats(self) -> ServerStats:
        """Requests answered, body bytes sent and connections accepted so far."""
        return ServerStats(self._requests, self._body_bytes, self._accepted)

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
            self._serving.release()
            self.access_log.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: close the listener and every connection (waits up to ``timeout``
        for the serving thread)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
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
        next_sweep = time.monotonic() + 1.0
        while not self._stopping.is_set():
            events = epoll.poll(1.0)
            now = time.monotonic()
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
                next_sweep = now + 1.0

    def _accept(self, now: float) -> None:
        epoll = self._epoll
        for _ in range(64):  # a batch per wakeup; the rest wait for the next poll
            if len(self._connections) >= self.max_connections:
                # Leave further clients in the listen backlog until a connection ends.
                epoll.modify(self._listener.fileno(), 0)
                self._accepting = False
                return
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept: %s; dropping idle connections", exc)
                    self._sweep(now + self.idle_timeout / 2)
                    return
                raise
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock, address[0], now)
            self._connections[conn.fd] = conn
            epoll.register(conn.fd, select.EPOLLIN)
            self._accepted += 1

    def _close(self, conn: _Connection) -> None:
        if self._connections.pop(conn.fd, None) is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(conn.fd)
        if conn.resource is not None:
            conn.resource.close()
            conn.resource = None
        conn.sock.close()
        if not self._accepting and len(self._connections) < self.max_connections:
            self._epoll.modify(self._listener.fileno(), select.EPOLLIN)
            self._accepting = True

    def _close_all(self) -> None:
        for conn in list(self._connections.values()):
            self._close(conn)
        if self._epoll is not None:
            self._epoll.close()

    def _sweep(self, now: float) -> None:
        """Drop connections idle (or stalled mid-response) longer than the idle timeout,
        and half-closed ones whose client never closed its side."""
        for conn in list(self._connections.values()):
            limit = 2.0 if conn.draining else self.idle_timeout
            if now - conn.last_active > limit:
                self._close(conn)

    # -- one connection --------------------------------------------------------------------

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            self._close(conn)
            return
        if conn.draining:  # half-closed by us: discard what the client still sends
            return
        conn.inbuf += data
        self._process(conn)

    def _process(self, conn: _Connection) -> None:
        """Answer the complete requests buffered on ``conn``, in order, one at a time."""
        connections = self._connections
        while connections.get(conn.fd) is conn and not conn.writing and not conn.draining:
            inbuf = conn.inbuf
            end = inbuf.find(b"\r\n\r\n")
            if end > MAX_HEADER_BYTES or (end < 0 and len(inbuf) > MAX_HEADER_BYTES):
                conn.inbuf = b""
                self._prepare_error(conn, None, 431, close=True)
                self._write(conn)
                return
            if end < 0:
                return
            head = inbuf[:end].lstrip(b"\r\n")
            conn.inbuf = inbuf[end + 4 :]
            if not head:  # stray CRLFs between requests are allowed; skip them
                continue
            self._prepare(conn, head)
            self._write(conn)

    def _write(self, conn: _Connection) -> None:
        """Send what is left of the current response; when the socket is full, wait for
        EPOLLOUT. A finished response is logged, then the connection reads again."""
        sock = conn.sock
        if conn.header:
            try:
                n = sock.send(conn.header, socket.MSG_MORE if conn.left else 0)
            except BlockingIOError:
                n = 0
            conn.header = conn.header[n:]
            if conn.header:
                self._want_write(conn)
                return
        if conn.left:
            out_fd = conn.fd
            in_fd = conn.resource.fd
            while conn.left:
                try:
                    n = os.sendfile(out_fd, in_fd, conn.offset, conn.left)
                except BlockingIOError:
                    self._want_write(conn)
                    return
                if n == 0:  # the file shrank under us: the response cannot be completed
                    raise OSError(errno.EIO, "file shorter than announced")
                conn.offset += n
                conn.left -= n
                conn.sent += n
        self._finish(conn)

    def _want_write(self, conn: _Connection) -> None:
        if not conn.writing:
            conn.writing = True
            self._epoll.modify(conn.fd, select.EPOLLOUT)

    def _finish(self, conn: _Connection) -> None:
        if conn.resource is not None:
            conn.resource.close()
            conn.resource = None
        method, target, status = conn.log_entry
        self._requests += 1
        self._body_bytes += conn.sent
        self.access_log.add(conn.peer, method, target, status, conn.sent)
        if conn.close_after:
            # Half-close and read what the client still sends: closing with unread
            # bytes would send a reset, which can destroy the response in flight.
            conn.draining = True
            conn.sock.shutdown(socket.SHUT_WR)
            if conn.writing:
                conn.writing = False
                self._epoll.modify(conn.fd, select.EPOLLIN)
            return
        if conn.writing:
            conn.writing = False
            self._epoll.modify(conn.fd, select.EPOLLIN)
            if conn.inbuf:  # pipelined requests that arrived while we were writing
                self._process(conn)

    # -- building responses ----------------------------------------------------------------

    def _prepare(self, conn: _Connection, head: bytes) -> None:
        """Parse one request and set ``conn`` up to send its response."""
        try:
            request = _parse_head(head)
        except _BadRequest as exc:
            self._prepare_error(conn, None, exc.status, close=True)
            return
        # A request body we do not read would be parsed as the next request: close.
        close = request.close or request.has_body
        method = request.method
        if method != "GET" and method != "HEAD":
            self._prepare_error(conn, request, 405, close=close)
            return
        relpath = request_relpath(request.target)
        resource = self.tree.lookup(relpath) if relpath is not None else None
        if resource is None:
            self._prepare_error(conn, request, 404, close=close)
            return
        size = resource.size
        offset = resource.offset
        count = size
        status = 200
        extra = b""
        if request.range is not None and not request.if_range:
            wanted = _parse_range(request.range, size)
            if wanted is False:
                resource.close()
                extra = b"Content-Range: bytes */%d\r\n" % size
                self._prepare_error(conn, request, 416, close=close, extra=extra)
                return
            if wanted:
                start, end = wanted
                status = 206
                offset += start
                count = end - start + 1
                extra = b"Content-Range: bytes %d-%d/%d\r\n" % (start, end, size)
        cache = IMMUTABLE if relpath.partition("/")[0] in _IMMUTABLE_TOPS else NO_CACHE
        conn.header = (
            b"HTTP/1.1 %d %s\r\nServer: koji-hostimage\r\nDate: %s\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
            b"Accept-Ranges: bytes\r\nCache-Control: %s\r\n%s%s\r\n"
        ) % (
            status,
            b"OK" if status == 200 else b"Partial Content",
            self._dates.get(),
            count,
            cache,
            extra,
            b"Connection: close\r\n" if close else b"",
        )
        if method == "HEAD" or count == 0:
            resource.close()
            conn.resource = None
            conn.left = 0
        else:
            conn.resource = resource
            conn.offset = offset
            conn.left = count
        conn.sent = 0
        conn.close_after = close
        conn.log_entry = (method, request.target, status)

    def _prepare_error(
        self,
        conn: _Connection,
        request: _Request | None,
        status: int,
        *,
        close: bool,
        extra: bytes = b"",
    ) -> None:
        reason = _REASONS.get(status, "Error")
        body = f"{status} {reason}\n".encode("ascii")
        if status == 405:
            extra += b"Allow: GET, HEAD\r\n"
        header = (
            b"HTTP/1.1 %d %s\r\nServer: koji-hostimage\r\nDate: %s\r\n"
            b"Content-Type: text/plain\r\nContent-Length: %d\r\nCache-Control: no-cache\r\n"
            b"%s%s\r\n"
        ) % (
            status,
            reason.encode("ascii"),
            self._dates.get(),
            len(body),
            extra,
            b"Connection: close\r\n" if close else b"",
        )
        head_only = request is not None and request.method == "HEAD"
        conn.header = header if head_only else header + body
        conn.resource = None
        conn.left = 0
        conn.sent = 0
        conn.close_after = close
        if request is None:
            conn.log_entry = ("-", "-", status)
        else:
            conn.log_entry = (request.method, request.target, status)
