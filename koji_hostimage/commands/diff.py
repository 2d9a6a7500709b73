# SPDX-License-Identifier: GPL-2.0-or-later
"""`koji-hostimage diff A B`: packages added/removed/up-/downgraded, commits, sizes.

A and B are archives or hostimage.json files, or, with a Koji source (--koji PROFILE,
or --koji-hub and --koji-topurl), two Koji builds given by NVR.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from koji_hostimage.report import sources as manifest_sources
from koji_hostimage.report.inspect import diff_images, diff_koji_builds, format_diff

HELP = "compare two host images (archives, hostimage.json files, or Koji builds by NVR)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("old", metavar="A", help="the older build: a file, or an NVR")
    parser.add_argument("new", metavar="B", help="the newer build: a file, or an NVR")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    koji = parser.add_argument_group("Koji builds (A and B are NVRs)")
    koji.add_argument("--koji", metavar="PROFILE", help="koji profile (hub and topurl)")
    koji.add_argument("--koji-hub", metavar="URL", help="Koji hub URL")
    koji.add_argument("--koji-topurl", metavar="URL", help="Koji topurl (files)")
    koji.add_argument("--arch", help="which arch to compare (when the builds have several)")


def run(args: argparse.Namespace) -> int:
    if args.koji or args.koji_hub:
        session, topurl = manifest_sources.koji_session(args.koji, args.koji_hub,
                                                        args.koji_topurl)
        diff = diff_koji_builds(session, topurl, args.old, args.new, args.arch)
    else:
        diff = diff_images(Path(args.old), Path(args.new))
    if args.json:
        sys.stdout.write(json.dumps(diff.to_dict(), indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(format_diff(diff) + "\n")
    return 0
