# SPDX-License-Identifier: GPL-2.0-or-later
"""A plain static HTTP server on 127.0.0.1 (random port) that records every request.

Used by the export tests to watch what a real `ostree pull` asks for, independently of
the project's own server (koji_hostimage.serve), which has its own tests.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class RequestLog:
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: str) -> None:
        with self.lock:
            self.paths.append(path)


class _RecordingHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args, requests: RequestLog, **kwargs):
        self._requests = requests
        super().__init__(*args, **kwargs)

    def send_head(self):
        self._requests.add(self.path)
        return super().send_head()

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass


@contextmanager
def static_server(root: Path) -> Iterator[tuple[str, RequestLog]]:
    """Serve ``root``; yield (base URL, request log). Stopped on exit."""
    requests = RequestLog()
    handler = functools.partial(_RecordingHandler, directory=str(root), requests=requests)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
