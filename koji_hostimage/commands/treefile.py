# SPDX-License-Identifier: GPL-2.0-or-later
"""`koji-hostimage treefile TREEFILE`: print the fully resolved treefile.

The counterpart of ``rpm-ostree compose tree --print-only``
(src/app/rpmostree-compose-builtin-tree.cxx prints the treefile after
``treefile_parse_and_process``): every include, arch-include and conditional-include
merged, conditions evaluated, variables expanded, defaults of the keys the engines look
at, and the repos with the file each comes from. Exit 1 with a one-line reason on any
error (koji_hostimage.commands.main reports HostImageError that way).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from koji_hostimage.compose.base import host_arch
from koji_hostimage.treefile.keys import effective
from koji_hostimage.treefile.load import Treefile, load_treefile, relative_to
from koji_hostimage.treefile.repos import RepoSource, resolve_repos

HELP = "print a treefile fully resolved (includes, conditions, variables, repos)"

#: Keys whose rpm-ostree default is shown when the treefile does not set them.
DEFAULTED_KEYS = ("boot-location", "documentation", "preserve-passwd", "recommends",
                  "selinux", "tmp-is-dir")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("treefile", type=Path, help="rpm-ostree treefile (YAML or JSON)")
    parser.add_argument("--arch", default=host_arch(),
                        help="basearch for ${basearch}, arch keys and conditions "
                        "(default: %(default)s)")
    parser.add_argument("--source-root", type=Path, metavar="DIR",
                        help="every file the treefile names must be inside DIR (default: "
                        "the treefile's directory)")
    parser.add_argument("--extra-repo", action="append", default=[], metavar="URL",
                        help="extra RPM repo baseurl or path (repeatable), as compose takes")
    parser.add_argument("--json", action="store_true", help="print JSON (default: YAML-like)")


def resolved(treefile: Treefile, repos: list[RepoSource]) -> dict[str, Any]:
    """The resolved treefile as one document: data, defaults, files read, repos."""
    base = treefile.directory
    return {
        "treefile": str(treefile.path),
        "basearch": treefile.basearch,
        "data": treefile.data,
        "defaults": {key: effective(treefile.data, key) for key in DEFAULTED_KEYS
                     if key not in treefile.data},
        "files": [relative_to(path, base) for path in treefile.files],
        "finalize.d": {name: relative_to(path, base)
                       for name, path in treefile.finalize_d.items()},
        "repos": [
            {"id": repo.name, "origin": repo.origin,
             "options": repo.options or {"baseurl": repo.baseurl}}
            for repo in repos
        ],
    }


def run(args: argparse.Namespace) -> int:
    treefile = load_treefile(args.treefile, args.arch, root=args.source_root)
    repos = resolve_repos(treefile, args.extra_repo)
    document = resolved(treefile, repos)
    if args.json:
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(_as_text(document))
    return 0


def _as_text(document: dict[str, Any]) -> str:
    lines = [f"# {document['treefile']} for {document['basearch']}"]
    for key, value in sorted(document["data"].items()):
        lines.append(f"{key}: {json.dumps(value, sort_keys=True)}")
    for key, value in document["defaults"].items():
        lines.append(f"{key}: {json.dumps(value)}  # default")
    lines.append("# files read: " + ", ".join(document["files"]))
    for name, path in document["finalize.d"].items():
        lines.append(f"# finalize.d: {name} ({path})")
    for repo in document["repos"]:
        options = " ".join(f"{k}={v}" for k, v in repo["options"].items())
        lines.append(f"# repo {repo['id']} from {repo['origin']}: {options}")
    return "\n".join(lines) + "\n"
