# SPDX-License-Identifier: GPL-2.0-or-later
"""The portable compose engine: ``dnf --installroot`` + ``ostree commit`` (DESIGN section 3).

What rpm-ostree does in one privileged process, this engine does with ordinary tools:

1. dnf installs the treefile's packages into an empty root, from the treefile's repos
   only (a private ``--config``, ``reposdir`` and ``cachedir`` in the work dir; no
   plugins; weak deps unless ``recommends: false``, rpm-ostree's default; GPG checks as
   each .repo file configures them). rpm writes its database straight to ``/usr/share/rpm`` because
   the run gets a private HOME whose ``.rpmmacros`` sets ``%_dbpath`` (Debian's rpm
   otherwise uses ``~/.rpmdb``); the sqlite WAL is folded into the database afterwards.
2. The root is reshaped the way rpm-ostree's ``rust/src/composepost.rs`` does it
   (``reshape_for_ostree`` in reshape.py, which lists the upstream functions): /etc moves
   to /usr/etc, /var becomes tmpfiles.d entries, the kernel moves to
   ``/usr/lib/modules/$kver/``. rpm's lock files go with the WAL
   (``postprocess_cleanup_rpmdb_impl``, see ``fold_rpmdb_wal``).
3. ``ostree commit`` with the metadata rpm-ostree writes: ``version`` (the request's, or
   ``automatic-version-prefix`` stepped like rpm-ostree's ``util_next_version``),
   ``rpmostree.inputhash``, ``rpmostree.rpmdb.pkglist`` and ``add-commit-metadata``; then
   a compose.json of the shape of ``rpmostree_composeutil_write_composejson``.

As rpm-ostree does (``install_packages`` sets ``out_unmodified``), an input hash equal to
the previous commit's skips the compose: ``changed=False``, no commit, no compose.json.

Every command goes through ``self.runner.run`` and every path handed to one through
``self.runner.inner_path``, so the engine also runs inside a Koji buildroot. Reshaping
is plain Python on host paths.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from koji_hostimage.errors import ComposeError, HostImageError, tail_lines
from koji_hostimage.fsutil import clean_stale_scratch, discard_tree, write_atomic
from koji_hostimage.manifest import Package
from koji_hostimage.ostree.repo import CommitInfo, OSTreeRepo
from koji_hostimage.pkgdiff import diff_packages
from koji_hostimage.treefile.inputs import input_hash
from koji_hostimage.treefile.keys import effective
from koji_hostimage.treefile.load import Treefile
from koji_hostimage.treefile.repos import RepoSource, resolve_repos, write_repo_file
from koji_hostimage.treefile.version import automatic_version

from .base import ComposeEngine, ComposeRequest, ComposeResult
from .reshape import reshape_for_ostree
from .rpmdb import (
    PKGLIST_KEY,
    RPMDB_DIR,
    packages_from_pkglist,
    packages_in_tree,
    pkglist_metadata,
)

log = logging.getLogger(__name__)

COMPOSE_JSON_NAME = "compose.json"
INPUTHASH_KEY = "rpmostree.inputhash"
STAGE_DIR_NAME = "dnf-engine"

#: Treefile keys the dnf engine implements. Anything else is refused by name.
HONOURED_KEYS = frozenset(
    {
        "ref",
        "packages",
        "repos",
        "releasever",
        "exclude-packages",
        "add-commit-metadata",
        "automatic-version-prefix",
        "automatic-version-suffix",
        "preserve-passwd",
        "documentation",
        "recommends",
        "units",
        "default-target",
        "boot-location",
        "tmp-is-dir",
        "remove-files",
        "add-files",
        "mutate-os-release",
        # Loader-level keys: already applied by koji_hostimage.treefile.
        "include",
        "arch-include",
        "variables",
        "metadata",
        "basearch",
        "edition",
        # selinux: true (the default) is honoured when the tree has no policy (rpm-ostree
        # then commits unlabelled too); with a policy it is refused (see check_selinux).
        "selinux",
    }
)
_ARCH_PACKAGES_RE = re.compile(r"^packages-[A-Za-z0-9_]+$")
BOOT_LOCATIONS = ("modules", "new")
SELINUX_CONFIG = "etc/selinux/config"


class DnfEngine(ComposeEngine):
    name = "dnf"

    def compose(self, request: ComposeRequest) -> ComposeResult:
        treefile = request.treefile
        check_treefile(treefile)
        workdir = Path(request.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        compose_json = workdir / COMPOSE_JSON_NAME
        compose_json.unlink(missing_ok=True)  # a stale one would read as "changed"

        repos = resolve_repos(treefile, request.extra_repos)
        inputhash = input_hash(treefile, repos)
        log.info("dnf: input hash %s", inputhash)
        repo = OSTreeRepo(Path(request.repo), self.runner).init("bare-user")
        current = repo.rev_parse(treefile.ref, allow_missing=True)
        previous_rev = request.parent or current
        previous = repo.show(previous_rev) if previous_rev and repo.has_commit(previous_rev) \
            else None
        if previous is not None:
            previous_rev = previous.checksum  # `ostree commit --parent` takes a checksum
        elif previous_rev and not re.fullmatch(r"[0-9a-f]{64}", previous_rev):
            raise ComposeError(f"parent: {previous_rev!r} is not a commit checksum and not a "
                               f"ref in {request.repo}")
        if previous and not request.force_nocache \
                and previous.metadata.get(INPUTHASH_KEY) == inputhash:
            log.info("dnf: no changes since %s (same input hash); no new commit",
                     previous.checksum)
            return ComposeResult(
                changed=False, ref=treefile.ref, commit=current or previous.checksum,
                engine=self.name,
            )

        version = request.version or _automatic_version(treefile, previous,
                                                        request.source_date_epoch)
        stage = workdir / STAGE_DIR_NAME
        clean_stale_scratch(workdir, kinds=("trash",))  # a killed build's, in a kept workdir
        discard_tree(stage)  # a stale one: renamed away, removed in the background
        stage.mkdir()
        install_root = stage / "install"
        rootfs = stage / "rootfs"
        install_root.mkdir()
        if previous is not None:
            preserve_passwd(treefile, repo, previous.checksum, install_root)
        self._install(treefile, repos, stage, install_root, request.log_path,
                      request.source_date_epoch)
        check_selinux(treefile, install_root)
        fold_rpmdb_wal(install_root / RPMDB_DIR)
        packages = packages_in_tree(install_root, self.runner)
        log.info("dnf: installed %d packages", len(packages))
        layout = reshape_for_ostree(treefile, install_root, rootfs, version)
        log.info("dnf: reshaped tree for OSTree (kernel %s)", layout.kernel_version or "none")

        metadata = _commit_metadata(treefile, version, inputhash, packages)
        stats = repo.commit(
            rootfs,
            treefile.ref,
            metadata=metadata,
            parent=previous_rev if previous_rev else None,
            timestamp=_commit_timestamp(request.source_date_epoch),
            bootable=layout.kernel_version is not None,
            log_path=request.log_path,
        )
        log.info("dnf: committed %s => %s", treefile.ref, stats.commit)
        discard_tree(stage)  # the installed tree: removed while the build goes on

        info = repo.show(stats.commit)
        data = compose_json_data(treefile.ref, info, stats, previous, packages)
        write_atomic(compose_json, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
        return ComposeResult(
            changed=True,
            ref=treefile.ref,
            commit=stats.commit,
            engine=self.name,
            compose_json=data,
            compose_json_path=compose_json,
        )

    def _install(
        self,
        treefile: Treefile,
        repos: Sequence[RepoSource],
        stage: Path,
        root: Path,
        log_path: Path | None,
        source_date_epoch: int | None = None,
    ) -> None:
        """Run dnf into ``root`` with a private config, repos, cache and HOME."""
        inner = self.runner.inner_path
        reposdir = stage / "repos.d"
        reposdir.mkdir()
        write_repo_file(repos, reposdir / "compose.repo", inner_path=inner)
        home = stage / "home"
        home.mkdir()
        # Debian's rpm keeps its db in ~/.rpmdb; point it where OSTree trees keep it.
        (home / ".rpmmacros").write_text(f"%_dbpath /{RPMDB_DIR}\n", encoding="utf-8")
        for sub in ("cache", "log"):
            (stage / sub).mkdir()
        config = stage / "dnf.conf"
        config.write_text(
            "[main]\n"
            "keepcache=0\n"
            "skip_if_unavailable=False\n"
            f"reposdir={inner(reposdir)}\n"
            f"cachedir={inner(stage / 'cache')}\n"
            f"logdir={inner(stage / 'log')}\n",
            encoding="utf-8",
        )
        argv = dnf_argv(treefile, config=inner(config), root=inner(root),
                        reposdir=inner(reposdir), cachedir=inner(stage / "cache"),
                        logdir=inner(stage / "log"))
        env = {"HOME": inner(home), "LC_ALL": "C.UTF-8"}
        if source_date_epoch is not None:  # rpm stamps INSTALLTIME with it
            env["SOURCE_DATE_EPOCH"] = str(source_date_epoch)
        log.info("dnf: installing %d requested packages from %s", len(treefile.packages),
                 ", ".join(r.name for r in repos))
        result = self.runner.run(argv, env=env, log_path=log_path)
        if result.returncode != 0:
            raise ComposeError(
                f"dnf failed (exit {result.returncode}) installing the packages of "
                f"{treefile.path}:\n{tail_lines(result.output)}"
            )


# -- treefile handling ----------------------------------------------------------------


def check_treefile(treefile: Treefile) -> None:
    """Refuse keys this engine cannot honour, by name (never silently ignore them)."""
    refused = sorted(
        key for key in treefile.data
        if key not in HONOURED_KEYS and not _ARCH_PACKAGES_RE.match(key)
    )
    if refused:
        raise ComposeError(
            f"{treefile.path}: {', '.join(refused)}: the dnf engine cannot honour "
            f"{'this key' if len(refused) == 1 else 'these keys'}; use the rpm-ostree "
            "engine (--engine rpm-ostree) for this treefile"
        )
    if treefile.finalize_d:
        raise ComposeError(
            f"{treefile.path}: finalize.d ({', '.join(treefile.finalize_d)}): the dnf engine "
            "does not run finalize.d scripts; use the rpm-ostree engine (--engine rpm-ostree)"
        )
    location = effective(treefile.data, "boot-location")
    if location not in BOOT_LOCATIONS:
        raise ComposeError(
            f"{treefile.path}: boot-location: the dnf engine supports "
            f"{' or '.join(BOOT_LOCATIONS)}, got {location!r}; use the rpm-ostree engine "
            "(--engine rpm-ostree)"
        )
    for key in ("documentation", "recommends", "tmp-is-dir"):
        if key in treefile.data and not isinstance(treefile.data[key], bool):
            raise ComposeError(f"{treefile.path}: {key}: expected true or false, "
                               f"got {treefile.data[key]!r}")
    if not treefile.packages:
        raise ComposeError(f"{treefile.path}: packages: expected at least one package")


def check_selinux(treefile: Treefile, root: Path) -> None:
    """``selinux`` (rpm-ostree's default: true) labels the tree with the policy the tree
    ships (rpmostree-core.cxx: the final policy is read from the new root with
    ``rpmostree_prepare_rootfs_get_sepolicy``; with none, nothing is labelled). This
    engine cannot label: a tree with a policy and ``selinux: true`` is refused by name."""
    if effective(treefile.data, "selinux") is not True:
        return
    if (root / SELINUX_CONFIG).is_file():
        raise ComposeError(
            f"{treefile.path}: selinux: true (rpm-ostree's default) asks for the tree to be "
            f"labelled with the SELinux policy it ships (/{SELINUX_CONFIG}); the dnf engine "
            "cannot label: set selinux: false or use the rpm-ostree engine "
            "(--engine rpm-ostree)"
        )
    log.info("dnf: no SELinux policy in the tree; committing unlabelled, as rpm-ostree does")


def dnf_argv(
    treefile: Treefile, config: str, root: str, reposdir: str, cachedir: str, logdir: str
) -> list[str]:
    """The ``dnf install`` argv for ``treefile`` (paths as dnf will see them)."""
    data = treefile.data
    # dnf cannot guess $releasever in an empty root; repo URLs are already expanded.
    releasever = str(data.get("releasever", "0"))
    argv = [
        "dnf",
        f"--config={config}",
        f"--installroot={root}",
        f"--releasever={releasever}",
        "--assumeyes",
        "--noplugins",
        "--setopt=reposdir=" + reposdir,
        "--setopt=cachedir=" + cachedir,
        "--setopt=logdir=" + logdir,
        f"--setopt=install_weak_deps={bool(effective(data, 'recommends'))}",
    ]
    if data.get("documentation") is False:
        argv.append("--setopt=tsflags=nodocs")
    argv += [f"--exclude={name}" for name in data.get("exclude-packages", [])]
    argv += ["install", *treefile.packages]
    return argv


PASSWD_FILES = ("passwd", "group")


def preserve_passwd(treefile: Treefile, repo: OSTreeRepo, previous: str, root: Path) -> None:
    """rpm-ostree's ``preserve-passwd`` (on unless the treefile says false): before any
    package is installed, the previous commit's users and groups go into the new root's
    /etc, so that scriptlets adding users find them and every user and group keeps its
    ID between two versions of an image.

    Mirrors coreos/rpm-ostree rust/src/passwd.rs ``passwd_compose_prep_impl`` ->
    ``concat_fs_content``: the entries of the previous commit's usr/etc/FILE, then those
    of usr/lib/FILE, each name once (the first wins). rpm then installs the setup
    package's own /etc/passwd and /etc/group (%config(noreplace)) as .rpmnew.
    """
    if treefile.data.get("preserve-passwd", True) is False:
        return
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    for name in PASSWD_FILES:
        entries: dict[str, str] = {}
        for source in (f"/usr/etc/{name}", f"/usr/lib/{name}"):
            try:
                text = repo.cat(previous, source)
            except HostImageError:
                continue  # not in that commit
            for line in text.splitlines():
                key = line.split(":", 1)[0]
                if key and not line.startswith("#"):
                    entries.setdefault(key, line)
        if entries:
            write_atomic(etc / name, ("\n".join(entries.values()) + "\n").encode())
            (etc / name).chmod(0o644)
            log.info("dnf: %d %s entries kept from %s", len(entries), name, previous[:12])


def _automatic_version(treefile: Treefile, previous: CommitInfo | None,
                       source_date_epoch: int | None = None) -> str | None:
    """rpm-ostree's automatic-version-prefix against the ref's previous commit, dated
    at the commit's own timestamp (SOURCE_DATE_EPOCH when set)."""
    now = dt.datetime.fromtimestamp(_commit_timestamp(source_date_epoch), dt.UTC)
    return automatic_version(treefile.data, previous.version if previous else None, now)


def _commit_metadata(
    treefile: Treefile, version: str | None, inputhash: str, packages: Sequence[Package]
) -> dict[str, Any]:
    metadata: dict[str, Any] = dict(treefile.data.get("add-commit-metadata") or {})
    if version:
        metadata["version"] = version
    metadata[INPUTHASH_KEY] = inputhash
    metadata[PKGLIST_KEY] = pkglist_metadata(packages)
    return metadata


def _commit_timestamp(source_date_epoch: int | None = None) -> int:
    """The request's SOURCE_DATE_EPOCH, else the environment's, else now."""
    if source_date_epoch is not None:
        return source_date_epoch
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return int(epoch) if epoch and epoch.isdigit() else int(time.time())


# -- the rpmdb ------------------------------------------------------------------------


def fold_rpmdb_wal(rpmdb_dir: Path) -> None:
    """Fold the sqlite WAL into rpmdb.sqlite and drop rpm's lock files.

    A committed tree is read-only: leftover -wal/-shm files would be stale state, and
    rpm-ostree removes the lock files too (``postprocess_cleanup_rpmdb_impl``).
    """
    database = rpmdb_dir / "rpmdb.sqlite"
    if database.is_file():
        connection = sqlite3.connect(str(database))
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.execute("PRAGMA journal_mode=DELETE")
        finally:
            connection.close()
    for name in ("rpmdb.sqlite-wal", "rpmdb.sqlite-shm", ".rpm.lock", ".dbenv.lock"):
        (rpmdb_dir / name).unlink(missing_ok=True)
    for leftover in rpmdb_dir.glob("__db.*"):
        leftover.unlink()


# -- compose.json ---------------------------------------------------------------------


def compose_json_data(
    ref: str,
    info: CommitInfo,
    stats: Any,
    previous: CommitInfo | None,
    packages: Iterable[Package],
) -> dict[str, Any]:
    """compose.json in the shape of rpm-ostree's ``rpmostree_composeutil_write_composejson``."""
    timestamp = dt.datetime.fromtimestamp(info.timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    data: dict[str, Any] = {
        "ref": ref,
        "ostree-n-metadata-total": stats.metadata_total,
        "ostree-n-metadata-written": stats.metadata_written,
        "ostree-n-content-total": stats.content_total,
        "ostree-n-content-written": stats.content_written,
        "ostree-n-cache-hits": 0,
        "ostree-content-bytes-written": stats.content_bytes_written,
        "ostree-commit": info.checksum,
        "ostree-content-checksum": info.content_checksum,
        "ostree-timestamp": timestamp,
        "rpm-ostree-inputhash": info.metadata.get(INPUTHASH_KEY),
    }
    if info.version:
        data["ostree-version"] = info.version
    if previous is not None and info.parent == previous.checksum:
        old = previous.metadata.get(PKGLIST_KEY)
        if old is not None:
            data["pkgdiff"] = pkgdiff_entries(packages_from_pkglist(old), packages)
    return data


# rpm-ostree's RpmOstreePackageDiffTypes (rpmostree-db-diff / rpmostree-package-variants).
PKGDIFF_ADDED, PKGDIFF_REMOVED, PKGDIFF_UPGRADED, PKGDIFF_DOWNGRADED = range(4)


def pkgdiff_entries(old: Iterable[Package], new: Iterable[Package]) -> list[list[Any]]:
    """``pkgdiff`` as rpm-ostree serializes its ``a(sua{sv})`` diff variant to JSON.

    Each entry is ``[name, type, {"PreviousPackage": [name, evr, arch], "NewPackage": ...}]``
    in rpm-ostree's order: src/daemon/rpmostree-package-variants.cxx
    ``rpm_ostree_db_diff_variant`` collects modified, removed, then added entries, then
    sorts them with ``rpm_ostree_db_diff_variant_compare_by_type``: by type (added,
    removed, upgraded, downgraded), then by name (strcmp, so byte order).
    """
    diff = diff_packages(old, new)

    def triple(p: Package) -> list[str]:
        return [p.name, p.evr, p.arch]

    entries: list[list[Any]] = []
    for change in diff.upgraded:
        entries.append([change.name, PKGDIFF_UPGRADED,
                        {"PreviousPackage": triple(change.old), "NewPackage": triple(change.new)}])
    for change in diff.downgraded:
        entries.append([change.name, PKGDIFF_DOWNGRADED,
                        {"PreviousPackage": triple(change.old), "NewPackage": triple(change.new)}])
    for pkg in diff.removed:
        entries.append([pkg.name, PKGDIFF_REMOVED, {"PreviousPackage": triple(pkg)}])
    for pkg in diff.added:
        entries.append([pkg.name, PKGDIFF_ADDED, {"NewPackage": triple(pkg)}])
    # g_ptr_array_sort is not stable; names are unique per type except multilib pairs,
    # which keep their arch order here.
    entries.sort(key=lambda entry: (entry[1], entry[0].encode()))
    return entries
