# SPDX-License-Identifier: GPL-2.0-or-later
"""The static server's fast paths (issue 15): a plain ``GET`` parsed without the full
parser, small bodies sent with their head in one ``writev`` (read into a reused buffer
in directory mode, or kept in memory when asked for again; sliced from a mapping of the
archive in archive mode), larger ones with ``sendfile``, and sends that stop half-way
because the client reads slowly.

Every answer is checked byte for byte against the file, around the small/large border
(SMALL_BODY), with ranges and HEAD, in both modes, and the fast parser is checked
against the full one (:func:`parse_head`) on hand-picked and generated heads.
"""

from __future__ import annotations

import logging
import os
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_server import _add_bytes, _tar_bytes, make_oci_archive

from koji_hostimage.serve import sources
from koji_hostimage.serve.accesslog import AccessLog
from koji_hostimage.serve.http import (
    MAX_HEADER_BYTES,
    BadRequest,
    DateCache,
    ok_header,
    parse_head,
    parse_plain_get,
    request_relpath,
)
from koji_hostimage.serve.server import HostImageServer, ServerStats
from koji_hostimage.serve.sources import SMALL_BODY, ArchiveTree, DirectoryTree

IO_TIMEOUT = 20
SECRET = b"outside the root\n"

# name -> size; around the border between the writev and the sendfile paths
SIZES = {
    "objects/ab/small.filez": 3000,
    "objects/ab/one.dirmeta": 1,
    "objects/ab/edge.filez": SMALL_BODY,
    "objects/ab/over.filez": SMALL_BODY + 1,
    "objects/cd/big.filez": 3 * SMALL_BODY + 123,
    "deltas/xy/part0": 70_000,
    "summary": 4096,
    "config": 40,
    "empty": 0,
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A repo-like directory (files of SIZES, random bytes) and the files' contents."""
    base = tmp_path_factory.mktemp("fastpath")
    repo = base / "repo"
    contents = {}
    for name, size in SIZES.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        path.write_bytes(data)
        contents[name] = data
    return repo, contents


@pytest.fixture(scope="module", params=["directory", "archive"])
def server(
    request: pytest.FixtureRequest, files: tuple[Path, dict[str, bytes]]
) -> Iterator[HostImageServer]:
    repo, contents = files
    if request.param == "directory":
        tree = DirectoryTree(repo)
    else:
        layer = _tar_bytes(
            lambda tar: [_add_bytes(tar, f"srv/repo/{n}", d) for n, d in contents.items()]
        )
        tree = ArchiveTree(make_oci_archive(repo.parent / "fast.oci.tar", layer))
    with tree, HostImageServer(tree, "127.0.0.1", 0) as srv:
        yield srv


def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(IO_TIMEOUT)
    sock.connect(("127.0.0.1", port))
    return sock


class Responses:
    """Reads HTTP/1.1 responses (head, body) off a socket, bodies by Content-Length
    (HEAD: ``read(head_only=True)``)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def read(self, head_only: bool = False) -> tuple[bytes, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        length = 0 if head_only else int(re.search(rb"\nContent-Length: (\d+)", head).group(1))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return head, body


def status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def header(head: bytes, name: bytes) -> bytes | None:
    match = re.search(rb"\r\n" + name + rb": ([^\r]*)", head)
    return match.group(1) if match else None


def plain_get(path: str) -> bytes:
    """What libcurl (ostree) sends: the fast path's kind of head."""
    return (f"GET /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: libostree/2022.7\r\n"
            f"Accept: */*\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"
            ).encode()


# -- bodies: small (writev) and large (sendfile) -----------------------------------------


def stats_after(server: HostImageServer, requests: int) -> ServerStats:
    """The server's stats once ``requests`` requests are logged in all: the server logs a
    response after sending it, so the client can read it a moment before that."""
    deadline = time.monotonic() + IO_TIMEOUT
    while (stats := server.stats()).requests < requests and time.monotonic() < deadline:
        time.sleep(0.01)
    return stats


def test_every_size_is_served_byte_for_byte(server: HostImageServer, files):
    _repo, contents = files
    before = server.stats()
    with connect(server.port) as sock:
        responses = Responses(sock)
        for name, data in contents.items():
            sock.sendall(plain_get(name))
            head, body = responses.read()
            assert status(head) == 200, (name, head)
            assert header(head, b"Content-Length") == str(len(data)).encode(), name
            assert body == data, name
            immutable = name.startswith(("objects/", "deltas/"))
            assert header(head, b"Cache-Control") == (
                b"public, max-age=31536000, immutable" if immutable else b"no-cache"
            ), name
            assert header(head, b"Connection") is None  # kept alive
    after = stats_after(server, before.requests + len(contents))
    assert after.requests - before.requests == len(contents)
    assert after.body_bytes - before.body_bytes == sum(map(len, contents.values()))
    assert after.connections - before.connections == 1


def test_ranges_and_head_on_small_and_large_bodies(server: HostImageServer, files):
    _repo, contents = files
    with connect(server.port) as sock:
        responses = Responses(sock)
        for name in ("objects/ab/small.filez", "objects/ab/edge.filez",
                     "objects/ab/over.filez", "objects/cd/big.filez"):
            data = contents[name]
            size = len(data)
            wanted = {"bytes=0-0": (0, 0), "bytes=10-99": (10, 99), "bytes=-5": (size - 5,
                      size - 1), f"bytes={size - 1}-": (size - 1, size - 1),
                      f"bytes=100-{size * 2}": (100, size - 1)}
            for spec, (first, last) in wanted.items():
                sock.sendall(f"GET /{name} HTTP/1.1\r\nHost: x\r\nRange: {spec}\r\n\r\n".encode())
                head, body = responses.read()
                assert status(head) == 206, (name, spec)
                assert header(head, b"Content-Range") == f"bytes {first}-{last}/{size}".encode()
                assert body == data[first : last + 1], (name, spec)
            sock.sendall(f"GET /{name} HTTP/1.1\r\nRange: bytes={size}-\r\n\r\n".encode())
            head, _body = responses.read()
            assert status(head) == 416
            assert header(head, b"Content-Range") == f"bytes */{size}".encode()
            sock.sendall(f"HEAD /{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head, _ = responses.read(head_only=True)
            assert status(head) == 200
            assert header(head, b"Content-Length") == str(size).encode()
        # Had HEAD sent a body, this response would not start where it does.
        sock.sendall(plain_get("config"))
        head, body = responses.read()
        assert status(head) == 200 and body == contents["config"]


def test_fast_and_full_parser_give_the_same_response_head(server: HostImageServer, files):
    """A plain GET (fast path) and the same file asked with a query (full parser): the
    same head apart from the Date."""
    _repo, contents = files
    with connect(server.port) as sock:
        responses = Responses(sock)
        heads = []
        for target in ("/objects/ab/small.filez", "/objects/ab/small.filez?x=1",
                       "/summary", "/summary?x=1"):
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head, body = responses.read()
            assert body == contents[target[1:].partition("?")[0]]
            heads.append(re.sub(rb"\r\nDate: [^\r]*", b"", head))
    assert heads[0] == heads[1] and heads[2] == heads[3]
    assert heads[0] != heads[2]  # different length and cache policy


def test_connection_close_on_the_fast_path(server: HostImageServer, files):
    _repo, contents = files
    with connect(server.port) as sock:
        sock.sendall(b"GET /objects/ab/small.filez HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert header(head, b"Connection") == b"close"
    assert body == contents["objects/ab/small.filez"]


def test_date_header_follows_the_clock(server: HostImageServer):
    with connect(server.port) as sock:
        responses = Responses(sock)
        dates = []
        for _ in range(2):
            sock.sendall(plain_get("config"))
            head, _ = responses.read()
            dates.append(parsedate_to_datetime(header(head, b"Date").decode()).timestamp())
            time.sleep(1.2)
    assert dates[1] - dates[0] >= 1
    assert abs(dates[1] - time.time()) < 5


# -- a client that reads slowly: sends stop half-way and resume ---------------------------


def test_partial_sends_resume_when_the_client_reads(server: HostImageServer, files):
    """A client with a tiny receive buffer sends plain GETs one at a time (each arriving
    on its own, the fast path) without reading; the responses fill the socket (more
    than a loopback socket's send buffer of a few MB), the server keeps the unsent rest
    and sends it as the client drains, then reads the requests that queued meanwhile:
    every body whole and in order."""
    _repo, contents = files
    names = ["objects/ab/edge.filez", "objects/ab/small.filez"] * 30 + [
        "objects/ab/over.filez", "deltas/xy/part0", "objects/cd/big.filez"]
    with connect(server.port, rcvbuf=4096) as sock:
        for name in names:
            sock.sendall(plain_get(name))
            time.sleep(0.005)  # let the server take each head before the next arrives
        time.sleep(0.2)
        responses = Responses(sock)
        for name in names:
            head, body = responses.read()
            assert status(head) == 200, name
            assert body == contents[name], name


def test_partial_sends_of_pipelined_requests(server: HostImageServer, files):
    _repo, contents = files
    names = ["objects/ab/edge.filez", "objects/cd/big.filez", "objects/ab/small.filez"] * 12
    with connect(server.port, rcvbuf=4096) as sock:
        sock.sendall(b"".join(plain_get(name) for name in names))
        time.sleep(0.2)
        responses = Responses(sock)
        for name in names:
            head, body = responses.read()
            assert status(head) == 200 and body == contents[name], name


# -- directory mode: what is not a regular file inside the root --------------------------


@pytest.fixture
def dir_server(tmp_path: Path) -> Iterator[tuple[HostImageServer, Path]]:
    repo = tmp_path / "repo"
    (repo / "objects" / "ab").mkdir(parents=True)
    (repo / "config").write_bytes(b"[core]\n")
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "file").write_bytes(SECRET)
    with DirectoryTree(repo) as tree, HostImageServer(tree, "127.0.0.1", 0) as srv:
        yield srv, repo


def _status_of_plain_get(sock: socket.socket, path: str) -> tuple[int, bytes]:
    sock.sendall(plain_get(path))
    head, body = Responses(sock).read()
    return status(head), body


def test_fifo_is_refused_without_hanging(dir_server):
    server, repo = dir_server
    os.mkfifo(repo / "objects" / "ab" / "pipe.filez")
    started = time.monotonic()
    with connect(server.port) as sock:
        assert _status_of_plain_get(sock, "objects/ab/pipe.filez")[0] == 404  # no writer
        # A writer that holds the FIFO open but writes nothing: still no hang.
        writer = os.open(repo / "objects" / "ab" / "pipe.filez", os.O_RDWR | os.O_NONBLOCK)
        try:
            assert _status_of_plain_get(sock, "objects/ab/pipe.filez")[0] == 404
        finally:
            os.close(writer)
        assert _status_of_plain_get(sock, "objects/ab")[0] == 404  # a directory
        assert _status_of_plain_get(sock, "config") == (200, b"[core]\n")
    assert time.monotonic() - started < IO_TIMEOUT / 2


def test_symlinks_out_of_the_root_are_refused(dir_server):
    server, repo = dir_server
    links = {
        "objects/ab/abs.filez": repo.parent / "secret",
        "objects/ab/rel.filez": Path("../../../secret"),
        "objects/out": repo.parent / "outside",
    }
    for name, target in links.items():
        (repo / name).symlink_to(target)
    (repo / "objects" / "ab" / "in.filez").symlink_to("../../config")
    with connect(server.port) as sock:
        for path in ("objects/ab/abs.filez", "objects/ab/rel.filez", "objects/out/file"):
            code, body = _status_of_plain_get(sock, path)
            assert code == 404 and SECRET not in body, path
        assert _status_of_plain_get(sock, "objects/ab/in.filez") == (200, b"[core]\n")


def test_a_reused_read_buffer_is_not_sent_twice(dir_server):
    """Two clients, each stuck mid-response while the other is answered: what each gets
    is its own file (the unsent rest of a body read into the shared buffer was copied)."""
    server, repo = dir_server
    first, second = os.urandom(SMALL_BODY - 7), os.urandom(SMALL_BODY - 9)
    (repo / "objects" / "ab" / "first.filez").write_bytes(first)
    (repo / "objects" / "ab" / "second.filez").write_bytes(second)
    results: dict[str, list[bytes]] = {}

    def client(name: str) -> None:
        with connect(server.port, rcvbuf=4096) as sock:
            for _ in range(40):  # over the few MB a loopback socket buffers
                sock.sendall(plain_get(f"objects/ab/{name}.filez"))
                time.sleep(0.005)
            time.sleep(0.2)
            responses = Responses(sock)
            results[name] = [responses.read()[1] for _ in range(40)]

    threads = [threading.Thread(target=client, args=(n,)) for n in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(IO_TIMEOUT)
    assert results == {"first": [first] * 40, "second": [second] * 40}


def test_objects_asked_again_and_a_rewritten_summary(dir_server, monkeypatch):
    """Content-addressed files asked for several times are kept in memory (a small
    CACHE_BYTES here, so the oldest are dropped and read again): the same bytes every
    time; a summary rewritten between requests is served new at once."""
    monkeypatch.setattr(sources, "CACHE_BYTES", 10_000)
    server, repo = dir_server
    objects = {f"objects/ab/o{i}.filez": os.urandom(3000 + i) for i in range(10)}
    for name, data in objects.items():
        (repo / name).write_bytes(data)
    with connect(server.port) as sock:
        for round_number in range(4):
            summary = f"summary {round_number}\n".encode() * (round_number + 1)
            (repo / "summary").write_bytes(summary)
            assert _status_of_plain_get(sock, "summary") == (200, summary)
            for name, data in objects.items():
                assert _status_of_plain_get(sock, name) == (200, data), (round_number, name)


def test_objects_asked_again_only_much_later_are_not_kept(tmp_path, monkeypatch):
    """An object asked for again within RECENT_REQUESTS requests for other objects is
    kept (a rewrite on disk is no longer seen: objects never change under their name);
    one asked for again only after more than twice that many is read again."""
    monkeypatch.setattr(sources, "RECENT_REQUESTS", 4)
    repo = tmp_path / "repo"
    (repo / "objects" / "ab").mkdir(parents=True)
    names = [f"objects/ab/o{i}.filez" for i in range(12)]
    for name in names:
        (repo / name).write_bytes(b"old " + name.encode())
    with sources.DirectoryTree(repo) as tree:

        def read(name: str) -> bytes:
            return bytes(tree.read(name))

        read(names[0])
        read(names[1])
        read(names[0])  # again, soon: kept
        for name in names[2:11]:  # nine others: two windows go by
            read(name)
        read(names[1])  # again, much later: not kept
        for name in names[:2]:
            (repo / name).write_bytes(b"new")
        assert read(names[0]) == b"old " + names[0].encode()
        assert read(names[1]) == b"new"


# -- the fast parser against the full one ------------------------------------------------


# (head, whether the fast path takes it); the rest are left to the full parser.
HEADS = [
    (plain_get("objects/ab/cd.filez"), True),
    (b"GET /config HTTP/1.1\r\n\r\n", True),
    (b"GET /config HTTP/1.1\r\nConnection: close\r\n\r\n", True),
    (b"GET /config HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n", True),
    (b"GET /config HTTP/1.1\r\nContent-Length: 5\r\n\r\n", True),  # answered, closed
    (b"GET /config HTTP/1.1\r\nContent-Length: 0\r\n\r\n", True),
    (b"GET /config HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", True),
    (b"GET /config HTTP/1.1\r\nIf-Range: x\r\n\r\n", True),  # ignored without Range
    (b"GET /config HTTP/1.1\r\nX: a\tb\r\n\r\n", True),
    (b"GET /config HTTP/1.1\r\nContent-Length: x\r\n\r\n", False),
    (b"GET /config HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", False),
    (b"GET /config HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n", False),
    (b"GET /config HTTP/1.0\r\n\r\n", False),
    (b"GET /config HTTP/1.1\nHost: x\n\n", False),
    (b"GET /config HTTP/1.1\r\nHost: x\rEvil: 1\r\n\r\n", False),
    (b"GET /config HTTP/1.1\r\nHost : x\r\n\r\n", False),
    (b"GET /config HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", False),
    (b"GET /config HTTP/1.1\r\nX: \x00\r\n\r\n", False),
    (b"GET /config?x=1 HTTP/1.1\r\n\r\n", False),
    (b"GET /objects/ HTTP/1.1\r\n\r\n", False),
    (b"GET /.hidden HTTP/1.1\r\n\r\n", False),
    (b"GET /a/../b HTTP/1.1\r\n\r\n", False),
    (b"GET /a%2fb HTTP/1.1\r\n\r\n", False),
    (b"GET //a HTTP/1.1\r\n\r\n", False),
    (b"GET  /config HTTP/1.1\r\n\r\n", False),
    (b"GET /config  HTTP/1.1\r\n\r\n", False),
    (b"GET /config HTTP/1.1 \r\n\r\n", False),
    (b"get /config HTTP/1.1\r\n\r\n", False),
    (b"HEAD /config HTTP/1.1\r\n\r\n", False),
    (b"GET /config HTTP/2.0\r\n\r\n", False),
    (b"GET /config HTTP/1.1\r\nHost: x\r\n\r\nGET /summary HTTP/1.1\r\n\r\n", False),
    (b"GET /config HTTP/1.1\r\nHost: x\n\r\nGET /summary HTTP/1.1\r\n\r\n", False),
    (b"GET /config HTTP/1.1\r\nHost: x\n\nGET /summary HTTP/1.1\r\n\r\n", False),
    (b"GET /config HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n", False),
]


def full_parse(buffer: bytes) -> tuple[str, str, str | None, bool, bool, int] | int:
    """What the server's general path makes of the first head in ``buffer``: (method,
    target, tree path, close, whether a range applies, bytes from the head's end to the
    buffer's) or the error status."""
    end = min(i for i in (buffer.find(b"\n\r\n"), buffer.find(b"\n\n")) if i >= 0)
    try:
        request = parse_head(buffer[:end].strip(b"\r\n"))
    except BadRequest as exc:
        return exc.status
    range_used = request.range is not None and not request.if_range
    return (request.method, request.target, request_relpath(request.target),
            request.close or request.has_body, range_used, len(buffer) - end)


def check_agrees(buffer: bytes) -> bool:
    """parse_plain_get never answers otherwise than the general path; True when it
    answered (took the fast path)."""
    fast = parse_plain_get(buffer)
    if fast is None:
        return False
    target, close = fast
    full = full_parse(buffer)
    # The whole buffer was one head (nothing pipelined after it), the full parser
    # accepts it as the same plain GET, no range, the same connection handling.
    assert full == ("GET", target, target[1:], close, False, 3), buffer
    return True


def test_fast_path_heads_are_the_general_paths_heads():
    """The fast path's head templates (made once a second) give, for every length, the
    same head as the general path's ok_header for a 200 on a connection kept open."""
    dates = DateCache()
    date = dates.get()
    for immutable in (False, True):
        for length in (0, 1, 9, 10, 4095, SMALL_BODY, 10**12):
            head = dates.ok_heads[immutable] % length
            assert head == ok_header(200, date, length, immutable, b"", False)


@pytest.mark.parametrize(("head", "fast"), HEADS)
def test_fast_parser_agrees_with_the_full_parser_on_known_heads(head: bytes, fast: bool):
    assert check_agrees(head) is fast
    assert check_agrees(head) is fast  # a second time: from the remembered header lines


_NAMES = st.sampled_from(["Host", "Connection", "Range", "If-Range", "Content-Length",
                          "Transfer-Encoding", "Accept", "X-A", "Host ", " X", "", "a:b"])
_VALUES = st.sampled_from(["x", "close", "keep-alive", "Upgrade, close", "0", "7", "-1",
                           "bytes=0-1", "", " ", "\t", "a\rb", "a\x00", "\x7f", "é"])
_TARGETS = st.sampled_from(["/config", "/objects/ab/cd.filez", "/a/../b", "/a?b", "/",
                            "//x", "/.x", "/a%2Fb", "/x y", "/a\\b", "/ä"])


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "get", "POST", "G T"]),
    target=_TARGETS,
    version=st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.x"]),
    lines=st.lists(st.tuples(_NAMES, _VALUES), max_size=4),
    line_end=st.sampled_from(["\r\n", "\n", "\r"]),
)
def test_fast_parser_agrees_with_the_full_parser(method, target, version, lines, line_end):
    head = f"{method} {target} {version}\r\n"
    head += "".join(f"{name}:{value}{line_end}" for name, value in lines) + "\r\n"
    if not head.endswith("\r\n\r\n"):
        head += "\r\n"
    check_agrees(head.encode("utf-8"))


def test_accepted_connections_do_not_delay_small_segments(server: HostImageServer):
    """TCP_NODELAY comes from the listener (inherited on accept, no setsockopt per
    connection): a response's last partial segment must not wait for a delayed ACK."""
    with connect(server.port) as sock:
        sock.sendall(plain_get("config"))
        Responses(sock).read()
        conns = list(server._connections.values())
        assert conns
        for conn in conns:
            assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_one_accept_per_readiness_event(tmp_path: Path):
    """With three connections waiting in the backlog, one _accept call takes exactly
    one (no loop until EAGAIN, which cost a failed syscall and an exception per
    connection); the listener stays readable for the others (level-triggered epoll)."""
    repo = tmp_path / "repo"
    (repo / "objects").mkdir(parents=True)
    (repo / "config").write_bytes(b"[core]\n")
    with DirectoryTree(repo) as tree:
        server = HostImageServer(tree, "127.0.0.1", 0)  # bound, not serving
        server._epoll = select.epoll()
        clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        try:
            ready = select.select([server._listener], [], [], IO_TIMEOUT)[0]
            assert ready, "no connection reached the backlog"
            server._accept(time.monotonic())
            assert len(server._connections) == 1
            for taken in (2, 3):  # the listener is reported again while others wait
                assert select.select([server._listener], [], [], IO_TIMEOUT)[0], taken
                server._accept(time.monotonic())
                assert len(server._connections) == taken
            assert not select.select([server._listener], [], [], 0)[0]
        finally:
            for client in clients:
                client.close()
            server._close_all()
            server.stop()


def test_a_burst_of_connections_is_answered_on_every_one(files):
    """Twenty-four clients (fewer than the per-client limit of connections without a
    request head) connect before any sends a request: with one accept per poll, the
    server must keep taking them from the backlog, and every request is answered."""
    repo, contents = files
    name, data = next((n, d) for n, d in contents.items() if len(d) < SMALL_BODY)
    with DirectoryTree(repo) as tree, HostImageServer(tree, "127.0.0.1", 0) as server:
        socks = [connect(server.port) for _ in range(24)]
        try:
            for sock in socks:
                sock.sendall(plain_get(name))
            for sock in socks:
                head, body = Responses(sock).read()
                assert (status(head), body) == (200, data)
        finally:
            for sock in socks:
                sock.close()
        assert server.stats().connections == 24


# -- the request log: batches written in the order they were taken ------------------------


class _HoldFirstRecord(logging.Filter):
    """A logger filter that holds the first record until ``unblock`` is set (a logger's
    filters run before any handler's lock is taken) and keeps every record's lines."""

    def __init__(self) -> None:
        super().__init__()
        self.unblock = threading.Event()
        self.entered = threading.Event()
        self.lines: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.entered.is_set():
            self.entered.set()
            self.unblock.wait(IO_TIMEOUT)
        self.lines.extend(record.getMessage().splitlines())
        return False  # kept here; no handler needed


def test_concurrent_flushes_keep_the_request_order():
    """The timer thread's flush and stop()'s flush can overlap: the batch taken first
    must be written first, or the log shows requests out of order."""
    logger = logging.getLogger("test.fastpath.accesslog")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    hold = _HoldFirstRecord()
    logger.addFilter(hold)
    try:
        access = AccessLog(logger)
        access.add("10.0.0.1", "GET", "/first", 200, 1)
        first = threading.Thread(target=access.flush)
        first.start()
        assert hold.entered.wait(IO_TIMEOUT)  # the first batch is being written
        access.add("10.0.0.1", "GET", "/second", 200, 2)
        second = threading.Thread(target=access.flush)
        second.start()
        time.sleep(0.3)  # time enough for the second flush to write, were it not held
        hold.unblock.set()
        first.join(IO_TIMEOUT)
        second.join(IO_TIMEOUT)
    finally:
        logger.removeFilter(hold)
    assert hold.lines == ["10.0.0.1 GET /first 200 1", "10.0.0.1 GET /second 200 2"]
    assert access.totals() == (2, 3)
