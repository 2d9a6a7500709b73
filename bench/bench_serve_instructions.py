#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark: the server's own work per request, counted in instructions, not timed.

bench_pull.py times whole ostree pulls, and on a shared 2-core VM one server's CPU for
the same pull moves by 20-40% from run to run: a change worth a few percent cannot be
seen there. This counts the user-space instructions each server executes per request
under valgrind's callgrind, which varies by a few percent at most (with how many requests
one event-loop wakeup finds). Kernel work (the system calls) is not counted: the bare
server and ours in directory mode make the same ones per request (read the request,
open, read, close, send); ours in archive mode makes no file system calls at all.

Measured in the same run, on the same request stream and the same repo as bench_pull.py:

- ``bare``: the baseline, a 30-line epoll server in this file that does only what every
  static server must (recv, open, read, close, send: no path checks, no request log, no
  limits, no Date or cache headers). It is the floor for a server written in Python, not
  something to serve with: it opens whatever path it is sent.
- ``ours-directory`` and ``ours-archive``: ``koji-hostimage serve REPO`` and ``...
  ARCHIVE``, with the request log on.

The requests are the ones an ``ostree pull`` of the repo's commit makes for its objects,
sent the way ostree's libcurl sends them: 8 connections with one request outstanding on
each, every connection closed after 15 requests (ostree opened 1,036-1,760 connections
for one pull of these 20,206 objects), the same header lines on every request. Before
counting, every server answers one request in every objects/ directory (ours checks a
directory once, on first use) and the counted requests are for other objects (ours keeps
objects asked for twice in memory).

Prints instructions per request for each server and its ratio to ``bare``; no target.
Needs valgrind (``apt-get install valgrind``). About 15 seconds in all on the 2-core VM
(once the repo is built; bench_pull.py's cached one is reused).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_pull import CACHE, prepare  # noqa: E402

CONNECTIONS = 8
REQUESTS_PER_CONNECTION = 15
HEADER_LINES = b"Host: 127.0.0.1\r\nUser-Agent: libostree/2023.1\r\nAccept: */*\r\n\r\n"
STARTUP_TIMEOUT = 300.0


def bare_server(root: str, port: int) -> None:
    """The baseline: answer ``GET /path`` with the file's bytes, nothing else."""
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    listener.setblocking(False)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    epoll = select.epoll()
    epoll.register(listener.fileno(), select.EPOLLIN)
    connections: dict[int, socket.socket] = {}
    buffers = [bytearray(128 * 1024 + 1)]
    view = memoryview(buffers[0])
    while True:
        for fd, _mask in epoll.poll():
            if fd == listener.fileno():
                sock, _address = listener.accept()
                sock.setblocking(False)
                connections[sock.fileno()] = sock
                epoll.register(sock.fileno(), select.EPOLLIN)
                continue
            sock = connections[fd]
            data = sock.recv(65536)
            if not data:
                del connections[fd]
                sock.close()
                continue
            path = data.split(b" ", 2)[1][1:].decode()
            file_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=root_fd)
            size = os.readv(file_fd, buffers)
            os.close(file_fd)
            sock.sendmsg((b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size, view[:size]))


def replay(port: int, paths: Sequence[bytes]) -> None:
    """GET every path, ``CONNECTIONS`` connections at once, one request outstanding on
    each, each connection closed after ``REQUESTS_PER_CONNECTION`` requests."""
    pending = iter(paths)
    epoll = select.epoll()
    open_connections: dict[int, list] = {}  # fd: [socket, requests sent, bytes received]

    def send_next(state: list) -> None:
        path = next(pending, None)
        if path is None or state[1] == REQUESTS_PER_CONNECTION:
            epoll.unregister(state[0].fileno())
            del open_connections[state[0].fileno()]
            state[0].close()
            if path is not None:
                connect(path)
            return
        state[0].sendall(b"GET /%s HTTP/1.1\r\n%s" % (path, HEADER_LINES))
        state[1] += 1
        state[2] = b""

    def connect(first: bytes) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        state = [sock, 1, b""]
        open_connections[sock.fileno()] = state
        epoll.register(sock.fileno(), select.EPOLLIN)
        sock.sendall(b"GET /%s HTTP/1.1\r\n%s" % (first, HEADER_LINES))

    for _ in range(CONNECTIONS):
        first = next(pending, None)
        if first is not None:
            connect(first)
    while open_connections:
        for fd, _mask in epoll.poll():
            state = open_connections[fd]
            data = state[0].recv(1 << 20)
            if not data:
                raise RuntimeError("the server closed a connection")
            state[2] += data
            if _response_complete(state[2]):
                send_next(state)
    epoll.close()


def _response_complete(received: bytes) -> bool:
    end = received.find(b"\r\n\r\n")
    if end < 0:
        return False
    if not received.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"unexpected response: {received[:80]!r}")
    start = received.index(b"Content-Length: ") + len(b"Content-Length: ")
    length = int(received[start : received.index(b"\r\n", start)])
    return len(received) - end - 4 >= length


def object_paths(repo: Path) -> list[bytes]:
    objects = repo / "objects"
    return sorted(
        os.path.relpath(os.path.join(directory, name), repo).encode()
        for directory, _dirs, names in os.walk(objects)
        for name in names
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def under_callgrind(argv: list[str], port: int, out: Path) -> Iterator[int]:
    """Run ``argv`` under callgrind, counting nothing until told; yields its pid."""
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         *argv],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv} exited with {proc.returncode} during startup")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv} did not listen on {port}")
            time.sleep(0.2)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(60)


def _callgrind(pid: int, instrumentation: str) -> None:
    subprocess.run(["callgrind_control", "--instr=" + instrumentation, str(pid)],
                   check=True, capture_output=True)  # fmt: skip


def _total_instructions(out: Path) -> int:
    for line in out.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"{out}: no totals line")


def instructions_per_request(
    argv: list[str], port: int, warm: Sequence[bytes], counted: Sequence[bytes], tmp: Path
) -> float:
    out = tmp / f"callgrind.{port}"
    with under_callgrind(argv, port, out) as pid:
        replay(port, warm)
        _callgrind(pid, "on")
        replay(port, counted)
        _callgrind(pid, "off")
    return _total_instructions(out) / len(counted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20_000, help="files in the commit")
    parser.add_argument("--requests", type=int, default=4000, help="requests counted")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--bare-server", nargs=2, metavar=("ROOT", "PORT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.bare_server:
        bare_server(args.bare_server[0], int(args.bare_server[1]))
        return 0
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    repo, archive = prepare(args.cache, args.objects)
    paths = object_paths(repo)
    warm = paths[:: len(paths) // 1000 or 1]  # about 1,000 requests, in every directory
    warm_set = set(warm)
    counted = [path for path in paths if path not in warm_set][: args.requests]
    python = sys.executable
    serve = [python, "-m", "koji_hostimage.commands.main", "serve"]
    servers = {
        "bare": lambda port: [python, __file__, "--bare-server", str(repo), str(port)],
        "ours-directory": lambda port: [*serve, str(repo), "--port", str(port)],
        "ours-archive": lambda port: [*serve, str(archive), "--port", str(port)],
    }
    print(f"repo: {len(paths)} objects; {len(counted)} requests counted after {len(warm)} "
          f"warm-up requests; {CONNECTIONS} connections, {REQUESTS_PER_CONNECTION} "
          f"requests each; load average at start: {os.getloadavg()}", flush=True)  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as tmp:
        for name, argv in servers.items():
            port = _free_port()
            results[name] = instructions_per_request(argv(port), port, warm, counted, Path(tmp))
            print(f"  {name}: {results[name]:,.0f} instructions per request", flush=True)
    print(f"{'server':<16} {'instructions/request':>21} {'vs bare':>8}")
    for name, count in results.items():
        print(f"{name:<16} {count:>21,.0f} {count / results['bare']:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
