# SPDX-License-Identifier: GPL-2.0-or-later
"""`koji-hostimage diff A B`: packages added/removed/up-/downgraded, commits, sizes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..inspect import diff_images, format_diff

HELP = "compare two host images (archives or hostimage.json files)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("old", type=Path, metavar="A", help="the older build")
    parser.add_argument("new", type=Path, metavar="B", help="the newer build")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    diff = diff_images(args.old, args.new)
    if args.json:
        sys.stdout.write(json.dumps(diff.to_dict(), indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(format_diff(diff) + "\n")
    return 0
