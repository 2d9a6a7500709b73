# SPDX-License-Identifier: GPL-2.0-or-later
"""The `koji-hostimage` command: the Koji-free driver of the host-image pipeline."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from koji_hostimage import __version__
from koji_hostimage.commands import COMMANDS
from koji_hostimage.errors import HostImageError

log = logging.getLogger("koji_hostimage")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="koji-hostimage",
        description="Build, serve, inspect and compare rpm-ostree host images "
        "(OSTree-repo container archives) without Koji.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"koji_hostimage.commands.{name}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args._run(args) or 0)
    except HostImageError as exc:
        log.error("koji-hostimage %s: error: %s", args.command, exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
