# SPDX-License-Identifier: GPL-2.0-or-later
"""The export repo, on real repos made with `ostree commit` and pulled over real HTTP."""

from __future__ import annotations

import filecmp
import random
import subprocess
from pathlib import Path

import pytest
from gpgtools import GpgKey, make_gpg_key, remove_gpg_key
from httptools import static_server

from koji_hostimage.image.export import (
    ExportError,
    SigningKey,
    count_objects,
    delta_relpath,
    export_commit,
)
from koji_hostimage.ostree.repo import OSTreeRepo

REF = "exampleos/x86_64/stable"


def ostree(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ostree", *args, f"--repo={repo}"], check=check,
                          capture_output=True, text=True)


def commit_tree(repo: Path, tree: Path, version: str, day: int) -> str:
    out = ostree(repo, "commit", f"--branch={REF}", f"--tree=dir={tree}",
                 f"--add-metadata-string=version={version}",
                 f"--timestamp=2026-01-{day:02d}T00:00:00Z", f"--subject={version}")
    return out.stdout.strip()


class Builds:
    """A bare-user work repo with two commits on REF; v2 changes one file of v1."""

    def __init__(self, root: Path):
        self.root = root
        self.work = root / "work"
        ostree(self.work, "init", "--mode=bare-user")
        tree = root / "tree"
        (tree / "usr/share/doc").mkdir(parents=True)
        for index in range(40):
            # compressible but distinct, like ordinary documentation
            text = "".join(f"line {n} of document {index}\n" for n in range(400))
            (tree / f"usr/share/doc/doc{index}.txt").write_text(text)
        (tree / "usr/bin").mkdir()
        (tree / "usr/bin/greeter").write_text("#!/bin/sh\necho hello 1.0\n")
        self.v1 = commit_tree(self.work, tree, "1.0", 1)
        # v1 as an earlier build shipped it: its own archive-mode repo with only v1
        self.v1_export = export_commit(self.work, REF, self.v1, root / "v1-export")
        (tree / "usr/bin/greeter").write_text("#!/bin/sh\necho hello 1.1\n")
        self.v2 = commit_tree(self.work, tree, "1.1", 2)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    return Builds(tmp_path_factory.mktemp("export-builds"))


def test_export_holds_only_the_commit_and_its_ref(builds: Builds, tmp_path: Path):
    result = export_commit(builds.work, REF, builds.v2, tmp_path / "export")
    repo = tmp_path / "export"
    # ostree's scratch state is not shipped (checked before any ostree call recreates it)
    assert not list((repo / "tmp").iterdir()) and not (repo / ".lock").exists()
    assert result.commit == builds.v2 and result.ref == REF
    assert "mode=archive" in (repo / "config").read_text()
    assert OSTreeRepo(repo).refs() == [REF]
    assert OSTreeRepo(repo).rev_parse(REF) == builds.v2
    # v1 (the parent) is not there: the export was pulled with depth 0
    assert not list((repo / "objects" / builds.v1[:2]).glob(f"{builds.v1[2:]}.commit"))
    assert ostree(repo, "show", builds.v1, check=False).returncode != 0
    assert (result.object_count, result.object_bytes) == count_objects(repo)
    # 41 files + dirtree/dirmeta objects + the commit
    assert result.object_count >= 44
    assert result.deltas == [] and not result.signed
    assert "ostree.static-deltas" not in ostree(repo, "summary", "--view").stdout


def test_deltas_from_previous_repo_and_from_scratch(builds: Builds, tmp_path: Path):
    repo = tmp_path / "export"
    result = export_commit(builds.work, REF, builds.v2, repo,
                           previous=[builds.v1_export.repo], delta_from_scratch=True)
    assert [(d.from_commit, d.to_commit) for d in result.deltas] == [
        (builds.v1, builds.v2), (None, builds.v2)]
    for delta in result.deltas:
        directory = repo / delta_relpath(delta.from_commit, delta.to_commit)
        assert delta.bytes == sum(p.stat().st_size for p in directory.iterdir())
    listed = set(ostree(repo, "static-delta", "list").stdout.split())
    assert listed == {f"{builds.v1}-{builds.v2}", builds.v2}
    summary = ostree(repo, "summary", "--view").stdout
    assert builds.v1 in summary and "Static Deltas" in summary
    # one changed file: the v1->v2 delta is a small fraction of the from-scratch one
    from_v1, from_scratch = result.deltas
    assert from_v1.bytes * 5 < from_scratch.bytes
    # the old commit was only borrowed for generating the delta
    assert ostree(repo, "show", builds.v1, check=False).returncode != 0


def test_delta_and_summary_carry_the_commit_time_not_the_clock(builds: Builds, tmp_path: Path):
    repo = tmp_path / "export"
    result = export_commit(builds.work, REF, builds.v2, repo, previous=[builds.v1_export.repo])
    shown = ostree(repo, "static-delta", "show", f"{builds.v1}-{builds.v2}").stdout
    assert f"Timestamp: {result.timestamp}" in shown
    assert result.timestamp == 1767312000  # 2026-01-02T00:00:00Z, from commit_tree
    assert "2026-01-02T00:00:00" in ostree(repo, "summary", "--view").stdout.split(
        "Last-Modified")[1].splitlines()[0]


def test_same_commit_exports_byte_identical(builds: Builds, tmp_path: Path):
    first, second = tmp_path / "a", tmp_path / "b"
    for dest in (first, second):
        export_commit(builds.work, REF, builds.v2, dest, previous=[builds.v1_export.repo],
                      delta_from_scratch=True)
    comparison = filecmp.dircmp(first, second)
    mismatched = _diff_files(comparison)
    assert not mismatched
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())


def _diff_files(comparison: filecmp.dircmp) -> list[str]:
    _, mismatch, errors = filecmp.cmpfiles(comparison.left, comparison.right,
                                           comparison.common_files, shallow=False)
    found = mismatch + errors + comparison.left_only + comparison.right_only
    for sub in comparison.subdirs.values():
        found += _diff_files(sub)
    return found


def _client(root: Path, url: str, gpg: bool = False) -> Path:
    client = root / "client"
    client.mkdir(parents=True)
    # bare-user like a node's repo: ostree never applies static deltas to archive repos
    ostree(client, "init", "--mode=bare-user")
    flags = ["--set=gpg-verify=true", "--set=gpg-verify-summary=true"] if gpg else [
        "--no-gpg-verify"]
    ostree(client, "remote", "add", *flags, "origin", url)
    return client


def test_http_pull_uses_the_delta(builds: Builds, tmp_path: Path):
    repo = tmp_path / "export"
    export_commit(builds.work, REF, builds.v2, repo, previous=[builds.v1_export.repo])
    with static_server(repo) as (url, requests):
        client = _client(tmp_path, url)
        # the node runs v1: its remote ref points at v1, so pull looks for a v1->v2 delta
        ostree(client, "pull-local", "--remote=origin", str(builds.v1_export.repo), REF)
        ostree(client, "pull", "origin", REF)
    assert OSTreeRepo(client).rev_parse(f"origin:{REF}") == builds.v2
    delta_dir = delta_relpath(builds.v1, builds.v2)
    assert f"/{delta_dir}/superblock" in requests.paths
    assert f"/{delta_dir}/0" in requests.paths
    # Nothing v1 already had is fetched again. (ostree 2022.7 may still fetch some of the
    # *changed* objects loose while it applies the delta part: a race in its pull code.)
    had = {str(p.relative_to(builds.v1_export.repo))
           for p in (builds.v1_export.repo / "objects").rglob("*")}
    loose = [p.lstrip("/") for p in requests.paths if p.startswith("/objects/")]
    assert not [p for p in loose if p in had], loose
    ostree(client, "fsck")


def test_signed_export_verifies_and_wrong_key_fails(builds: Builds, gpg_key: GpgKey,
                                                    tmp_path: Path):
    repo = tmp_path / "export"
    result = export_commit(builds.work, REF, builds.v2, repo, previous=[builds.v1_export.repo],
                           signing=SigningKey(gpg_key.fingerprint, gpg_key.homedir))
    assert result.signed and (repo / "summary.sig").is_file()
    assert "Found 1 signature" in ostree(repo, "show", builds.v2).stdout
    with static_server(repo) as (url, _):
        good = _client(tmp_path / "good", url, gpg=True)
        ostree(good, "remote", "gpg-import", "origin", f"--keyring={gpg_key.public_key}")
        pulled = ostree(good, "pull", "origin", REF, check=False)
        assert pulled.returncode == 0, pulled.stderr
        other = make_gpg_key("Someone Else")
        try:
            bad = _client(tmp_path / "bad", url, gpg=True)
            ostree(bad, "remote", "gpg-import", "origin", f"--keyring={other.public_key}")
            refused = ostree(bad, "pull", "origin", REF, check=False)
        finally:
            remove_gpg_key(other)
    assert refused.returncode != 0
    assert "signature" in refused.stderr.lower() or "gpg" in refused.stderr.lower()


def test_bad_previous_is_named_and_leaves_nothing(builds: Builds, tmp_path: Path):
    junk = tmp_path / "not-a-build"
    junk.mkdir()
    dest = tmp_path / "export"
    with pytest.raises(ExportError, match="not-a-build: previous build: expected"):
        export_commit(builds.work, REF, builds.v2, dest, previous=[junk])
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["not-a-build"]


def test_previous_with_other_refs_is_refused(builds: Builds, tmp_path: Path):
    other = tmp_path / "two-refs"
    ostree(other, "init", "--mode=archive")
    ostree(other, "pull-local", str(builds.v1_export.repo), REF)
    ostree(other, "refs", "--create=a/b", builds.v1)
    ostree(other, "refs", "--create=c/d", builds.v1)
    ostree(other, "refs", "--delete", REF)
    with pytest.raises(ExportError, match="expected ref 'exampleos/x86_64/stable'"):
        export_commit(builds.work, REF, builds.v2, tmp_path / "export", previous=[other])


def _words(seed: int, size: int) -> str:
    rng = random.Random(seed)
    words = "ostree commit delta layer archive repo summary kernel unit node".split()
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choice(words) for _ in range(8)) + f" {rng.randint(0, 10**9)}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines)


def test_delta_larger_than_the_changed_objects_is_not_shipped(tmp_path: Path):
    """A rewritten (not edited) file: bsdiff output compresses worse than the new object,
    so the node is better off fetching objects; the export then ships no delta."""
    work, tree = tmp_path / "work", tmp_path / "tree"
    ostree(work, "init", "--mode=bare-user")
    (tree / "usr/share").mkdir(parents=True)
    (tree / "usr/share/data.txt").write_text(_words(1, 2_000_000))
    v1 = commit_tree(work, tree, "1", 1)
    old = export_commit(work, REF, v1, tmp_path / "v1")
    (tree / "usr/share/data.txt").write_text(_words(2, 2_000_000))
    v2 = commit_tree(work, tree, "2", 2)
    result = export_commit(work, REF, v2, tmp_path / "v2", previous=[old.repo])
    assert result.deltas == []
    assert not (tmp_path / "v2" / "deltas").exists() or not any(
        (tmp_path / "v2" / "deltas").rglob("superblock"))
    assert "Static Deltas" not in ostree(tmp_path / "v2", "summary", "--view").stdout


def test_previous_equal_to_current_makes_no_delta(builds: Builds, tmp_path: Path):
    repo = tmp_path / "export"
    same = export_commit(builds.work, REF, builds.v1, tmp_path / "v1")
    result = export_commit(builds.work, REF, builds.v1, repo, previous=[same.repo])
    assert result.deltas == []
