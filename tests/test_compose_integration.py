# SPDX-License-Identifier: GPL-2.0-or-later
"""End to end: example RPMs (rpmbuild, createrepo_c) -> dnf engine -> commit -> deploy."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from koji_hostimage.commands.main import main
from koji_hostimage.compose.base import ComposeRequest
from koji_hostimage.compose.dnf import INPUTHASH_KEY, DnfEngine
from koji_hostimage.compose.rpmdb import PKGLIST_KEY, packages_in_commit
from koji_hostimage.errors import ComposeError
from koji_hostimage.example.content import (
    EXAMPLE_PACKAGES,
    ExampleContent,
    ExampleContentError,
    ExtraPackage,
    build_example_content,
)
from koji_hostimage.ostree.repo import OSTreeRepo
from koji_hostimage.runner import HostRunner, run_checked
from koji_hostimage.treefile.inputs import input_hash
from koji_hostimage.treefile.load import load_treefile
from koji_hostimage.treefile.repos import resolve_repos

ARCH = "x86_64"


def compose(content: ExampleContent, repo: Path, workdir: Path, **request):  # noqa: ANN003, ANN201
    treefile = load_treefile(content.treefile, ARCH)
    return DnfEngine().compose(ComposeRequest(treefile=treefile, repo=repo, workdir=workdir,
                                              **request))


def copy_repo(source: Path, dest: Path) -> OSTreeRepo:
    """A private bare-user copy of a work repo (shared fixtures stay untouched)."""
    repo = OSTreeRepo(dest).init("bare-user")
    repo.pull_local(source, OSTreeRepo(source).refs())
    return repo


def test_example_content(example_content: ExampleContent) -> None:
    names = sorted(n.rsplit("-", 2)[0] for n in example_content.nevras)
    assert names == sorted(EXAMPLE_PACKAGES)
    assert "greeter-1.0-1.noarch" in example_content.nevras
    assert (example_content.repo_dir / "repodata/repomd.xml").is_file()
    assert f"baseurl={example_content.repo_dir.as_uri()}" in example_content.repo_file.read_text()
    assert example_content.treefile.parent == example_content.repo_file.parent
    treefile = load_treefile(example_content.treefile, ARCH)
    assert treefile.ref == "example/x86_64/host"
    assert [r.baseurl for r in resolve_repos(treefile)] == [example_content.baseurl]
    requires = run_checked(["rpm", "-qp", "--requires",
                            str(example_content.repo_dir / "greeter-1.0-1.noarch.rpm")])
    assert "greet-lib(api) = 1" in requires


def test_example_content_is_reproducible_and_parametric(
    tmp_path: Path, example_content: ExampleContent
) -> None:
    again = build_example_content(tmp_path / "again")
    repomd = "repodata/repomd.xml"
    assert (again.repo_dir / repomd).read_bytes() == \
        (example_content.repo_dir / repomd).read_bytes()
    changed = build_example_content(
        tmp_path / "changed",
        version_overrides={"greet-lib": "1.5-2"},
        extra_specs=[ExtraPackage("extra-tool", "0.1", files={"/usr/share/extra/x": "x\n"})],
        omit=["host-agent"],
    )
    assert "greet-lib-1.5-2.noarch" in changed.nevras
    assert "extra-tool-0.1-1.noarch" in changed.nevras
    assert not [n for n in changed.nevras if n.startswith("host-agent-")]
    treefile = load_treefile(changed.treefile, ARCH)
    assert "extra-tool" in treefile.packages and "host-agent" not in treefile.packages
    assert "units" not in treefile.data  # host-agent's unit went with it
    with pytest.raises(ExampleContentError, match="version_overrides: 'nope'"):
        build_example_content(tmp_path / "bad", version_overrides={"nope": "1"})
    with pytest.raises(ExampleContentError, match="expected VERSION or VERSION-RELEASE"):
        build_example_content(tmp_path / "bad", version_overrides={"greeter": "1 2"})
    with pytest.raises(ExampleContentError, match="files: expected a plain absolute path"):
        build_example_content(tmp_path / "bad",
                              extra_specs=[ExtraPackage("x", files={"../etc": "x"})])


def test_commit_metadata_fsck_and_compose_json(composed_v1, example_content) -> None:  # noqa: ANN001
    repo = OSTreeRepo(composed_v1.repo)
    info = repo.show(composed_v1.commit)
    treefile = load_treefile(example_content.treefile, ARCH)
    assert info.version == "1.0"  # automatic-version-prefix, no previous commit
    assert info.metadata[INPUTHASH_KEY] == input_hash(treefile, resolve_repos(treefile))
    listed = [f"{n}-{v}-{r}.{a}" for n, _e, v, r, a in info.metadata[PKGLIST_KEY]]
    assert listed == example_content.nevras
    assert [p.nevra for p in packages_in_commit(repo, composed_v1.commit)] == listed
    assert "no errors" in repo.fsck()
    data = json.loads(composed_v1.result.compose_json_path.read_text())
    assert data == composed_v1.result.compose_json
    assert data["ref"] == "example/x86_64/host"
    assert data["ostree-commit"] == composed_v1.commit
    assert data["ostree-content-checksum"] == info.content_checksum
    assert data["ostree-version"] == "1.0"
    assert data["rpm-ostree-inputhash"] == info.metadata[INPUTHASH_KEY]
    assert data["ostree-n-content-total"] > 10 and data["ostree-content-bytes-written"] > 0
    assert data["ostree-timestamp"].endswith("Z") and "pkgdiff" not in data


@pytest.fixture
def sysroot(tmp_path: Path):  # noqa: ANN201
    """An empty sysroot; deployments are undeployed afterwards.

    ``ostree admin deploy`` makes each deployment root immutable (chattr +i), which no
    plain ``rm -r`` can remove; ``ostree admin undeploy`` clears that flag.
    """
    path = tmp_path / "sysroot"
    path.mkdir()
    yield path
    deployments = path / "ostree/deploy"
    for _ in list(deployments.glob("*/deploy/*.0")):
        HostRunner().run(["ostree", "admin", "undeploy", f"--sysroot={path}", "0"])
    for leftover in deployments.glob("*/deploy/*.0"):
        HostRunner().run(["chattr", "-i", str(leftover)])


def test_deploys_with_ostree_admin(sysroot: Path, composed_v1) -> None:  # noqa: ANN001
    run_checked(["ostree", "admin", "init-fs", str(sysroot)])
    run_checked(["ostree", "admin", "os-init", f"--sysroot={sysroot}", "example"])
    OSTreeRepo(sysroot / "ostree/repo").pull_local(composed_v1.repo, [composed_v1.ref])
    run_checked(["ostree", "admin", "deploy", f"--sysroot={sysroot}", "--os=example",
                 composed_v1.ref])
    deployment = sysroot / f"ostree/deploy/example/deploy/{composed_v1.commit}.0"
    os_release = (deployment / "usr/etc/os-release").read_text()
    assert 'NAME="Example Host"' in os_release and "VERSION_ID=1\n" in os_release
    assert (deployment / "etc/os-release").read_text() == os_release  # /etc merged from /usr/etc
    wants = deployment / "etc/systemd/system/multi-user.target.wants/host-agent.service"
    assert str(wants.readlink()) == "/usr/lib/systemd/system/host-agent.service"
    assert (deployment / "usr/lib/systemd/system/host-agent.service").is_file()
    kernels = list((sysroot / "boot/ostree").glob("example-*/vmlinuz-6.1.0-example"))
    assert len(kernels) == 1 and kernels[0].read_text() == "example kernel image 6.1.0-example\n"
    entries = list((sysroot / "boot/loader/entries").glob("*.conf"))
    assert len(entries) == 1 and "version 1" in entries[0].read_text()
    status = run_checked(["ostree", "admin", "status", f"--sysroot={sysroot}"])
    assert composed_v1.commit in status and "Version: 1.0" in status


def test_same_inputs_make_no_new_commit(tmp_path: Path, composed_v1) -> None:  # noqa: ANN001
    repo = copy_repo(composed_v1.repo, tmp_path / "repo")
    result = compose(composed_v1.content, repo.path, tmp_path / "work")
    assert not result.changed and result.commit == composed_v1.commit
    assert not (tmp_path / "work/compose.json").exists()
    assert repo.rev_parse(composed_v1.ref) == composed_v1.commit
    forced = compose(composed_v1.content, repo.path, tmp_path / "work", force_nocache=True)
    assert forced.changed and forced.commit != composed_v1.commit
    forced_info = repo.show(forced.commit)
    assert forced_info.parent == composed_v1.commit and forced_info.version == "1.0.1"
    assert forced_info.metadata[INPUTHASH_KEY] == repo.metadata(composed_v1.commit)[INPUTHASH_KEY]


def test_update_changes_hash_version_and_pkgdiff(
    tmp_path: Path, composed_v1, example_content_v2: ExampleContent  # noqa: ANN001
) -> None:
    repo = copy_repo(composed_v1.repo, tmp_path / "repo")
    result = compose(example_content_v2, repo.path, tmp_path / "work")
    assert result.changed
    info = repo.show(result.commit)
    old_hash = repo.metadata(composed_v1.commit)[INPUTHASH_KEY]
    assert info.metadata[INPUTHASH_KEY] != old_hash  # one package's repo changed
    assert info.parent == composed_v1.commit and info.version == "1.0.1"
    assert result.compose_json["pkgdiff"] == [
        ["greeter", 2, {"PreviousPackage": ["greeter", "1.0-1", "noarch"],
                        "NewPackage": ["greeter", "1.1-1", "noarch"]}],
        ["host-release", 2, {"PreviousPackage": ["host-release", "1-1", "noarch"],
                             "NewPackage": ["host-release", "2-1", "noarch"]}],
    ]
    assert "VERSION_ID=2" in repo.cat(result.commit, "/usr/lib/os-release")
    assert "greeter 1.1" in repo.cat(result.commit, "/usr/bin/greeter")
    explicit = compose(example_content_v2, repo.path, tmp_path / "work", version="9.9",
                       force_nocache=True)
    assert repo.show(explicit.commit).version == "9.9"


def test_added_and_removed_packages_show_in_pkgdiff(
    tmp_path: Path, composed_v1  # noqa: ANN001
) -> None:
    content = build_example_content(
        tmp_path / "v3",
        extra_specs=[ExtraPackage("host-extra", files={"/usr/share/extra/readme": "hi\n"})],
        omit=["greeter", "greet-lib"],
    )
    repo = copy_repo(composed_v1.repo, tmp_path / "repo")
    result = compose(content, repo.path, tmp_path / "work")
    diff = {(name, kind) for name, kind, _ in result.compose_json["pkgdiff"]}
    assert diff == {("greeter", 1), ("greet-lib", 1), ("host-extra", 0)}
    paths = {e.path for e in repo.ls(result.commit, "/usr", recursive=True)}
    assert "/usr/share/extra/readme" in paths and "/usr/bin/greeter" not in paths


def test_cli_compose_json_and_stage_lines(
    tmp_path: Path, example_content: ExampleContent, capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    argv = ["compose", str(example_content.treefile), "--repo", str(tmp_path / "repo"),
            "--engine", "dnf", "--arch", ARCH, "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changed"] is True and data["engine"] == "dnf"
    assert data["commit"] == OSTreeRepo(tmp_path / "repo").rev_parse("example/x86_64/host")
    assert data["compose_json"]["ostree-commit"] == data["commit"]
    messages = [r.getMessage() for r in caplog.records]
    for stage in ("compose: loading", "dnf: input hash", "dnf: installed 6 packages",
                  "dnf: reshaped tree", "dnf: committed", "compose: example/x86_64/host =>"):
        assert any(m.startswith(stage) for m in messages), stage
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False


def test_cli_refuses_unhonoured_keys_by_name(
    tmp_path: Path, example_content: ExampleContent, caplog: pytest.LogCaptureFixture
) -> None:
    treefile = tmp_path / "host.yaml"
    treefile.write_text(example_content.treefile.read_text() + "postprocess-script: post.sh\n")
    (tmp_path / "post.sh").write_text("#!/bin/sh\n")
    (tmp_path / "example.repo").write_text(example_content.repo_file.read_text())
    code = main(["compose", str(treefile), "--repo", str(tmp_path / "repo"), "--engine", "dnf",
                 "--arch", ARCH])
    assert code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("postprocess-script" in m and "--engine rpm-ostree" in m and str(treefile) in m
               for m in errors), errors


def test_cli_compose_source_root(
    tmp_path: Path, example_content: ExampleContent, caplog: pytest.LogCaptureFixture
) -> None:
    """`compose --source-root`: hosts/x.yaml may include ../common/host.yaml only when the
    checkout is the root; without it the include is refused before the engine runs."""
    src = tmp_path / "checkout"
    (src / "common").mkdir(parents=True)
    (src / "hosts").mkdir()
    (src / "common/host.yaml").write_text(example_content.treefile.read_text())
    (src / "hosts/example.repo").write_text(example_content.repo_file.read_text())
    (src / "hosts/x.yaml").write_text("include: ../common/host.yaml\n")
    argv = ["compose", str(src / "hosts/x.yaml"), "--repo", str(tmp_path / "repo"),
            "--engine", "dnf", "--arch", ARCH]
    assert main(argv) == 1
    assert "include: expected a path inside" in caplog.text
    assert not (tmp_path / "repo").exists()
    assert main([*argv, "--source-root", str(src)]) == 0
    assert OSTreeRepo(tmp_path / "repo").rev_parse("example/x86_64/host")


def test_extra_repos_and_parent_by_ref(
    tmp_path: Path, composed_v1, example_content_v2: ExampleContent  # noqa: ANN001
) -> None:
    """An extra repo (as Koji/pungi pass them) joins the treefile's; dnf takes the newest."""
    repo = copy_repo(composed_v1.repo, tmp_path / "repo")
    result = compose(composed_v1.content, repo.path, tmp_path / "work",
                     extra_repos=[str(example_content_v2.repo_dir)], parent=composed_v1.ref)
    assert result.changed
    info = repo.show(result.commit)
    assert info.parent == composed_v1.commit  # the ref, resolved to its checksum
    names = {n: v for n, _e, v, _r, _a in info.metadata[PKGLIST_KEY]}
    assert names["greeter"] == "1.1" and names["host-release"] == "2"
    with pytest.raises(ComposeError, match="parent: 'no/such/ref' is not a commit"):
        compose(composed_v1.content, repo.path, tmp_path / "work", parent="no/such/ref")


def test_build_repo_script(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "examples/build-repo"
    output = run_checked([sys.executable, str(script), str(tmp_path / "out"),
                          "--set", "greeter=2.0-3", "--omit", "host-agent"])
    assert "greeter-2.0-3.noarch" in output and "host-agent" not in output
    assert (tmp_path / "out/repo/greeter-2.0-3.noarch.rpm").is_file()
    assert load_treefile(tmp_path / "out/host.yaml", ARCH).ref == "example/x86_64/host"
    bad = HostRunner().run([sys.executable, str(script), str(tmp_path / "bad"),
                            "--set", "nope=1"])
    assert bad.returncode == 1 and "version_overrides: 'nope'" in bad.output
