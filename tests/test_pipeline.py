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
from koji_hostimage.image.serverlayer import SERVER_CMD
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
    # the copy inside is the same document without the oci block and the stage timings
    inner = load_image(archive).manifest
    assert inner.oci is None and inner.stage_seconds is None
    assert outer.stage_seconds is not None
    inner.oci, inner.stage_seconds = outer.oci, outer.stage_seconds
    assert inner.to_json() == outer.to_json()
    # the commit carries what the manifest says (read back with ostree from the archive)
    with OciArchive(archive) as image:
        assert image.manifest_digest == outer.oci.manifest_digest
        assert image.labels["com.coreos.ostree-commit"] == outer.commit
        assert image.labels["org.opencontainers.image.source"] == outer.source.scm_url
        assert image.labels["version"] == "1.0.0"
        # podman load names it localhost/host:1.0.0-3
        assert image.ref_name == "host:1.0.0-3"
        # without a base image: the busybox server layer, then the content layer
        assert len(image.layers) == 2
        assert image.config["config"]["Cmd"] == SERVER_CMD


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
    before = sorted((tmp_path / "a").iterdir())
    again = build_host_image(request(example_content, tmp_path / "a", version="1",
                                     work_repo=work_repo))
    assert not again.changed and again.archive == first.archive
    assert again.commit == first.commit and again.manifest.commit == first.commit
    assert sorted((tmp_path / "a").iterdir()) == before  # not even a scratch dir left
    # another output directory has no outputs of that commit: it is packaged there
    other = build_host_image(request(example_content, tmp_path / "b", version="1",
                                     work_repo=work_repo))
    assert other.changed and other.commit == first.commit
    assert other.archive.read_bytes() == first.archive.read_bytes()


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
        assert len(image.layers) == len(base_image.layers) + 1  # no server layer of ours
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


# --- issue 13: retries, outputs all-or-nothing, scratch, modes, reproducibility ----------


def test_a_retry_with_the_work_repo_builds_what_a_failed_build_lost(
        example_content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out, work_repo = tmp_path / "out", tmp_path / "work-repo"
    real_export = pipeline._export

    def export_fails(*args, **kwargs):
        raise BuildError("export failed (injected)")

    monkeypatch.setattr(pipeline, "_export", export_fails)
    with pytest.raises(BuildError):
        build_host_image(request(example_content, out, version="5", work_repo=work_repo))
    assert os.listdir(out) == []
    monkeypatch.setattr(pipeline, "_export", real_export)
    # the compose is unchanged (its commit is in the work repo), but the outputs are not
    retried = build_host_image(request(example_content, out, version="5", work_repo=work_repo))
    assert retried.changed and retried.archive.is_file() and retried.manifest_path.is_file()
    assert retried.manifest.commit == OSTreeRepo(work_repo).rev_parse(retried.manifest.ref)
    assert "inputs unchanged" in retried.log_path.read_text()
    # now they are there: nothing to do, and nothing touched
    stamp = retried.archive.stat().st_mtime_ns
    again = build_host_image(request(example_content, out, version="5", work_repo=work_repo))
    assert not again.changed and again.archive == retried.archive
    assert retried.archive.stat().st_mtime_ns == stamp
    # a version the commit does not carry is a new compose, not "nothing changed"
    other = build_host_image(request(example_content, out, version="6", work_repo=work_repo))
    assert other.changed and other.manifest.version == "6"
    assert other.commit != retried.commit


def test_outputs_are_renamed_together_or_not_at_all(example_content, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "out"
    first = build_host_image(request(example_content, out, version="7"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace = os.replace

    def manifest_rename_fails(src, dst):
        if str(dst).endswith(".hostimage.json") and ".staging-" in str(src):
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(pipeline.os, "replace", manifest_rename_fails)
    with pytest.raises(BuildError, match="No space left on device"):
        build_host_image(request(example_content, out, version="7", force_nocache=True))
    # the archive was renamed into place first, then put back: the old build is whole
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert HostImageManifest.load(first.manifest_path).commit == first.commit


def test_stale_scratch_of_dead_builds_is_removed_and_only_that(tmp_path: Path):
    from koji_hostimage.fsutil import clean_stale_scratch

    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        names = [f".work-{dead.pid}-abc", f".staging-{dead.pid}-d_e", f".package-{dead.pid}-x",
                 f".work-{alive.pid}-abc", f".work-{os.getpid()}-mine", ".work-nopid",
                 f".other-{dead.pid}-abc", f"work-{dead.pid}-abc"]
        for name in names:
            (tmp_path / name).mkdir()
            (tmp_path / name / "file").write_text("x")
        removed = clean_stale_scratch(tmp_path)
        assert sorted(p.name for p in removed) == sorted(names[:3])
        assert sorted(os.listdir(tmp_path)) == sorted(names[3:])
    finally:
        alive.kill()
        alive.wait()


def test_written_files_get_the_umask_mode_not_0600(tmp_path: Path):
    from koji_hostimage.fsutil import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.json", b"{}")
        os.umask(0o027)
        write_atomic(tmp_path / "b.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_source_date_epoch_builds_are_byte_identical(example_content, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    stem = "host-8-1.x86_64"
    for run in ("a", "b"):
        assert main(["build", str(example_content.treefile), "-o", str(tmp_path / run),
                     "--arch", ARCH, "--engine", "dnf", "--version", "8"]) == 0
    first, second = (HostImageManifest.load(tmp_path / run / f"{stem}.hostimage.json")
                     for run in ("a", "b"))
    assert first.commit == second.commit
    assert first.timestamp == first.source_date_epoch == 1700000000
    assert ((tmp_path / "a" / f"{stem}.oci.tar").read_bytes()
            == (tmp_path / "b" / f"{stem}.oci.tar").read_bytes())
    # the outer copies differ only in their stage timings
    assert first.stage_seconds and second.stage_seconds
    first.stage_seconds = second.stage_seconds = None
    assert first.to_json() == second.to_json()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    assert main(["build", str(example_content.treefile), "-o", str(tmp_path / "c"),
                 "--arch", ARCH, "--engine", "dnf"]) == 1


def test_an_arch_the_image_cannot_name_fails_before_the_compose(
        example_content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    asked = engines_asked(monkeypatch)
    with pytest.raises(HostImageError, match="unknown Koji arch 'pdp11'"):
        build_host_image(BuildRequest(treefile=example_content.treefile,
                                      output_dir=tmp_path / "out", arch="pdp11", engine="dnf"))
    assert asked == []


# --- stage timings, verification of this build only, clean-up off the critical path -----


def test_stage_timings_are_logged_and_only_in_the_outer_manifest(
        example_content, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level("INFO")
    result = build_host_image(request(example_content, tmp_path / "out", version="5"))
    stages = ["load", "seed", "compose", "verify", "export", "manifest", "pack"]
    outer = HostImageManifest.load(result.manifest_path)
    assert outer.stage_seconds is not None and list(outer.stage_seconds) == sorted(stages)
    assert all(seconds >= 0 for seconds in outer.stage_seconds.values())
    assert outer.stage_seconds["compose"] > 0
    # publish and clean-up come after the file is written: in the result and the log
    assert set(result.stage_seconds) == set(stages) | {"publish", "clean-up"}
    for name in result.stage_seconds:
        assert f"stage {name}: " in caplog.text
    with OciArchive(result.archive) as image:
        inner = json.loads(image.read_content_file("srv/hostimage.json"))
    assert inner["stage_seconds"] is None
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


def test_stage_seconds_must_be_numbers_of_at_least_zero(built: Path):
    data = json.loads((built / "host-1.0.0-3.x86_64.hostimage.json").read_text())
    assert HostImageManifest.from_dict(dict(data, stage_seconds={"pack": 1.5, "load": 0}
                                            )).stage_seconds == {"pack": 1.5, "load": 0.0}
    for bad, message in (({"pack": -1}, "stage_seconds.pack: expected a number >= 0"),
                         ({"pack": "1"}, "stage_seconds.pack: expected int or float"),
                         ({"pack": True}, "stage_seconds.pack: expected int or float"),
                         ([1.0], "stage_seconds: expected dict or null")):
        with pytest.raises(HostImageError, match=message):
            HostImageManifest.from_dict(dict(data, stage_seconds=bad))


def _corrupt_file_object(repo: Path, content: bytes) -> None:
    """Rewrite the one file object of the repo holding ``content`` (same size)."""
    [obj] = [p for p in (repo / "objects").rglob("*.file") if p.read_bytes() == content]
    obj.chmod(0o644)
    obj.write_bytes(content.upper())


def test_verify_checks_this_commit_not_the_whole_kept_work_repo(tmp_path: Path):
    """An unrelated, corrupted commit in a kept work repo does not fail the build (the old
    `ostree fsck` of the whole repo did, and grew with every earlier build); a corrupted
    object of the commit being built is still caught."""
    packages = [Package("tool", None, "1.0", "3", "noarch")]
    metadata = {"version": "7", "rpmostree.inputhash": "f" * 64,
                PKGLIST_KEY: pkglist_metadata(packages)}
    repo = OSTreeRepo(tmp_path / "work").init("bare-user")
    commits = {}
    for ref, text in (("old/ref", b"old tool\n"), ("new/ref", b"new tool\n"),
                      ("bad/ref", b"bad tool\n")):
        tree = tmp_path / ref.replace("/", "-") / "usr" / "bin"
        tree.mkdir(parents=True)
        (tree / "tool").write_bytes(text)
        commits[ref] = repo.commit(tree.parent.parent, ref, metadata=metadata).commit
    _corrupt_file_object(repo.path, b"old tool\n")
    _corrupt_file_object(repo.path, b"bad tool\n")

    def pack(ref: str, out: str):
        compose = ComposeResult(changed=True, ref=ref, commit=commits[ref], engine="dnf")
        return package_commit(BuildRequest(treefile=tmp_path / "host.yaml",
                                           output_dir=tmp_path / out, arch=ARCH),
                              compose, repo.path)

    assert pack("new/ref", "a").archive.is_file()
    with pytest.raises(HostImageError, match="[Cc]orrupted"):
        pack("bad/ref", "b")
    assert not (tmp_path / "b" / "host-7-1.x86_64.oci.tar").exists()


def test_discarded_trees_leave_at_once_and_stale_trash_is_collected(tmp_path: Path):
    from koji_hostimage.fsutil import clean_stale_scratch, discard_tree, wait_for_discards

    big = tmp_path / "stage"
    (big / "sub").mkdir(parents=True)
    for i in range(200):
        (big / "sub" / f"f{i}").write_text("x")
    trash = discard_tree(big)
    assert not big.exists()  # renamed away at once; deleted in the background
    assert trash is not None and trash.name.startswith(f".trash-{os.getpid()}-")
    assert wait_for_discards(timeout=60)
    assert not trash.exists()
    assert discard_tree(big) is None  # nothing there: nothing to do
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f".trash-{dead.pid}-abc" / "left").mkdir(parents=True)
    (tmp_path / f".trash-{os.getpid()}-mine").mkdir()
    removed = clean_stale_scratch(tmp_path)
    assert [p.name for p in removed] == [f".trash-{dead.pid}-abc"]
    assert sorted(os.listdir(tmp_path)) == [f".trash-{os.getpid()}-mine"]


def test_the_built_line_does_not_wait_for_the_clean_up(
        example_content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Deleting the work trees happens after "built ..." and in the background: a slow
    deletion delays neither the result nor (wait_for_cleanup=False) the return."""
    import threading
    import time

    from koji_hostimage import fsutil

    release = threading.Event()
    real_rmtree = shutil.rmtree

    def slow_rmtree(path, *args, **kwargs):
        if ".trash-" in str(path):
            release.wait(60)
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(fsutil.shutil, "rmtree", slow_rmtree)
    started = time.monotonic()
    result = build_host_image(request(example_content, tmp_path / "out", version="6",
                                      wait_for_cleanup=False))
    assert result.archive.is_file() and time.monotonic() - started < 55
    assert result.stage_seconds["clean-up"] < 5
    assert any(p.name.startswith(".trash-") for p in (tmp_path / "out").iterdir())
    release.set()
    assert fsutil.wait_for_discards(timeout=60)
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


def test_progress_lines_with_a_rate_at_most_every_interval(caplog: pytest.LogCaptureFixture):
    from koji_hostimage.progress import QUIET_INTERVAL, Progress

    caplog.set_level("INFO", logger="koji_hostimage.progress")
    quiet = Progress("exported", total=1000, terminal=False)
    assert quiet.interval == QUIET_INTERVAL == 10.0
    start = quiet.started
    for second in range(1, 31):  # 30 s of updates, one a second
        quiet.update(second * 10, now=start + second)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["exported: 100 objects of 1,000 objects in 10 s (10 objects/s)",
                     "exported: 200 objects of 1,000 objects in 20 s (10 objects/s)",
                     "exported: 300 objects of 1,000 objects in 30 s (10 objects/s)"]
    caplog.clear()
    tty = Progress("packed", "bytes", terminal=True)
    for tick in range(1, 5):
        tty.update(tick * 3 * 1024 * 1024, now=tty.started + tick * 0.5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and lines[0] == "packed: 3.0 MiB in 0 s (6.0 MiB/s)"
    # on a terminal, later lines are redrawn in place
    assert all(line.startswith("\x1b[1A\r\x1b[Kpacked: ") for line in lines[1:])


def test_exported_objects_are_reported_while_ostree_pulls(
        example_content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture):
    from koji_hostimage import progress

    monkeypatch.setattr(progress, "QUIET_INTERVAL", 0.0)  # a line at every sample
    monkeypatch.setattr(progress, "_is_terminal", lambda: False)
    caplog.set_level("INFO")
    result = build_host_image(request(example_content, tmp_path / "out", version="9"))
    exported = [r.getMessage() for r in caplog.records if r.getMessage().startswith(
        "exported: ")]
    assert exported and exported[-1].endswith("(done)")
    assert exported[-1].startswith(f"exported: {result.manifest.object_count:,} objects in")
    assert any(r.getMessage().startswith("packed: ") for r in caplog.records)


def test_deltas_are_their_own_stage_not_counted_twice(
        example_content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import time

    from koji_hostimage.image import export

    first = build_host_image(request(example_content, tmp_path / "a", version="1"))
    real = export._make_deltas

    def slow_deltas(*args, **kwargs):
        time.sleep(2)
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "_make_deltas", slow_deltas)
    second = build_host_image(request(example_content, tmp_path / "b", version="2",
                                      force_nocache=True, previous=[first.archive]))
    stages = second.stage_seconds
    assert stages["deltas"] >= 2.0
    # every stage counted once: together no longer than the build
    assert sum(stages.values()) <= second.seconds + 0.05
    assert HostImageManifest.load(second.manifest_path).stage_seconds["deltas"] >= 2.0
