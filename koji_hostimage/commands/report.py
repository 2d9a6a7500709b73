# SPDX-License-Identifier: GPL-2.0-or-later
"""`koji-hostimage report`: an HTML page and a JSON file over many host-image builds."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from koji_hostimage.errors import HostImageError
from koji_hostimage.report import sources as manifest_sources
from koji_hostimage.report.page import build_report, write_report

HELP = "write an HTML + JSON report of host-image builds (directory, compose or Koji)"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="directory for report.html and report.json")
    parser.add_argument("--dir", action="append", type=Path, default=[], metavar="DIR",
                        help="a directory of builds (*.hostimage.json, *.oci.tar); repeatable")
    parser.add_argument("--compose", action="append", type=Path, default=[], metavar="PATH",
                        help="a pungi compose directory or its images.json; repeatable")
    parser.add_argument("--koji-name", action="append", default=[], metavar="NAME",
                        help="builds of this package name on the Koji hub; repeatable")
    parser.add_argument("--koji", metavar="PROFILE", help="koji profile (hub and topurl)")
    parser.add_argument("--koji-hub", metavar="URL", help="Koji hub URL")
    parser.add_argument("--koji-topurl", metavar="URL", help="Koji topurl (files)")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the newest N Koji builds of each name")
    parser.add_argument("--title", default="Host-image builds", help="page title")


def run(args: argparse.Namespace) -> int:
    if not (args.dir or args.compose or args.koji_name):
        raise HostImageError("report: expected at least one --dir, --compose or --koji-name")
    entries, skipped = [], []
    for directory in args.dir:
        found = manifest_sources.from_directory(directory)
        entries += found[0]
        skipped += found[1]
    for compose in args.compose:
        found = manifest_sources.from_images_json(compose)
        entries += found[0]
        skipped += found[1]
    if args.koji_name:
        session, topurl = manifest_sources.koji_session(args.koji, args.koji_hub,
                                                        args.koji_topurl)
        for name in args.koji_name:
            found = manifest_sources.from_koji(session, topurl, name, args.limit)
            entries += found[0]
            skipped += found[1]
    for item in skipped:
        log.warning("skipped %s: %s", item.origin, item.reason)
    html_path, json_path = write_report(build_report(entries, skipped), args.output,
                                        args.title)
    print(html_path)
    print(json_path)
    return 0
