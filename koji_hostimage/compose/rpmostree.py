# SPDX-License-Identifier: GPL-2.0-or-later
"""The production compose engine: ``rpm-ostree compose tree`` (DESIGN section 3).

The command line follows rpm-ostree's own option tables (coreos/rpm-ostree
``src/app/rpmostree-compose-builtins.cxx``): ``--repo`` (common_option_entries),
``--unified-core`` and ``--force-nocache`` (install_option_entries),
``--write-composejson-to``, ``--add-metadata-string=KEY=VALUE`` and ``--parent=REV``
(commit_option_entries). The compose.json it writes comes from
``rpmostree_composeutil_write_composejson`` (src/libpriv/rpmostree-composeutil.cxx).

When the input hash equals the previous commit's ``rpmostree.inputhash``
(``install_packages`` sets ``out_unmodified``), rpm-ostree exits 0 without committing
and without writing compose.json: we report that as ``changed=False``.

Every path goes through ``self.runner.inner_path`` and every command through
``self.runner.run``: in Koji the runner is the buildroot (mock chroot).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from koji_hostimage.errors import ComposeError, tail_lines
from koji_hostimage.ostree.repo import OSTreeRepo
from koji_hostimage.treefile.inputs import flatten_for_rpm_ostree
from koji_hostimage.treefile.repos import resolve_repos

from .base import ComposeEngine, ComposeRequest, ComposeResult

log = logging.getLogger(__name__)

RPM_OSTREE = "rpm-ostree"
COMPOSE_JSON_NAME = "compose.json"
_CHECKSUM_RE = re.compile(r"^[0-9a-f]{64}$")


def build_compose_argv(
    repo: str,
    treefile: str,
    compose_json: str,
    parent: str | None = None,
    version: str | None = None,
    force_nocache: bool = False,
    program: str = RPM_OSTREE,
) -> list[str]:
    """The exact ``rpm-ostree compose tree`` argv; paths as the command will see them."""
    argv = [
        program,
        "compose",
        "tree",
        "--unified-core",
        f"--repo={repo}",
        f"--write-composejson-to={compose_json}",
    ]
    if parent:
        argv.append(f"--parent={parent}")
    if version:
        argv.append(f"--add-metadata-string=version={version}")
    if force_nocache:
        argv.append("--force-nocache")
    argv.append(treefile)
    return argv


class RpmOstreeEngine(ComposeEngine):
    name = "rpm-ostree"

    def compose(self, request: ComposeRequest) -> ComposeResult:
        treefile = request.treefile
        workdir = Path(request.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        repos = resolve_repos(treefile, request.extra_repos)
        flat = flatten_for_rpm_ostree(
            treefile, repos, workdir / "treefile", inner_path=self.runner.inner_path
        )
        OSTreeRepo(Path(request.repo), self.runner).init("bare-user")
        compose_json = workdir / COMPOSE_JSON_NAME
        # A compose.json left from an earlier run would read as "changed" after a no-op.
        compose_json.unlink(missing_ok=True)
        argv = build_compose_argv(
            repo=self.runner.inner_path(Path(request.repo)),
            treefile=self.runner.inner_path(flat),
            compose_json=self.runner.inner_path(compose_json),
            parent=request.parent,
            version=request.version,
            force_nocache=request.force_nocache,
        )
        log.info("composing %s with rpm-ostree", treefile.ref)
        # rpm-ostree stamps the commit (and rpm the rpmdb) with SOURCE_DATE_EPOCH
        env = (None if request.source_date_epoch is None
               else {"SOURCE_DATE_EPOCH": str(request.source_date_epoch)})
        result = self.runner.run(argv, env=env, log_path=request.log_path)
        if result.returncode != 0:
            raise ComposeError(
                f"rpm-ostree compose tree failed (exit {result.returncode}) for "
                f"{treefile.path}:\n{tail_lines(result.output)}{bwrap_hint(result.output)}"
            )
        if not compose_json.exists():
            # The work repo lives on the host side of the runner: read the ref from here.
            commit = OSTreeRepo(Path(request.repo)).rev_parse(treefile.ref, allow_missing=True)
            log.info("rpm-ostree: no changes; %s stays at %s", treefile.ref, commit)
            return ComposeResult(changed=False, ref=treefile.ref, commit=commit, engine=self.name)
        data = parse_compose_json(compose_json)
        return ComposeResult(
            changed=True,
            ref=data["ref"],
            commit=data["ostree-commit"],
            engine=self.name,
            compose_json=data,
            compose_json_path=compose_json,
        )


# What rpm-ostree prints when its bubblewrap self-test fails (rust/src/bwrap.rs
# ``bubblewrap_selftest``'s context, and bwrap's own message in a plain chroot).
_BWRAP_FAILURES = ("bwrap test failed", "Failed to make / slave")


def bwrap_hint(output: str) -> str:
    """An explanation to append when rpm-ostree could not start bubblewrap."""
    if not any(marker in output for marker in _BWRAP_FAILURES):
        return ""
    return (
        "\nrpm-ostree could not start bubblewrap: it needs a chroot whose / is a mount"
        " point with private mounts, such as mock's default systemd-nspawn chroot (in Koji:"
        " leave the build tag's mock.new_chroot unset) or a container with"
        " CAP_SYS_ADMIN; a plain chroot (mock.new_chroot=0) does not work"
    )


def parse_compose_json(path: Path) -> dict[str, Any]:
    """Read rpm-ostree's compose.json; ``ref`` and ``ostree-commit`` must be present."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ComposeError(f"{path}: cannot read rpm-ostree's compose.json: {exc}") from None
    if not isinstance(data, dict):
        raise ComposeError(f"{path}: expected a JSON object, got {type(data).__name__}")
    ref = data.get("ref")
    if not isinstance(ref, str) or not ref:
        raise ComposeError(f"{path}: ref: expected a non-empty string, got {ref!r}")
    commit = data.get("ostree-commit")
    if not isinstance(commit, str) or not _CHECKSUM_RE.match(commit):
        raise ComposeError(
            f"{path}: ostree-commit: expected a 64-digit hex checksum, got {commit!r}"
        )
    return data

