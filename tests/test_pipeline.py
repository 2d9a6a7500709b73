# SPDX-License-Identifier: GPL-2.0-or-later
"""The whole local pipeline (`koji-hostimage build`) on the example content: real RPMs,
the dnf engine, real ostree, the OCI writer, and skopeo/umoci reading the result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from koji_hostimage import pipeline
from koji_hostimage.commands.main import main
from koji_hostimage.compose.base import ComposeResult
from koji_hostimage.compose.rpmdb import PKGLIST_KEY, pkglist_metadata
from koji_hostimage.errors import HostImageError
from koji_hostimage.image import oci_writer
from koji_hostimage.image.oci_reader import OciArchive
from koji_hostimage.manifest import HostImageManifest, Package
from koji_hostimage.ostree.repo import OSTreeRepo
from koji_hostimage.pipeline import BuildError, BuildRequest, build_host_image, package_commit
from koji_hostimage.report.inspect import load_image

ARCH = "x86_64"


def request(example, output_dir: Path, **extra) -> BuildRequest:
    return BuildRequest(treefile=example.treefile, output_dir=output_dir, arch=ARCH,
                        engine="dnf", **extra)


@pytest.fixture(scope="module")
def built(example_content, tmp_path_factory: pytest.TempPathFactory):
    """One build through the CLI, as a user runs it."""
    out = tmp_path_factory.mktemp("pipeline-out")
    code = main(["build", str(example_content.treefile), "-o", str(out), "--arch", ARCH,
                 "--engine", "dnf", "--version", "1.0.0", "--release", "3",
                 "--scm-url", "https://example.invalid/os.git", "--scm-revision", "abc123"])
    assert code == 0
    return out


def test_build_writes_the_three_outputs_and_nothing_else(built: Path):
    stem = "host-1.0.0-3.x86_64"
    assert sorted(p.name for p in built.iterdir()) == sorted([
        f"{stem}.oci.tar", f"{stem}.hostimage.json", f"{stem}.compose.json",
        f"{stem}.compose.log"])
    compose_json = json.loads((built / f"{stem}.compose.json").read_text())
    manifest = HostImageManifest.load(built / f"{stem}.hostimage.json")
    assert compose_json["ostree-commit"] == manifest.commit
    assert compose_json["ref"] == manifest.ref == "example/x86_64/host"


def test_manifest_describes_the_commit(built: Path, example_content):
    outer = HostImageManifest.load(built / "host-1.0.0-3.x86_64.hostimage.json")
    assert (outer.name, outer.version, outer.release, outer.arch) == ("host", "1.0.0", "3",
                                                                     ARCH)
    assert outer.engine == "dnf" and len(outer.inputhash) == 64
    assert sorted(p.nevra for p in outer.packages) == sorted(example_content.nevras)
    assert outer.source.scm_url == "https://example.invalid/os.git"
    assert outer.source.revision == "abc123"
    archive = built / outer.archive_name
    assert outer.oci is not None and outer.oci.archive == archive.name
    assert outer.oci.archive_size == archive.stat().st_size
    # the copy inside is the same document without the oci block
    inner = load_image(archive).manifest
    assert inner.oci is None
    inner.oci = outer.oci
    assert inner.to_json() == outer.to_json()
    # the commit carries what the manifest says (read back with ostree from the archive)
    with OciArchive(archive) as image:
        assert image.manifest_digest == outer.oci.manifest_digest
        assert image.labels["com.coreos.ostree-commit"] == outer.commit
        assert image.labels["org.opencontainers.image.source"] == outer.source.scm_url
        assert image.labels["version"] == "1.0.0"
        assert image.ref_name == "1.0.0"
        assert len(image.layers) == 1 and image.config["config"].get("Cmd") is None


def test_skopeo_and_umoci_read_the_archive(built: Path, tmp_path: Path):
    archive = built / "host-1.0.0-3.x86_64.oci.tar"
    outer = HostImageManifest.load(built / "host-1.0.0-3.x86_64.hostimage.json")
    shown = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"],
                                      check=True, capture_output=True, text=True).stdout)
    assert shown["Digest"] == outer.oci.manifest_digest
    assert shown["Labels"]["com.coreos.ostree-commit"] == outer.commit
    assert shown["Architecture"] == "amd64"
    layout = tmp_path / "layout"
    subprocess.run(["skopeo", "copy", f"oci-archive:{archive}", f"oci:{layout}:img"],
                   check=True, capture_output=True)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "raw", "unpack", "--rootless", "--image", f"{layout}:img",
                    str(bundle)], check=True, capture_output=True)
    repo = bundle / "srv" / "repo"
    out = subprocess.run(["ostree", "rev-parse", f"--repo={repo}", outer.ref], check=True,
                         capture_output=True, text=True).stdout.strip()
    assert out == outer.commit
    subprocess.run(["ostree", "fsck", f"--repo={repo}"], check=True, capture_output=True)


def test_unchanged_inputs_build_nothing(example_content, tmp_path: Path):
    work_repo = tmp_path / "work-repo"
    first = build_host_image(request(example_content, tmp_path / "a", version="1",
                                     work_repo=work_repo))
    assert first.changed and first.archive is not None and first.archive.is_file()
    again = build_host_image(request(example_content, tmp_path / "b", version="1",
                                     work_repo=work_repo))
    assert not again.changed and again.archive is None and again.manifest is None
    assert again.commit == first.commit
    assert not list((tmp_path / "b").iterdir())  # not even a scratch dir left behind


def test_interrupted_build_leaves_nothing_and_reruns(example_content, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "out"
    real_write = oci_writer.write_oci_archive

    def write_then_die(dest, content_dir, spec):
        real_write(dest, content_dir, spec)  # the archive is complete in staging...
        raise KeyboardInterrupt  # ...and the build is interrupted before publishing

    monkeypatch.setattr(oci_writer, "write_oci_archive", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_host_image(request(example_content, out, version="2"))
    assert list(out.iterdir()) == []
    monkeypatch.setattr(oci_writer, "write_oci_archive", real_write)
    result = build_host_image(request(example_content, out, version="2"))
    assert result.archive is not None and result.archive.is_file()
    assert sorted(os.listdir(out)) == sorted([
        "host-2-1.x86_64.oci.tar", "host-2-1.x86_64.hostimage.json",
        "host-2-1.x86_64.compose.json", "host-2-1.x86_64.compose.log"])


def test_base_image_layers_come_first_and_cmd_is_set(example_content, built: Path,
                                                     tmp_path: Path):
    base = built / "host-1.0.0-3.x86_64.oci.tar"  # any OCI archive serves as a base
    result = build_host_image(request(example_content, tmp_path, version="4",
                                      base_image=base, server_cmd=["/bin/serve", "8080"]))
    with OciArchive(base) as base_image, OciArchive(result.archive) as image:
        assert [la.digest for la in image.layers][:1] == [base_image.layers[0].digest]
        assert len(image.layers) == 2
        assert image.config["config"]["Cmd"] == ["/bin/serve", "8080"]
        assert "8080/tcp" in image.config["config"]["ExposedPorts"]


def test_version_defaults_to_the_treefile_prefix(example_content, tmp_path: Path):
    result = build_host_image(request(example_content, tmp_path))
    assert result.manifest is not None
    assert result.manifest.version.startswith("1.0")  # automatic-version-prefix: "1.0"
    assert result.archive.name == f"host-{result.manifest.version}-1.x86_64.oci.tar"


def test_bad_inputs_are_named(example_content, tmp_path: Path):
    with pytest.raises(HostImageError, match="nope.yaml"):
        build_host_image(BuildRequest(treefile=tmp_path / "nope.yaml",
                                      output_dir=tmp_path / "o1", arch=ARCH, engine="dnf"))
    junk = tmp_path / "junk"
    junk.mkdir()
    with pytest.raises(HostImageError, match="junk: previous build: expected"):
        build_host_image(request(example_content, tmp_path / "o2", version="5",
                                 previous=[junk]))
    assert list((tmp_path / "o2").iterdir()) == []
    assert main(["build", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "o3"),
                 "--engine", "dnf"]) == 1


def test_server_cmd_must_be_a_json_list(example_content, tmp_path: Path, caplog):
    code = main(["build", str(example_content.treefile), "-o", str(tmp_path / "o"),
                 "--engine", "dnf", "--server-cmd", "python3 -m http.server"])
    assert code == 1
    assert "--server-cmd: expected a JSON list of strings" in caplog.text
    assert not (tmp_path / "o").exists()


def test_commit_without_rpmdb_falls_back_to_the_pkglist_metadata(tmp_path: Path):
    """A commit made with plain `ostree commit` (no rpmdb in the tree): the package list
    comes from its rpmostree.rpmdb.pkglist; with neither, the build is refused."""
    tree = tmp_path / "tree" / "usr" / "bin"
    tree.mkdir(parents=True)
    (tree / "tool").write_text("#!/bin/sh\n")
    repo = OSTreeRepo(tmp_path / "work").init("bare-user")
    packages = [Package("tool", 2, "1.0", "3", "noarch"), Package("lib", None, "4", "1", ARCH)]
    metadata = {"version": "7", "rpmostree.inputhash": "f" * 64}
    with_list = repo.commit(tmp_path / "tree", "a/ref",
                            metadata={**metadata, PKGLIST_KEY: pkglist_metadata(packages)})
    without = repo.commit(tmp_path / "tree", "b/ref", metadata=metadata)

    def pack(ref: str, commit: str, out: str):
        compose = ComposeResult(changed=True, ref=ref, commit=commit, engine="dnf")
        return package_commit(BuildRequest(treefile=tmp_path / "host.yaml",
                                           output_dir=tmp_path / out, arch=ARCH),
                              compose, repo.path)

    result = pack("a/ref", with_list.commit, "a")
    assert result.manifest is not None and result.manifest.packages == sorted(packages)
    assert result.manifest.version == "7" and result.archive.is_file()
    with pytest.raises(BuildError, match=f"{without.commit}: no package list"):
        pack("b/ref", without.commit, "b")


def engines_asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every compose engine the pipeline asks for (the real one is still used)."""
    asked: list[str] = []
    real = pipeline.get_engine

    def recording(name, *args, **kwargs):
        asked.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(pipeline, "get_engine", recording)
    return asked


def test_escaping_add_files_fails_before_anything_is_composed(
        example_content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog):
    """A treefile copying a builder file into the image: refused at load, nothing composed
    and nothing written."""
    src = tmp_path / "checkout"
    src.mkdir()
    secret = tmp_path / "kojid.conf"
    secret.write_text("[kojid]\npassword = hunter2\n")
    (src / "host.yaml").write_text(example_content.treefile.read_text()
                                   + f"add-files:\n  - [{secret}, /usr/share/leak]\n")
    shutil.copy(example_content.repo_file, src / "example.repo")
    asked = engines_asked(monkeypatch)
    out = tmp_path / "out"
    code = main(["build", str(src / "host.yaml"), "-o", str(out), "--arch", ARCH,
                 "--engine", "dnf", "--version", "1"])
    assert code == 1 and asked == []
    assert f"{src / 'host.yaml'}: add-files: expected a path inside {src}" in caplog.text
    assert f"got {str(secret)!r} (resolves to {secret})" in caplog.text
    assert not out.exists() or list(out.iterdir()) == []


def test_source_root_option_confines_to_the_checkout(
        example_content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog):
    """hosts/x.yaml includes ../common/host.yaml: outside the default root (hosts/), inside
    --source-root (the checkout), where the build goes through."""
    src = tmp_path / "checkout"
    (src / "common").mkdir(parents=True)
    (src / "hosts").mkdir()
    shutil.copy(example_content.treefile, src / "common" / "host.yaml")
    shutil.copy(example_content.repo_file, src / "hosts" / "example.repo")
    (src / "hosts" / "x.yaml").write_text("include: ../common/host.yaml\n")
    asked = engines_asked(monkeypatch)
    argv = ["build", str(src / "hosts" / "x.yaml"), "-o", str(tmp_path / "out"), "--arch",
            ARCH, "--engine", "dnf", "--version", "1"]
    assert main(argv) == 1 and asked == []
    assert "x.yaml: include: expected a path inside" in caplog.text
    assert "'../common/host.yaml' (resolves to" in caplog.text
    assert main([*argv, "--source-root", str(src)]) == 0 and asked == ["dnf"]
    manifest = HostImageManifest.load(tmp_path / "out" / "x-1-1.x86_64.hostimage.json")
    assert manifest.ref == "example/x86_64/host"


def _commit_with_a_system_user(work_repo: Path, ref: str, scratch: Path) -> str:
    """A commit on ``ref`` like one whose scriptlets added a system user ``svc`` (990)."""
    tree = scratch / "tree"
    subprocess.run(["ostree", f"--repo={work_repo}", "checkout", "-U", ref, str(tree)],
                   check=True, capture_output=True)
    with open(tree / "usr/etc/passwd", "a", encoding="utf-8") as fh:
        fh.write("svc:x:990:990:service:/:/sbin/nologin\n")
    with open(tree / "usr/etc/group", "a", encoding="utf-8") as fh:
        fh.write("svc:x:990:\n")
    out = subprocess.run(
        ["ostree", f"--repo={work_repo}", "commit", "--branch", ref, f"--tree=dir={tree}",
         "--owner-uid=0", "--owner-gid=0", "--add-metadata-string=version=1.0",
         "--add-metadata-string=rpmostree.inputhash=seeded"],
        check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _passwd_of(result) -> str:
    with OciArchive(result.archive) as image:
        repo = Path(result.archive).parent / "x-repo"
        image.extract_content(repo, prefix="srv/repo/")
    text = OSTreeRepo(repo).cat(result.commit, "/usr/etc/passwd")
    shutil.rmtree(repo)
    return text


@pytest.mark.parametrize("preserve", [True, False])
def test_a_fresh_work_repo_continues_from_the_previous_build(
        example_content, example_content_v2, tmp_path: Path, preserve: bool):
    # The previous build, as a repo whose commit has a user added by a scriptlet.
    previous_repo = tmp_path / "previous"
    first = build_host_image(request(example_content, tmp_path / "v1", work_repo=previous_repo))
    ref = first.manifest.ref
    seeded = _commit_with_a_system_user(previous_repo, ref, tmp_path)

    treefile = tmp_path / "src" / "host.yaml"
    treefile.parent.mkdir()
    shutil.copy(example_content_v2.repo_file, treefile.parent)
    text = example_content_v2.treefile.read_text()
    treefile.write_text(text + ("" if preserve else "preserve-passwd: false\n"))
    # a fresh work repo, as in every Koji build: only the previous build is given
    result = build_host_image(BuildRequest(treefile=treefile, output_dir=tmp_path / "v2",
                                           arch=ARCH, engine="dnf", seed=previous_repo))
    assert result.changed and result.manifest.parent == seeded
    # automatic-version-prefix "1.0" counts on from the previous commit's version
    assert result.manifest.version == "1.0.1"
    passwd = _passwd_of(result)
    assert passwd.startswith("root:x:0:0:")
    assert ("svc:x:990:990:" in passwd) is preserve
