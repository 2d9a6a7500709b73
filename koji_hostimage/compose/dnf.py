# SPDX-License-Identifier: GPL-2.0-or-later
"""The portable compose engine: ``dnf --installroot`` + ``ostree commit`` (DESIGN section 3).

What rpm-ostree does in one privileged process, this engine does with ordinary tools:

1. dnf installs the treefile's packages into an empty root, from the treefile's repos
   only (a private ``--config``, ``reposdir`` and ``cachedir`` in the work dir; no
   plugins, no weak deps unless ``recommends: true``, no GPG check: the repos are the
   build's own inputs). rpm writes its database straight to ``/usr/share/rpm`` because
   the run gets a private HOME whose ``.rpmmacros`` sets ``%_dbpath`` (Debian's rpm
   otherwise uses ``~/.rpmdb``); the sqlite WAL is folded into the database afterwards.
2. The root is reshaped the way rpm-ostree's ``rust/src/composepost.rs`` does it:
   ``compose_prepare_rootfs`` / ``compose_init_rootfs`` (keep /usr, /boot, /var and the
   /bin, /lib ... compat links; make /dev /proc /run /sys /var /sysroot and the
   /home -> var/home, /root -> var/roothome, /opt, /srv, /mnt, /ostree, /tmp links),
   ``compose_postprocess`` (/etc -> /usr/etc), ``compose_postprocess_rpmdb`` (/var/lib/rpm
   -> ../../usr/share/rpm), ``postprocess_rpm_macro`` (macros.rpm-ostree),
   ``postprocess_cleanup_rpmdb_impl`` (rpm lock files), ``compose_postprocess_units``,
   ``compose_postprocess_default_target``, ``compose_postprocess_remove_files``,
   ``compose_postprocess_add_files``, ``compose_postprocess_mutate_os_release`` and
   ``var_to_tmpfiles`` (/var becomes tmpfiles.d entries; files in it are dropped). The
   kernel ends up as ``/usr/lib/modules/$kver/{vmlinuz,initramfs.img}``, the layout
   ``ostree admin deploy`` looks for first.
3. ``ostree commit`` with the metadata rpm-ostree writes: ``version`` (the request's, or
   ``automatic-version-prefix`` stepped like ``_rpmostree_util_next_version``),
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
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koji_hostimage.errors import ComposeError, tail_lines
from koji_hostimage.fsutil import write_atomic
from koji_hostimage.manifest import Package
from koji_hostimage.ostree.repo import CommitInfo, OSTreeRepo
from koji_hostimage.pkgdiff import diff_packages
from koji_hostimage.treefile.load import (
    RepoSource,
    Treefile,
    input_hash,
    resolve_repos,
    write_repo_file,
)

from .base import ComposeEngine, ComposeRequest, ComposeResult
from .rpmdb import PKGLIST_KEY, packages_from_pkglist, packages_in_tree, pkglist_metadata

log = logging.getLogger(__name__)

COMPOSE_JSON_NAME = "compose.json"
INPUTHASH_KEY = "rpmostree.inputhash"
STAGE_DIR_NAME = "dnf-engine"
TMPFILES_CONF = "usr/lib/tmpfiles.d/koji-hostimage-autovar.conf"
RPMDB_DIR = "usr/share/rpm"
RPM_MACRO_FILE = "usr/lib/rpm/macros.d/macros.rpm-ostree"

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
    }
)
_ARCH_PACKAGES_RE = re.compile(r"^packages-[A-Za-z0-9_]+$")
BOOT_LOCATIONS = ("modules", "new")

# compose_init_rootfs: top-level dirs, and links (name -> target) into /var, /run, /sysroot.
_TOPLEVEL_DIRS = ("dev", "proc", "run", "sys", "var", "sysroot")
_TOPLEVEL_LINKS = {
    "opt": "var/opt",
    "srv": "var/srv",
    "mnt": "var/mnt",
    "root": "var/roothome",
    "home": "var/home",
    "media": "run/media",
    "ostree": "sysroot/ostree",
}
# compose_prepare_rootfs: what is taken from the install root (everything else is dropped).
_KEPT_DIRS = ("usr", "boot", "var")
_COMPAT_LINKS = ("lib", "lib64", "lib32", "bin", "sbin")
# State dnf itself leaves behind; no package owns it and rpm-ostree trees do not have it.
_DNF_LEFTOVERS = ("var/cache/dnf", "var/lib/dnf", "var/log/dnf.log", "var/log/dnf.rpm.log",
                  "var/log/dnf.librepo.log", "var/log/hawkey.log", "var/run")


@dataclass
class TreeLayout:
    """What reshaping found: for logs, commit flags and tests."""

    kernel_version: str | None = None
    has_initramfs: bool = False
    tmpfiles: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


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

        version = request.version or _automatic_version(treefile, previous)
        stage = workdir / STAGE_DIR_NAME
        _remove_tree(stage)
        stage.mkdir()
        install_root = stage / "install"
        rootfs = stage / "rootfs"
        self._install(treefile, repos, stage, install_root, request.log_path)
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
            timestamp=_commit_timestamp(),
            bootable=layout.kernel_version is not None,
            log_path=request.log_path,
        )
        log.info("dnf: committed %s => %s", treefile.ref, stats.commit)
        _remove_tree(stage)

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
            "gpgcheck=0\n"
            "keepcache=0\n"
            "skip_if_unavailable=False\n"
            f"reposdir={inner(reposdir)}\n"
            f"cachedir={inner(stage / 'cache')}\n"
            f"logdir={inner(stage / 'log')}\n",
            encoding="utf-8",
        )
        root.mkdir()
        argv = dnf_argv(treefile, config=inner(config), root=inner(root),
                        reposdir=inner(reposdir), cachedir=inner(stage / "cache"),
                        logdir=inner(stage / "log"))
        env = {"HOME": inner(home), "LC_ALL": "C.UTF-8"}
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
    location = treefile.data.get("boot-location", "modules")
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
        "--nogpgcheck",
        "--setopt=reposdir=" + reposdir,
        "--setopt=cachedir=" + cachedir,
        "--setopt=logdir=" + logdir,
        f"--setopt=install_weak_deps={bool(data.get('recommends', False))}",
    ]
    if data.get("documentation") is False:
        argv.append("--setopt=tsflags=nodocs")
    argv += [f"--exclude={name}" for name in data.get("exclude-packages", [])]
    argv += ["install", *treefile.packages]
    return argv


def next_version(prefix: str, last_version: str | None) -> str:
    """rpm-ostree's ``_rpmostree_util_next_version``: PREFIX, PREFIX.1, PREFIX.2, ...

    A previous version that does not start with ``PREFIX.`` (or equal it) restarts at
    ``PREFIX``.
    """
    if not last_version or not last_version.startswith(prefix):
        return prefix
    if last_version == prefix:
        return f"{prefix}.1"
    rest = last_version[len(prefix):]
    if not rest.startswith("."):
        return prefix
    digits = re.match(r"\d*", rest[1:])
    number = int(digits.group()) if digits and digits.group() else 0
    return f"{prefix}.{number + 1}"


def _automatic_version(treefile: Treefile, previous: CommitInfo | None) -> str | None:
    prefix = treefile.data.get("automatic-version-prefix")
    if not prefix:
        return None
    # rpm-ostree expands <date:FORMAT> in the prefix (strftime, UTC).
    now = dt.datetime.fromtimestamp(_commit_timestamp(), dt.UTC)
    prefix = re.sub(r"<date:([^>]*)>", lambda m: now.strftime(m.group(1)), str(prefix))
    return next_version(prefix, previous.version if previous else None)


def _commit_metadata(
    treefile: Treefile, version: str | None, inputhash: str, packages: Sequence[Package]
) -> dict[str, Any]:
    metadata: dict[str, Any] = dict(treefile.data.get("add-commit-metadata") or {})
    if version:
        metadata["version"] = version
    metadata[INPUTHASH_KEY] = inputhash
    metadata[PKGLIST_KEY] = pkglist_metadata(packages)
    return metadata


def _commit_timestamp() -> int:
    """Now, or SOURCE_DATE_EPOCH when set (reproducible builds)."""
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


# -- reshaping ------------------------------------------------------------------------


def reshape_for_ostree(
    treefile: Treefile, install_root: Path, rootfs: Path, version: str | None = None
) -> TreeLayout:
    """Turn the dnf install root into an OSTree-shaped tree at ``rootfs``."""
    layout = TreeLayout()
    if not (install_root / "usr").is_dir():
        raise ComposeError(f"{treefile.path}: packages: the installed tree has no /usr")
    for leftover in _DNF_LEFTOVERS:
        _remove_tree(install_root / leftover)
    _prepare_rootfs(install_root, rootfs, layout)
    _init_rootfs(rootfs, tmp_is_dir=bool(treefile.data.get("tmp-is-dir", False)))
    _move_etc(install_root, rootfs)
    _place_rpmdb(rootfs)
    _place_kernel(treefile, rootfs, layout)
    _enable_units(treefile, rootfs)
    target = treefile.data.get("default-target")
    if target:
        _symlink(rootfs / "usr/lib/systemd/system/default.target",
                 f"/usr/lib/systemd/system/{target}")
    _remove_files(treefile, rootfs)
    _add_files(treefile, rootfs)
    _mutate_os_release(treefile, rootfs, version)
    layout.tmpfiles = _var_to_tmpfiles(rootfs)
    _remove_tree(install_root)
    return layout


def _prepare_rootfs(install_root: Path, rootfs: Path, layout: TreeLayout) -> None:
    rootfs.mkdir(mode=0o755)
    os.chmod(rootfs, 0o755)
    for name in _KEPT_DIRS + _COMPAT_LINKS:
        source = install_root / name
        if source.is_symlink() or source.exists():
            os.rename(source, rootfs / name)
    layout.dropped = sorted(p.name for p in install_root.iterdir() if p.name != "etc")
    if layout.dropped:
        log.debug("dnf: not kept at the top level: %s", ", ".join(layout.dropped))


def _init_rootfs(rootfs: Path, tmp_is_dir: bool) -> None:
    for name in _TOPLEVEL_DIRS:
        (rootfs / name).mkdir(mode=0o755, exist_ok=True)
    for name, target in _TOPLEVEL_LINKS.items():
        _symlink(rootfs / name, target)
    if tmp_is_dir:
        (rootfs / "tmp").mkdir(exist_ok=True)
        os.chmod(rootfs / "tmp", 0o1777)
    else:
        _symlink(rootfs / "tmp", "sysroot/tmp")


def _move_etc(install_root: Path, rootfs: Path) -> None:
    etc = install_root / "etc"
    for empty in ("dnf/modules.d", "dnf"):  # created by dnf, owned by no package
        path = etc / empty
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    usr_etc = rootfs / "usr/etc"
    if usr_etc.exists():
        raise ComposeError(f"{usr_etc}: a package installs /usr/etc; OSTree keeps the "
                           "default /etc there, so the tree cannot be committed")
    if etc.is_dir():
        os.rename(etc, usr_etc)
    else:
        usr_etc.mkdir(mode=0o755)


def _place_rpmdb(rootfs: Path) -> None:
    rpmdb = rootfs / RPMDB_DIR
    if not rpmdb.is_dir():
        raise ComposeError(f"{rpmdb}: no rpmdb after the install")
    sysimage = rootfs / "usr/lib/sysimage/rpm"
    if sysimage.is_dir() and not sysimage.is_symlink() and not any(sysimage.iterdir()):
        sysimage.rmdir()
    if not sysimage.exists() and not sysimage.is_symlink():
        sysimage.parent.mkdir(parents=True, exist_ok=True)
        sysimage.symlink_to("../../share/rpm")
    var_lib_rpm = rootfs / "var/lib/rpm"
    _remove_tree(var_lib_rpm)
    var_lib_rpm.parent.mkdir(parents=True, exist_ok=True)
    var_lib_rpm.symlink_to(f"../../{RPMDB_DIR}")
    macro = rootfs / RPM_MACRO_FILE
    macro.parent.mkdir(parents=True, exist_ok=True)
    macro.write_text(f"%_dbpath /{RPMDB_DIR}\n", encoding="utf-8")
    os.chmod(macro, 0o644)


def _place_kernel(treefile: Treefile, rootfs: Path, layout: TreeLayout) -> None:
    """Kernel + initramfs into /usr/lib/modules/$kver/; /boot is left empty."""
    modules = rootfs / "usr/lib/modules"
    boot = rootfs / "boot"
    if boot.is_dir():
        for kernel in sorted(boot.glob("vmlinuz-*")):
            kver = kernel.name.removeprefix("vmlinuz-")
            if "rescue" in kver:
                continue
            (modules / kver).mkdir(parents=True, exist_ok=True)
            if not (modules / kver / "vmlinuz").exists():
                os.rename(kernel, modules / kver / "vmlinuz")
            initramfs = boot / f"initramfs-{kver}.img"
            if initramfs.exists() and not (modules / kver / "initramfs.img").exists():
                os.rename(initramfs, modules / kver / "initramfs.img")
        for entry in boot.iterdir():
            _remove_tree(entry)
    else:
        boot.mkdir(mode=0o755)
    kernels = sorted(p.parent.name for p in modules.glob("*/vmlinuz")) if modules.is_dir() \
        else []
    if len(kernels) > 1:
        raise ComposeError(f"{treefile.path}: packages: more than one kernel installed "
                           f"({', '.join(kernels)}); an OSTree commit boots exactly one")
    if not kernels:
        log.warning("dnf: no kernel in /usr/lib/modules/*/vmlinuz: the commit will not boot")
        return
    kver = kernels[0]
    layout.kernel_version = kver
    layout.has_initramfs = (modules / kver / "initramfs.img").is_file()
    if not layout.has_initramfs:
        log.warning("dnf: no initramfs.img for kernel %s (this engine does not run dracut)",
                    kver)
    if treefile.data.get("boot-location") == "new":
        # The older layout: copies under /usr/lib/ostree-boot as well.
        ostree_boot = rootfs / "usr/lib/ostree-boot"
        ostree_boot.mkdir(parents=True, exist_ok=True)
        shutil.copy2(modules / kver / "vmlinuz", ostree_boot / f"vmlinuz-{kver}")
        if layout.has_initramfs:
            shutil.copy2(modules / kver / "initramfs.img", ostree_boot / f"initramfs-{kver}.img")


def _enable_units(treefile: Treefile, rootfs: Path) -> None:
    """``units``: links in /usr/etc/systemd/system/multi-user.target.wants/."""
    units = treefile.data.get("units") or []
    wants = rootfs / "usr/etc/systemd/system/multi-user.target.wants"
    for unit in units:
        template = re.sub(r"@[^.]+\.", "@.", unit)
        unit_dirs = ("usr/lib/systemd/system", "usr/etc/systemd/system")
        candidates = [rootfs / d / name for d in unit_dirs for name in {unit, template}]
        if not any(c.exists() or c.is_symlink() for c in candidates):
            raise ComposeError(
                f"{treefile.path}: units: {unit!r} is not installed by any package "
                "(looked in /usr/lib/systemd/system and /etc/systemd/system)"
            )
        wants.mkdir(parents=True, exist_ok=True)
        if not (wants / unit).is_symlink():
            _symlink(wants / unit, f"/usr/lib/systemd/system/{unit}")


def _remove_files(treefile: Treefile, rootfs: Path) -> None:
    for name in treefile.data.get("remove-files") or []:
        if name.startswith("/") or ".." in name.split("/"):
            raise ComposeError(f"{treefile.path}: remove-files: expected a relative path "
                               f"without '..', got {name!r}")
        if name == "etc" or name.startswith("etc/"):
            name = f"usr/{name}"
        _remove_tree(rootfs / name)


def _add_files(treefile: Treefile, rootfs: Path) -> None:
    entries = treefile.data.get("add-files") or []
    sources = treefile.externals.get("add-files") or []
    for index, entry in enumerate(entries):
        dest = str(entry[1]) if isinstance(entry, list | tuple) and len(entry) == 2 else ""
        rel = dest.lstrip("/")
        if not rel or ".." in rel.split("/") or index >= len(sources):
            raise ComposeError(f"{treefile.path}: add-files[{index}]: expected [SOURCE, "
                               f"/DESTINATION], got {entry!r}")
        if rel == "etc" or rel.startswith("etc/"):
            rel = f"usr/{rel}"
        target = rootfs / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sources[index], target)


def _mutate_os_release(treefile: Treefile, rootfs: Path, version: str | None) -> None:
    """``mutate-os-release``: BASE -> version in VERSION= and PRETTY_NAME=, + OSTREE_VERSION."""
    base = treefile.data.get("mutate-os-release")
    if not base or not version:
        return
    path = rootfs / "usr/lib/os-release"
    etc_path = rootfs / "usr/etc/os-release"
    if not path.is_file() or path.is_symlink():
        path = etc_path
    if not path.is_file():
        raise ComposeError(f"{treefile.path}: mutate-os-release: the tree has no os-release")
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line:
            continue
        if line.startswith(("VERSION=", "PRETTY_NAME=")):
            key, _, rest = line.partition("=")
            line = f"{key}={rest.replace(str(base), version)}"
        lines.append(line)
    lines.append(f"OSTREE_VERSION='{version}'")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _var_to_tmpfiles(rootfs: Path) -> list[str]:
    """/var's directories and symlinks become tmpfiles.d lines; /var is left empty."""
    var = rootfs / "var"
    users = _id_names(rootfs / "usr/etc/passwd")
    groups = _id_names(rootfs / "usr/etc/group")
    entries: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(var):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            info = path.lstat()
            rel = "/" + str(path.relative_to(rootfs))
            if stat.S_ISLNK(info.st_mode):
                entries.add(f"L {rel} - - - - {os.readlink(path)}")
            elif stat.S_ISDIR(info.st_mode):
                mode = stat.S_IMODE(info.st_mode)
                user = users.get(info.st_uid, str(info.st_uid))
                group = groups.get(info.st_gid, str(info.st_gid))
                entries.add(f"d {rel} {mode:04o} {user} {group} - -")
            else:
                log.warning("dnf: dropping %s: only directories and symlinks may be in /var", rel)
    for entry in list(var.iterdir()):
        _remove_tree(entry)
    lines = sorted(entries)
    conf = rootfs / TMPFILES_CONF
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    os.chmod(conf, 0o644)
    return lines


def _id_names(path: Path) -> dict[int, str]:
    names: dict[int, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[2].isdigit():
                names.setdefault(int(fields[2]), fields[0])
    return names


def _symlink(path: Path, target: str) -> None:
    if path.is_symlink() or path.exists():
        _remove_tree(path)
    path.symlink_to(target)


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


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
    (rpm_ostree_db_diff_variant: modified first, then removed, then added).
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
    return entries
