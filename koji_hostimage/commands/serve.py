# SPDX-License-Identifier: GPL-2.0-or-later
"""`koji-hostimage serve PATH`: serve an OSTree repo over HTTP, from a directory or
straight from an OCI archive (without unpacking it)."""

from __future__ import annotations

import argparse
import logging
import signal
from types import FrameType

from koji_hostimage.serve.server import DEFAULT_MAX_CONNECTIONS, HostImageServer
from koji_hostimage.serve.sources import open_tree

HELP = "serve an OSTree repo (directory or OCI archive) over HTTP for ostree pull"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", metavar="PATH", help="an OCI archive (*.tar, served in place) or a repo directory"
    )
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    parser.add_argument(
        "--port", type=int, default=8080, help="port to listen on; 0 picks a free one [8080]"
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help=f"concurrent connections; more wait in the backlog [{DEFAULT_MAX_CONNECTIONS}]",
    )


def run(args: argparse.Namespace) -> int:
    with open_tree(args.path) as tree:
        server = HostImageServer(tree, args.bind, args.port, max_connections=args.max_connections)
        # Tests and scripts read this line to learn the port chosen by --port 0.
        log.info("serving %s on %s", args.path, server.url)

        def stop(signum: int, frame: FrameType | None) -> None:
            # SIGTERM (container stop) and Ctrl-C end the loop between two events, not in
            # the middle of one: every response sent is logged and the log is flushed
            # before serve_forever() returns.
            server.request_stop()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            server.serve_forever()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            server.stop()
        log.info("stopping")
    return 0
