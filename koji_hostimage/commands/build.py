# SPDX-License-Identifier: GPL-2.0-or-later
"""`koji-hostimage build TREEFILE -o DIR`: the whole local pipeline, compose to archive."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from koji_hostimage.compose.base import host_arch
from koji_hostimage.compose.engines import ENGINE_NAMES
from koji_hostimage.errors import HostImageError
from koji_hostimage.image.serverlayer import BUSYBOX_PATHS, check_static_elf, find_busybox
from koji_hostimage.manifest import MAX_TIMESTAMP, Source
from koji_hostimage.pipeline import DEFAULT_SERVER_CMD, BuildRequest, build_host_image

HELP = "build a host image: compose, export, OCI archive and hostimage.json"
SOURCE_ROOT_HELP = ("every file the treefile names must be inside DIR (default: the "
                    "treefile's directory)")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("treefile", type=Path, metavar="TREEFILE", help="rpm-ostree treefile")
    parser.add_argument("-o", "--output-dir", type=Path, required=True, metavar="DIR",
                        help="where the archive, hostimage.json and compose.json go")
    parser.add_argument("--arch", default=host_arch(),
                        help="Koji arch name [this machine's: %(default)s]")
    parser.add_argument("--name", help="image name [the treefile's file name stem]")
    parser.add_argument("--version", dest="image_version", metavar="VERSION",
                        help="version stamped into the commit [automatic-version-prefix or a "
                        "date stamp]")
    parser.add_argument("--release", default="1", help="release [%(default)s]")
    parser.add_argument("--engine", choices=ENGINE_NAMES, default="auto",
                        help="compose engine [%(default)s: rpm-ostree if installed, else dnf]")
    parser.add_argument("--extra-repo", action="append", default=[], metavar="URL",
                        help="extra RPM repo baseurl ($arch substituted); repeatable")
    parser.add_argument("--previous", action="append", default=[], type=Path,
                        metavar="ARCHIVE",
                        help="earlier build (archive or repo) to ship a static delta from; "
                        "repeatable")
    parser.add_argument("--delta-from-scratch", action="store_true",
                        help="also ship a from-scratch static delta")
    server = parser.add_mutually_exclusive_group()
    server.add_argument("--base-image", type=Path, metavar="OCI",
                        help="OCI archive whose layers go first (the image then runs a web "
                        "server: --server-cmd)")
    server.add_argument("--no-server", action="store_true",
                        help="no server layer: the image holds the repo but cannot serve it "
                        "(default without --base-image: a static busybox httpd serves "
                        "/srv/repo on 8080)")
    parser.add_argument("--busybox", type=Path, metavar="PATH",
                        help="the static busybox of the server layer [the first of "
                        f"{', '.join(map(str, BUSYBOX_PATHS))}]")
    parser.add_argument("--server-cmd", metavar="JSON",
                        help="Cmd with a base image, as a JSON list "
                        f"[{json.dumps(DEFAULT_SERVER_CMD)}]")
    parser.add_argument("--sign-key", metavar="ID", help="GPG key id: sign commit and summary")
    parser.add_argument("--gpg-homedir", type=Path, metavar="DIR", help="GPG home directory")
    parser.add_argument("--work-repo", type=Path, metavar="DIR",
                        help="bare-user repo kept between builds (unchanged inputs then "
                        "compose nothing; the commit is still packaged unless its outputs "
                        "are already in DIR)")
    parser.add_argument("--source-root", type=Path, metavar="DIR",
                        help=SOURCE_ROOT_HELP)
    parser.add_argument("--scm-url", help="source URL recorded in the manifest and labels")
    parser.add_argument("--scm-revision", help="source revision recorded likewise")
    parser.add_argument("--force-nocache", action="store_true",
                        help="compose even when the inputs are unchanged")
    parser.add_argument("--json", action="store_true",
                        help="print the hostimage.json of the build to stdout")


def _server_cmd(text: str | None) -> list[str]:
    if text is None:
        return list(DEFAULT_SERVER_CMD)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
        raise HostImageError(f"--server-cmd: expected a JSON list of strings, got {text!r}")
    return value


def _busybox(args: argparse.Namespace) -> Path | None:
    """The server layer's busybox, found and checked now, before a long compose."""
    if args.base_image or args.no_server:
        return None
    busybox = find_busybox(args.busybox, "--busybox")
    check_static_elf(busybox, args.arch)
    return busybox


def source_date_epoch(text: str | None) -> int | None:
    """SOURCE_DATE_EPOCH from the environment (reproducible-builds.org's rule: a decimal
    count of seconds since the epoch); unset or empty means now."""
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or int(text) > MAX_TIMESTAMP:
        raise HostImageError("SOURCE_DATE_EPOCH: expected seconds since the epoch (digits, "
                             f"at most {MAX_TIMESTAMP}), got {text!r}")
    return int(text)


def request_from_args(args: argparse.Namespace) -> BuildRequest:
    """The BuildRequest the command line describes."""
    return BuildRequest(
        treefile=args.treefile,
        output_dir=args.output_dir,
        arch=args.arch,
        name=args.name,
        version=args.image_version,
        release=args.release,
        engine=args.engine,
        extra_repos=list(args.extra_repo),
        previous=list(args.previous),
        delta_from_scratch=args.delta_from_scratch,
        base_image=args.base_image,
        sign_key=args.sign_key,
        gpg_homedir=args.gpg_homedir,
        server_cmd=_server_cmd(args.server_cmd),
        server="none" if args.no_server else "busybox",
        busybox=_busybox(args),
        source=Source(args.scm_url, args.scm_revision, str(args.treefile)),
        work_repo=args.work_repo,
        force_nocache=args.force_nocache,
        source_date_epoch=source_date_epoch(os.environ.get("SOURCE_DATE_EPOCH")),
        source_root=args.source_root,
    )


def run(args: argparse.Namespace) -> int:
    result = build_host_image(request_from_args(args))
    if not result.changed:
        log.info("nothing changed (commit %s): its outputs are already in %s", result.commit,
                 os.fspath(args.output_dir))
        if args.json:
            sys.stdout.write(json.dumps({"changed": False, "commit": result.commit}) + "\n")
        return 0
    assert result.manifest is not None
    if args.json:
        sys.stdout.write(result.manifest.to_json())
    else:
        log.info("archive:  %s", os.fspath(result.archive))
        log.info("manifest: %s", os.fspath(result.manifest_path))
    return 0
