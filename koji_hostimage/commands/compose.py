# SPDX-License-Identifier: GPL-2.0-or-later
"""`koji-hostimage compose`: treefile + RPM repos -> an OSTree commit in a work repo.

Logs one line per stage as it runs (stderr); ``--json`` prints the result, with the
compose.json contents, on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from koji_hostimage.compose.base import ComposeRequest, ComposeResult, host_arch
from koji_hostimage.compose.engines import ENGINE_NAMES, get_engine
from koji_hostimage.treefile.load import load_treefile

HELP = "compose a treefile into an OSTree commit (dnf or rpm-ostree engine)"

log = logging.getLogger(__name__)

# uname -m -> Koji/rpm basearch, for the default --arch.
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("treefile", type=Path, help="rpm-ostree treefile (YAML or JSON)")
    parser.add_argument("--repo", type=Path, required=True,
                        help="work OSTree repo (bare-user; created when missing)")
    parser.add_argument("--engine", choices=ENGINE_NAMES, default="auto",
                        help="compose engine (default: auto = rpm-ostree if installed, else dnf)")
    parser.add_argument("--arch", default=host_arch(),
                        help="basearch for ${basearch} and arch keys (default: %(default)s)")
    parser.add_argument("--version", dest="image_version",
                        help="commit version (default: from automatic-version-prefix)")
    parser.add_argument("--extra-repo", action="append", default=[], metavar="URL",
                        help="extra RPM repo baseurl or path (repeatable)")
    parser.add_argument("--source-root", type=Path, metavar="DIR",
                        help="every file the treefile names must be inside DIR (default: "
                        "the treefile's directory)")
    parser.add_argument("--parent", help="commit to record as parent (default: the ref's)")
    parser.add_argument("--force-nocache", action="store_true",
                        help="commit even when the input hash is unchanged")
    parser.add_argument("--workdir", type=Path,
                        help="scratch dir, kept (default: a temporary dir, removed)")
    parser.add_argument("--json", action="store_true",
                        help="print the result and compose.json as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    log.info("compose: loading %s for %s", args.treefile, args.arch)
    treefile = load_treefile(args.treefile, args.arch, root=args.source_root)
    engine = get_engine(args.engine)
    log.info("compose: %s with the %s engine into %s", treefile.ref, engine.name, args.repo)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="koji-hostimage-compose-"))
    try:
        request = ComposeRequest(
            treefile=treefile,
            repo=args.repo.resolve(),
            workdir=workdir.resolve(),
            version=args.image_version,
            parent=args.parent,
            extra_repos=list(args.extra_repo),
            force_nocache=args.force_nocache,
        )
        result = engine.compose(request)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if result.changed:
        version = result.compose_json.get("ostree-version")
        log.info("compose: %s => %s%s", result.ref, result.commit,
                 f" (version {version})" if version else "")
    else:
        log.info("compose: no changes; %s stays at %s", result.ref, result.commit)
    if args.json:
        sys.stdout.write(json.dumps(result_to_dict(result), indent=2, sort_keys=True) + "\n")
    return 0


def result_to_dict(result: ComposeResult) -> dict:
    return {
        "changed": result.changed,
        "ref": result.ref,
        "commit": result.commit,
        "engine": result.engine,
        "compose_json": result.compose_json,
    }
