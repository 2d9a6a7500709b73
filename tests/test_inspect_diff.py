# SPDX-License-Identifier: GPL-2.0-or-later
"""`koji-hostimage inspect` and `diff`: on manifests, and on a real OCI archive packed
from a real export repo."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from koji_hostimage.commands.main import main
from koji_hostimage.errors import HostImageError
from koji_hostimage.image.export import export_commit
from koji_hostimage.image.oci_layout import image_labels
from koji_hostimage.image.oci_writer import OciImageSpec, write_oci_archive
from koji_hostimage.manifest import Delta, HostImageManifest, OciInfo, Package, Source
from koji_hostimage.report.inspect import diff_images, diff_manifests, format_diff, load_image

REF = "exampleos/x86_64/stable"
C1, C2 = "1" * 64, "2" * 64


def pkg(name: str, version: str, release: str = "1", epoch: int | None = None,
        arch: str = "noarch") -> Package:
    return Package(name, epoch, version, release, arch)


def manifest(commit: str, version: str, packages: list[Package], **extra) -> HostImageManifest:
    fields = dict(
        name="host", version=version, release="1", arch="x86_64", ref=REF, commit=commit,
        parent=None, content_checksum=None, timestamp=1767225600, inputhash="0" * 64,
        engine="dnf", packages=packages, object_count=10, object_bytes=1000,
    )
    fields.update(extra)
    return HostImageManifest(**fields)


def real_rpm_vercmp(a: str, b: str) -> int:
    """rpm's own answer (rpm.vercmp in rpm's embedded Lua calls the C rpmvercmp)."""
    out = subprocess.run(["rpm", "--eval", f'%{{lua: print(rpm.vercmp("{a}", "{b}"))}}'],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


# pairs where a naive string or float comparison gets the order wrong (the last is equal
# for rpm: leading zeros do not count)
TRICKY = [("1.10", "1.9"), ("1.0~rc1", "1.0"), ("1.0", "1.0^git1"), ("2.0a", "2.0"),
          ("1.0.1", "1.0a"), ("10", "9.9.9"), ("1.001", "1.1")]


@pytest.mark.parametrize(("one", "other"), TRICKY)
def test_upgrade_and_downgrade_follow_rpm_in_both_orders(one: str, other: str):
    expected = real_rpm_vercmp(one, other)
    a = manifest(C1, "1", [pkg("tool", one)])
    b = manifest(C2, "2", [pkg("tool", other)])
    forward, backward = diff_manifests(a, b).packages, diff_manifests(b, a).packages
    if expected == 0:
        assert forward.empty and backward.empty
        return
    newer_is_other = expected < 0
    assert bool(forward.upgraded) == newer_is_other
    assert bool(forward.downgraded) == (not newer_is_other)
    # the reverse diff mirrors it exactly
    assert bool(backward.upgraded) == (not newer_is_other)
    assert bool(backward.downgraded) == newer_is_other


def test_diff_reports_packages_commits_and_sizes():
    old = manifest(C1, "1", [pkg("greeter", "1.0"), pkg("gone", "1"), pkg("same", "1")],
                   object_bytes=1000, object_count=10)
    new = manifest(C2, "2", [pkg("greeter", "1.1"), pkg("fresh", "3", epoch=1),
                             pkg("same", "1")],
                   object_bytes=1500, object_count=12, deltas=[Delta(C1, C2, 123)])
    diff = diff_manifests(old, new)
    assert diff.commit_changed and diff.has_delta_from_old
    assert diff.object_bytes.change == 500 and diff.object_count.change == 2
    assert diff.archive_size.change is None  # neither side knows its archive
    data = diff.to_dict()
    assert data["packages"] == {
        "added": ["fresh-1:3-1.noarch"],
        "removed": ["gone-1-1.noarch"],
        "upgraded": [{"name": "greeter", "arch": "noarch", "old": "1.0-1", "new": "1.1-1"}],
        "downgraded": [],
    }
    text = format_diff(diff)
    assert "1 added, 1 removed, 1 upgraded, 0 downgraded" in text
    assert "^ greeter.noarch 1.0-1 -> 1.1-1" in text
    assert "1000 -> 1500 (+500)" in text
    same = diff_manifests(old, old)
    assert not same.commit_changed and same.packages.empty and not same.has_delta_from_old


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, HostImageManifest]:
    """A real archive: `ostree commit` -> export_commit -> write_oci_archive."""
    root = tmp_path_factory.mktemp("inspect")
    work, tree = root / "work", root / "tree"
    subprocess.run(["ostree", "init", f"--repo={work}", "--mode=bare-user"], check=True)
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/greeter").write_text("#!/bin/sh\necho hello\n")
    commit = subprocess.run(
        ["ostree", "commit", f"--repo={work}", f"--branch={REF}", f"--tree=dir={tree}",
         "--add-metadata-string=version=2.0", "--timestamp=2026-01-01T00:00:00Z"],
        check=True, capture_output=True, text=True).stdout.strip()
    content = root / "content"
    exported = export_commit(work, REF, commit, content / "srv" / "repo")
    built = manifest(commit, "2.0", [pkg("greeter", "1.1")], timestamp=exported.timestamp,
                     object_count=exported.object_count, object_bytes=exported.object_bytes,
                     source=Source("https://example.invalid/os.git", "abc123", "host.yaml"))
    built.write(content / "srv" / "hostimage.json")
    path = root / built.archive_name
    spec = OciImageSpec(koji_arch="x86_64", created=built.timestamp, ref_name="2.0",
                        labels=image_labels(commit, "2.0", REF, built.timestamp,
                                            built.source.scm_url, built.source.revision))
    written = write_oci_archive(path, content, spec)
    built.oci = OciInfo(path.name, written.size, written.manifest_digest,
                        written.config_digest, written.content_layer_digest)
    built.write(root / f"{built.nvr}.{built.arch}.hostimage.json")
    return path, built


def test_inspect_archive_shows_labels_commit_layers(archive, capsys):
    path, built = archive
    info = load_image(path)
    assert info.manifest.commit == built.commit
    assert info.manifest.oci is None  # the copy inside the archive
    assert info.manifest_digest == built.oci.manifest_digest
    assert info.archive_size == path.stat().st_size
    assert info.architecture == "amd64"
    assert info.labels["com.coreos.ostree-commit"] == built.commit
    assert info.exposed_ports == ["8080/tcp"]
    assert [la.digest for la in info.layers] == [built.oci.content_layer_digest]
    assert main(["inspect", "--json", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["commit"] == built.commit and shown["version"] == "2.0"
    assert shown["packages"] == 1 and shown["layers"][0]["size"] > 0
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"commit:       {built.commit}" in text and "label:        version=2.0" in text


def test_diff_archive_against_manifest_file(archive, tmp_path, capsys):
    path, built = archive
    older = manifest(C1, "1.0", [pkg("greeter", "1.0"), pkg("old-tool", "1")])
    older_path = tmp_path / "host-1.0-1.x86_64.hostimage.json"
    older.write(older_path)
    diff = diff_images(older_path, path)
    assert [c.name for c in diff.packages.upgraded] == ["greeter"]
    assert [p.name for p in diff.packages.removed] == ["old-tool"]
    assert diff.archive_size.new == path.stat().st_size and diff.archive_size.old is None
    assert main(["diff", "--json", str(older_path), str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["new"]["commit"] == built.commit and data["commit_changed"] is True


def test_inspect_refuses_what_is_not_an_image(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\0" * 1024)
    with pytest.raises(HostImageError, match="junk.tar"):
        load_image(junk)
    with pytest.raises(HostImageError, match="missing.tar"):
        load_image(tmp_path / "missing.tar")
    assert main(["inspect", str(junk)]) == 1
