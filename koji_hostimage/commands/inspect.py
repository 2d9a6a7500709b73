# SPDX-License-Identifier: GPL-2.0-or-later
"""`koji-hostimage inspect ARCHIVE`: labels, commit, version, packages, layers, deltas."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from koji_hostimage.report.inspect import format_image, load_image

HELP = "show what a host image holds (archive or hostimage.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("archive", type=Path, metavar="ARCHIVE",
                        help="an .oci.tar host image, or a hostimage.json")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    info = load_image(args.archive)
    if args.json:
        sys.stdout.write(json.dumps(info.to_dict(), indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(format_image(info) + "\n")
    return 0
