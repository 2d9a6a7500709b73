# SPDX-License-Identifier: GPL-2.0-or-later
"""Reshape an installed root into an OSTree-shaped tree (the dnf engine's step 2).

``reshape_for_ostree`` does what rpm-ostree's ``rust/src/composepost.rs`` does:
``compose_prepare_rootfs`` / ``compose_init_rootfs`` (keep /usr, /boot, /var and the
/bin, /lib ... compat links; make /dev /proc /run /sys /var /sysroot and the
/home -> var/home, /root -> var/roothome, /opt, /srv, /mnt, /ostree, /tmp links),
``compose_postprocess`` (/etc -> /usr/etc), ``compose_postprocess_rpmdb`` (/var/lib/rpm
-> ../../usr/share/rpm), ``postprocess_rpm_macro`` (macros.rpm-ostree),
``compose_postprocess_units``, ``compose_postprocess_default_target``,
``compose_postprocess_remove_files``, ``compose_postprocess_add_files``,
``compose_postprocess_mutate_os_release`` and ``var_to_tmpfiles`` (/var becomes
tmpfiles.d entries; files in it are dropped). The kernel ends up as
``/usr/lib/modules/$kver/{vmlinuz,initramfs.img}``, the layout ``ostree admin deploy``
looks for first.

Reshaping is plain Python on host paths: no command runs here.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from koji_hostimage.errors import ComposeError
from koji_hostimage.treefile.keys import effective
from koji_hostimage.treefile.load import Treefile

from .rpmdb import RPMDB_DIR

log = logging.getLogger(__name__)

TMPFILES_CONF = "usr/lib/tmpfiles.d/koji-hostimage-autovar.conf"
RPM_MACRO_FILE = "usr/lib/rpm/macros.d/macros.rpm-ostree"

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


def reshape_for_ostree(
    treefile: Treefile, install_root: Path, rootfs: Path, version: str | None = None
) -> TreeLayout:
    """Turn the dnf install root into an OSTree-shaped tree at ``rootfs``."""
    layout = TreeLayout()
    if not (install_root / "usr").is_dir():
        raise ComposeError(f"{treefile.path}: packages: the installed tree has no /usr")
    for leftover in _DNF_LEFTOVERS:
        remove_tree(install_root / leftover)
    _prepare_rootfs(install_root, rootfs, layout)
    _init_rootfs(rootfs, tmp_is_dir=bool(effective(treefile.data, "tmp-is-dir")))
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
    remove_tree(install_root)
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
    remove_tree(var_lib_rpm)
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
            remove_tree(entry)
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
    if effective(treefile.data, "boot-location") == "new":
        # rpm-ostree's default (BootLocation::New): kernel data goes in
        # /usr/lib/ostree-boot in addition to /usr/lib/modules (docs/treefile.md).
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
        remove_tree(rootfs / name)


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
        remove_tree(entry)
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
        remove_tree(path)
    path.symlink_to(target)


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
