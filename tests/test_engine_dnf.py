# SPDX-License-Identifier: GPL-2.0-or-later
"""The dnf compose engine's parts: treefile checks, versions, rpmdb, reshaping, runner."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from runnertools import MappedRunner

from koji_hostimage.compose.base import ComposeRequest
from koji_hostimage.compose.dnf import (
    PKGDIFF_ADDED,
    PKGDIFF_DOWNGRADED,
    PKGDIFF_REMOVED,
    PKGDIFF_UPGRADED,
    DnfEngine,
    check_treefile,
    dnf_argv,
    fold_rpmdb_wal,
    pkgdiff_entries,
)
from koji_hostimage.compose.rpmdb import (
    PKGLIST_KEY,
    packages_from_commit_metadata,
    packages_from_pkglist,
    packages_in_commit,
    pkglist_metadata,
)
from koji_hostimage.errors import ComposeError
from koji_hostimage.example.content import ExampleContent, ExtraPackage, build_example_content
from koji_hostimage.manifest import Package
from koji_hostimage.ostree.repo import OSTreeRepo
from koji_hostimage.treefile.load import Treefile, load_treefile


def treefile_with(tmp_path: Path, **data: object) -> Treefile:
    base = {"ref": "t/x86_64/os", "packages": ["p"]}
    # Python names use "_" for the treefile's "-"; names already spelled with "-" stay.
    base.update({k if "-" in k else k.replace("_", "-"): v for k, v in data.items()})
    return Treefile(path=tmp_path / "t.yaml", basearch="x86_64", data=base)


@pytest.mark.parametrize(
    "key, value",
    [
        ("postprocess-script", "post.sh"),
        ("postprocess", ["#!/bin/sh\ntrue"]),
        ("initramfs-args", ["--no-hostonly"]),
        ("check-passwd", {"type": "file"}),
        ("machineid-compat", False),
    ],
)
def test_refuses_keys_it_cannot_honour_by_name(tmp_path: Path, key: str, value: object) -> None:
    treefile = treefile_with(tmp_path, **{key: value})
    with pytest.raises(ComposeError) as excinfo:
        check_treefile(treefile)
    message = str(excinfo.value)
    assert str(treefile.path) in message and key in message
    assert "rpm-ostree" in message


def test_refusal_lists_every_key_and_checks_values(tmp_path: Path) -> None:
    with pytest.raises(ComposeError, match="initramfs-args, postprocess: .* these keys"):
        check_treefile(treefile_with(tmp_path, initramfs_args=["x"], postprocess=["x"]))
    with pytest.raises(ComposeError, match="boot-location: .*'kernel-install'"):
        check_treefile(treefile_with(tmp_path, boot_location="kernel-install"))
    with pytest.raises(ComposeError, match="documentation: expected true or false"):
        check_treefile(treefile_with(tmp_path, documentation="no"))
    with pytest.raises(ComposeError, match="packages: expected at least one"):
        check_treefile(treefile_with(tmp_path, packages=[]))
    check_treefile(treefile_with(tmp_path, units=["a.service"], boot_location="modules",
                                 documentation=False, **{"packages-x86_64": ["k"]}))


def test_dnf_argv_honours_treefile_options(tmp_path: Path) -> None:
    treefile = treefile_with(tmp_path, releasever=40, exclude_packages=["bad", "worse"],
                             documentation=False, recommends=True, packages=["a", "b"])
    argv = dnf_argv(treefile, "/c/dnf.conf", "/r", "/c/repos.d", "/c/cache", "/c/log")
    assert argv[:4] == ["dnf", "--config=/c/dnf.conf", "--installroot=/r", "--releasever=40"]
    for expected in ("--setopt=reposdir=/c/repos.d", "--setopt=cachedir=/c/cache",
                     "--setopt=install_weak_deps=True", "--setopt=tsflags=nodocs",
                     "--exclude=bad", "--exclude=worse", "--noplugins", "--assumeyes"):
        assert expected in argv
    assert argv[-3:] == ["install", "a", "b"]
    plain = dnf_argv(treefile_with(tmp_path), "c", "r", "d", "e", "f")
    # rpm-ostree's defaults: recommends true, documentation true; GPG as the repos say
    assert "--setopt=install_weak_deps=True" in plain and "--setopt=tsflags=nodocs" not in plain
    assert "--nogpgcheck" not in plain
    off = dnf_argv(treefile_with(tmp_path, recommends=False), "c", "r", "d", "e", "f")
    assert "--setopt=install_weak_deps=False" in off


def test_pkgdiff_entries_have_rpm_ostree_shape() -> None:
    old = [Package("a", None, "1", "1", "noarch"), Package("b", None, "2", "1", "x86_64"),
           Package("gone", 1, "1", "1", "noarch")]
    new = [Package("a", None, "1.1", "1", "noarch"), Package("b", None, "1", "1", "x86_64"),
           Package("new", None, "3", "1", "noarch")]
    # rpm-ostree's order (rpm_ostree_db_diff_variant_compare_by_type): by type (added,
    # removed, upgraded, downgraded), then by name in byte order ("Zz" before "a")
    old.append(Package("Zz", None, "1", "1", "noarch"))
    new += [Package("Zz", None, "2", "1", "noarch"), Package("Added", None, "1", "1", "noarch")]
    assert pkgdiff_entries(old, new) == [
        ["Added", PKGDIFF_ADDED, {"NewPackage": ["Added", "1-1", "noarch"]}],
        ["new", PKGDIFF_ADDED, {"NewPackage": ["new", "3-1", "noarch"]}],
        ["gone", PKGDIFF_REMOVED, {"PreviousPackage": ["gone", "1:1-1", "noarch"]}],
        ["Zz", PKGDIFF_UPGRADED, {"PreviousPackage": ["Zz", "1-1", "noarch"],
                                  "NewPackage": ["Zz", "2-1", "noarch"]}],
        ["a", PKGDIFF_UPGRADED, {"PreviousPackage": ["a", "1-1", "noarch"],
                                 "NewPackage": ["a", "1.1-1", "noarch"]}],
        ["b", PKGDIFF_DOWNGRADED, {"PreviousPackage": ["b", "2-1", "x86_64"],
                                   "NewPackage": ["b", "1-1", "x86_64"]}],
    ]
    assert (PKGDIFF_ADDED, PKGDIFF_REMOVED, PKGDIFF_UPGRADED, PKGDIFF_DOWNGRADED) == (0, 1, 2, 3)


def test_fold_rpmdb_wal_keeps_data_and_drops_side_files(tmp_path: Path) -> None:
    database = tmp_path / "rpmdb.sqlite"
    # A writer that exits without closing (as a killed rpm would) leaves its data in the WAL.
    writer = (
        "import os, sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1])\n"
        "db.execute('PRAGMA journal_mode=WAL')\n"
        "db.execute('PRAGMA wal_autocheckpoint=0')\n"
        "db.execute('CREATE TABLE t (x)')\n"
        "db.executemany('INSERT INTO t VALUES (?)', [(i,) for i in range(100)])\n"
        "db.commit()\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", writer, str(database)], check=True)
    assert (tmp_path / "rpmdb.sqlite-wal").stat().st_size > 0
    (tmp_path / ".rpm.lock").touch()
    (tmp_path / "__db.001").touch()
    fold_rpmdb_wal(tmp_path)
    for name in ("rpmdb.sqlite-wal", "rpmdb.sqlite-shm", ".rpm.lock", "__db.001"):
        assert not (tmp_path / name).exists(), name
    reader = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 100
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    reader.close()


def test_pkglist_metadata_round_trip(tmp_path: Path) -> None:
    packages = [Package("z", 2, "1.0", "3.fc40", "x86_64"),
                Package("a'q", None, "1", "1", "noarch")]
    repo = OSTreeRepo(tmp_path / "repo").init()
    (tmp_path / "tree/usr").mkdir(parents=True)
    commit = repo.commit(tmp_path / "tree", "r",
                         metadata={PKGLIST_KEY: pkglist_metadata(packages)})
    raw = repo.metadata(commit.commit)[PKGLIST_KEY]
    assert raw == [("a'q", "0", "1", "1", "noarch"), ("z", "2", "1.0", "3.fc40", "x86_64")]
    assert packages_from_commit_metadata(repo, commit.commit) == sorted(packages)
    empty = repo.commit(tmp_path / "tree", "e", metadata={PKGLIST_KEY: pkglist_metadata([])})
    assert packages_from_commit_metadata(repo, empty.commit) == []
    assert packages_from_commit_metadata(repo, repo.commit(tmp_path / "tree", "n").commit) is None
    with pytest.raises(Exception, match=r"\[0\]: expected \(name, epoch"):
        packages_from_pkglist([("only", "two")])


def test_tree_layout_of_a_composed_commit(composed_v1) -> None:  # noqa: ANN001
    """The commit looks like rpm-ostree's: /usr/etc, empty /var, links, kernel, units."""
    repo = OSTreeRepo(composed_v1.repo)
    entries = {e.path: e for e in repo.ls(composed_v1.commit, "/", recursive=True)}
    assert "/etc" not in entries and entries["/usr/etc"].type == "d"
    assert [p for p in entries if p.startswith("/var/")] == []
    links = {p: e.target for p, e in entries.items() if e.type == "l" and p.count("/") == 1}
    assert links == {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib",
                     "/home": "var/home", "/root": "var/roothome", "/opt": "var/opt",
                     "/srv": "var/srv", "/mnt": "var/mnt", "/media": "run/media",
                     "/ostree": "sysroot/ostree", "/tmp": "sysroot/tmp"}
    for directory in ("/dev", "/proc", "/run", "/sys", "/sysroot", "/boot"):
        assert entries[directory].type == "d"
    assert not [p for p in entries if p.startswith("/boot/")]
    assert entries["/usr/share/doc/host-filesystem.txt"].type == "-"  # %doc kept by default
    assert entries["/usr/lib/modules/6.1.0-example/vmlinuz"].type == "-"
    assert entries["/usr/lib/modules/6.1.0-example/initramfs.img"].type == "-"
    unit = "/usr/etc/systemd/system/multi-user.target.wants/host-agent.service"
    assert entries[unit].target == "/usr/lib/systemd/system/host-agent.service"
    assert entries["/usr/lib/sysimage/rpm"].target == "../../share/rpm"
    rpmdb = {p.rsplit("/", 1)[1] for p in entries if p.startswith("/usr/share/rpm/")}
    assert "rpmdb.sqlite" in rpmdb and not rpmdb & {"rpmdb.sqlite-wal", "rpmdb.sqlite-shm",
                                                    ".rpm.lock"}
    tmpfiles = repo.cat(composed_v1.commit, "/usr/lib/tmpfiles.d/koji-hostimage-autovar.conf")
    assert "d /var/lib/host-agent 0755 root root - -" in tmpfiles.splitlines()
    assert "L /var/lib/rpm - - - - ../../usr/share/rpm" in tmpfiles.splitlines()
    assert repo.cat(composed_v1.commit, "/usr/lib/rpm/macros.d/macros.rpm-ostree") == \
        "%_dbpath /usr/share/rpm\n"
    metadata = repo.metadata(composed_v1.commit)
    assert metadata["ostree.bootable"] is True and metadata["ostree.linux"] == "6.1.0-example"
    assert metadata["example.origin"] == "koji-hostimage examples"  # add-commit-metadata


def test_commit_pkglist_matches_the_trees_rpmdb(composed_v1) -> None:  # noqa: ANN001
    repo = OSTreeRepo(composed_v1.repo)
    from_rpmdb = packages_in_commit(repo, composed_v1.commit)
    assert [p.nevra for p in from_rpmdb] == composed_v1.content.nevras
    assert packages_from_commit_metadata(repo, composed_v1.commit) == from_rpmdb


def compose(content: ExampleContent, base: Path, runner=None, **request):  # noqa: ANN001, ANN201
    treefile = load_treefile(content.treefile, "x86_64")
    engine = DnfEngine(runner)
    return engine.compose(ComposeRequest(treefile=treefile, repo=base / "repo",
                                         workdir=base / "work", **request))


def test_exclude_packages_is_honoured(tmp_path: Path, example_content: ExampleContent) -> None:
    treefile_path = tmp_path / "host.yaml"
    treefile_path.write_text(example_content.treefile.read_text()
                             + "exclude-packages:\n  - greet-lib\n")
    (tmp_path / "example.repo").write_text(example_content.repo_file.read_text())
    treefile = load_treefile(treefile_path, "x86_64")
    with pytest.raises(ComposeError) as excinfo:
        DnfEngine().compose(ComposeRequest(treefile=treefile, repo=tmp_path / "repo",
                                           workdir=tmp_path / "work"))
    assert "dnf failed" in str(excinfo.value) and "greet-lib" in str(excinfo.value)
    assert not OSTreeRepo(tmp_path / "repo").refs()  # nothing committed


def test_kernel_from_boot_moves_to_usr_lib_modules(tmp_path: Path) -> None:
    """A traditional /boot/vmlinuz-KVER kernel ends up where ostree admin deploy looks."""
    kernel = ExtraPackage(
        "boot-kernel", files={"/boot/vmlinuz-5.0.0-t": "kernel\n",
                              "/boot/initramfs-5.0.0-t.img": "initrd\n"},
    )
    content = build_example_content(tmp_path / "content", extra_specs=[kernel],
                                    omit=["host-kernel", "host-agent"])
    result = compose(content, tmp_path)
    repo = OSTreeRepo(tmp_path / "repo")
    paths = {e.path for e in repo.ls(result.commit, "/", recursive=True)}
    assert {"/usr/lib/modules/5.0.0-t/vmlinuz", "/usr/lib/modules/5.0.0-t/initramfs.img"} <= paths
    assert not [p for p in paths if p.startswith("/boot/")]
    assert repo.metadata(result.commit)["ostree.linux"] == "5.0.0-t"


def test_engine_passes_every_path_through_the_runner(
    tmp_path: Path, example_content: ExampleContent
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    os.symlink(host, tmp_path / "inner")
    runner = MappedRunner(host, tmp_path / "inner", strict=False)
    result = compose(example_content, host, runner=runner)
    assert result.changed
    args = [a for argv in runner.argvs for a in argv]
    args += [f"{key}={value}" for env in runner.envs for key, value in env.items()]
    assert {argv[0] for argv in runner.argvs} >= {"dnf", "ostree", "rpm"}
    assert any(str(tmp_path / "inner" / "work") in a for a in args)
    assert not [a for a in args if str(host) in a]


def test_honoured_treefile_keys_shape_the_tree(
    tmp_path: Path, example_content: ExampleContent
) -> None:
    """add-files, remove-files, mutate-os-release, default-target, tmp-is-dir, recommends."""
    (tmp_path / "motd").write_text("welcome\n")
    (tmp_path / "example.repo").write_text(example_content.repo_file.read_text())
    (tmp_path / "host.yaml").write_text(
        example_content.treefile.read_text()
        + "add-files:\n  - [motd, /etc/motd]\n  - [motd, /usr/share/motd]\n"
        + "remove-files:\n  - usr/share/greet-lib\n  - etc/host-agent.conf\n"
        + "mutate-os-release: '1'\n"
        + "default-target: multi-user.target\n"
        + "tmp-is-dir: true\n"
        + "recommends: false\n"
        + "documentation: false\n"
    )
    treefile = load_treefile(tmp_path / "host.yaml", "x86_64")
    result = DnfEngine().compose(ComposeRequest(treefile=treefile, repo=tmp_path / "repo",
                                                workdir=tmp_path / "work", version="7.7"))
    repo = OSTreeRepo(tmp_path / "repo")
    entries = {e.path: e for e in repo.ls(result.commit, "/", recursive=True)}
    assert repo.cat(result.commit, "/usr/etc/motd") == "welcome\n"
    assert repo.cat(result.commit, "/usr/share/motd") == "welcome\n"
    assert "/usr/share/doc/host-filesystem.txt" not in entries  # %doc: documentation: false
    assert "/usr/share/greet-lib" not in entries and "/usr/bin/greeter" in entries
    assert "/usr/etc/host-agent.conf" not in entries
    os_release = repo.cat(result.commit, "/usr/lib/os-release")
    assert 'PRETTY_NAME="Example Host 7.7"' in os_release
    assert "OSTREE_VERSION='7.7'" in os_release
    assert "VERSION_ID=1\n" in os_release  # only VERSION= and PRETTY_NAME= change
    assert entries["/usr/lib/systemd/system/default.target"].target == \
        "/usr/lib/systemd/system/multi-user.target"
    assert entries["/tmp"].type == "d" and entries["/tmp"].mode & 0o7777 == 0o1777


def test_variables_in_ref_and_conditional_include_compose(
    tmp_path: Path, example_content: ExampleContent
) -> None:
    """Issue 12: the commit lands on the expanded ref; a conditional-include file is merged
    (its unit enabled) and a false one is not read; boot-location defaults to new."""
    text = example_content.treefile.read_text().replace(
        "ref: example/${basearch}/host", "ref: example/${basearch}/${stream}")
    text = text.replace("units:\n  - host-agent.service\n", "")
    (tmp_path / "host.yaml").write_text(
        text + "variables:\n  stream: stable\n  prod: true\n"
        "conditional-include:\n"
        "  - if: [basearch == \"x86_64\", prod == true]\n    include: agent.yaml\n"
        "  - if: releasever == \"2\"\n    include: missing.yaml\n")
    (tmp_path / "agent.yaml").write_text("units: [host-agent.service]\n")
    (tmp_path / "example.repo").write_text(example_content.repo_file.read_text())
    treefile = load_treefile(tmp_path / "host.yaml", "x86_64")
    assert treefile.ref == "example/x86_64/stable"
    result = DnfEngine().compose(ComposeRequest(treefile=treefile, repo=tmp_path / "repo",
                                                workdir=tmp_path / "work"))
    repo = OSTreeRepo(tmp_path / "repo")
    assert result.ref == "example/x86_64/stable"
    assert repo.rev_parse("example/x86_64/stable") == result.commit
    wants = "/usr/etc/systemd/system/multi-user.target.wants/host-agent.service"
    subprocess.run(["ostree", f"--repo={tmp_path / 'repo'}", "ls", result.commit, wants],
                   check=True, capture_output=True)
    listing = subprocess.run(["ostree", f"--repo={tmp_path / 'repo'}", "ls", result.commit,
                              "/usr/lib/ostree-boot"], capture_output=True, text=True)
    assert listing.returncode == 0 and "vmlinuz-" in listing.stdout  # boot-location: new


def test_selinux_policy_in_tree_and_finalize_d_are_refused_by_name(tmp_path: Path) -> None:
    content = build_example_content(tmp_path / "c", extra_specs=[ExtraPackage(
        name="selinux-policy-x", files={"/etc/selinux/config": "SELINUXTYPE=targeted\n"})])
    with pytest.raises(ComposeError, match="selinux: true .*cannot label"):
        compose(content, tmp_path)
    treefile = load_treefile(content.treefile, "x86_64")
    treefile.externals["finalize.d"] = {"10-x": tmp_path / "10-x"}
    with pytest.raises(ComposeError, match=r"finalize.d \(10-x\): the dnf engine"):
        check_treefile(treefile)
