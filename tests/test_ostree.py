# SPDX-License-Identifier: GPL-2.0-or-later
"""koji_hostimage.ostree against real ostree repositories."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
from runnertools import MappedRunner

from koji_hostimage.errors import OSTreeError
from koji_hostimage.ostree.gvariant import (
    GVariantLiteral,
    GVariantTextError,
    gvariant_text,
    parse_gvariant_text,
    quote_gvariant_string,
)
from koji_hostimage.ostree.repo import OSTreeRepo
from koji_hostimage.runner import run_checked


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def repo(tmp_path: Path) -> OSTreeRepo:
    return OSTreeRepo(tmp_path / "repo").init("bare-user")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree", {"usr/bin/tool": "#!/bin/sh\n", "usr/share/a": "a\n"})


def test_init_creates_repo_of_the_mode_and_is_idempotent(tmp_path: Path) -> None:
    repo = OSTreeRepo(tmp_path / "archive").init("archive")
    assert repo.exists()
    assert repo.mode() in ("archive", "archive-z2")
    repo.init("archive")  # again: kept, no error
    with pytest.raises(OSTreeError, match="already exists"):
        repo.init("archive", exist_ok=False)
    with pytest.raises(ValueError, match="bare-user"):
        OSTreeRepo(tmp_path / "x").init("nonsense")


def test_commit_round_trips_metadata_types(repo: OSTreeRepo, tree: Path) -> None:
    metadata = {
        "version": "1.0",
        "quote": "it's \"quoted\" \\ back\nslash\t\u00e9\x01",
        "count": 7,
        "negative": -3,
        "flag": True,
        "names": ["a", "b"],
        "empty": [],
        "nested": {"x": 1, "y": "z"},
        "pkgs": GVariantLiteral("@a(sssss) [('n', '0', '1', '2', 'noarch')]"),
    }
    stats = repo.commit(tree, "test/ref", metadata=metadata, subject="subj", body="body",
                        timestamp=1767225600)
    info = repo.show("test/ref")
    assert info.checksum == stats.commit == repo.rev_parse("test/ref")
    for key in ("version", "quote", "count", "negative", "flag", "names", "empty", "nested"):
        assert info.metadata[key] == metadata[key], key
    assert info.metadata["pkgs"] == [("n", "0", "1", "2", "noarch")]
    assert info.version == "1.0"
    assert (info.subject, info.body, info.timestamp, info.parent) == ("subj", "body",
                                                                      1767225600, None)
    # ostree's own rendering agrees (integers stored big-endian, as rpm-ostree does).
    assert repo.metadata_key("test/ref", "count") == 7
    shown = run_checked(["ostree", "show", f"--repo={repo.path}",
                         "--print-metadata-key=count", "test/ref"])
    assert shown.strip() == "int64 7"
    assert repo.metadata_key("test/ref", "absent") is None


def test_commit_stats_and_content_checksum(repo: OSTreeRepo, tree: Path) -> None:
    stats = repo.commit(tree, "test/ref")
    assert stats.content_total == 2 and stats.content_written == 2
    assert stats.metadata_total >= 3 and stats.content_bytes_written > 0
    info = repo.show(stats.commit)
    output = run_checked(["ostree", "show", f"--repo={repo.path}", stats.commit])
    shown = re.search(r"ContentChecksum:\s+([0-9a-f]{64})", output).group(1)
    assert info.content_checksum == shown
    # Same tree, other metadata: new commit, same content checksum.
    again = repo.commit(tree, "test/other", metadata={"version": "2"})
    assert again.commit != stats.commit
    assert repo.show(again.commit).content_checksum == shown


def test_parents_log_refs(repo: OSTreeRepo, tree: Path) -> None:
    first = repo.commit(tree, "a/ref").commit
    (tree / "usr/share/b").write_text("b\n")
    second = repo.commit(tree, "a/ref").commit
    third = repo.commit(tree, "a/ref", parent="none").commit
    assert repo.show(second).parent == first
    assert repo.show(third).parent is None
    assert [c.checksum for c in repo.log(second)] == [second, first]
    assert [c.checksum for c in repo.log(second, limit=1)] == [second]
    repo.set_ref("b/ref", first)
    assert repo.refs() == ["a/ref", "b/ref"]
    assert repo.refs("b") == ["b/ref"]
    repo.delete_ref("b/ref")
    assert repo.refs() == ["a/ref"]
    assert repo.has_commit(first) and not repo.has_commit("0" * 64)


def test_errors_carry_ostrees_own_message(repo: OSTreeRepo, tmp_path: Path) -> None:
    assert repo.rev_parse("no/such/ref", allow_missing=True) is None
    with pytest.raises(OSTreeError) as excinfo:
        repo.rev_parse("no/such/ref")
    assert "Refspec 'no/such/ref' not found" in str(excinfo.value)
    assert excinfo.value.returncode != 0
    with pytest.raises(OSTreeError) as excinfo:
        repo.commit(tmp_path / "missing-tree", "x")
    message = str(excinfo.value)
    assert "ostree commit failed" in message and "error:" in message
    with pytest.raises(OSTreeError, match="No such file|not found|Failed"):
        OSTreeRepo(tmp_path / "not-a-repo").refs()


def test_ls_cat_checkout(repo: OSTreeRepo, tree: Path, tmp_path: Path) -> None:
    os.symlink("tool", tree / "usr/bin/link")
    commit = repo.commit(tree, "t").commit
    entries = {e.path: e for e in repo.ls(commit, "/usr", recursive=True)}
    assert entries["/usr/bin/tool"].type == "-" and entries["/usr/bin/tool"].size == 10
    assert entries["/usr/bin/link"].type == "l" and entries["/usr/bin/link"].target == "tool"
    assert entries["/usr/bin"].type == "d" and len(entries["/usr/bin"].checksums) == 2
    content = (tree / "usr/share/a").read_bytes()
    assert repo.cat(commit, "/usr/share/a") == "a\n"
    out = tmp_path / "out"
    repo.checkout(commit, out, subpath="/usr/share")
    assert sorted(p.name for p in out.iterdir()) == ["a"]
    assert hashlib.sha256((out / "a").read_bytes()).digest() == hashlib.sha256(content).digest()


def test_pull_local_summary_deltas_fsck(repo: OSTreeRepo, tree: Path, tmp_path: Path) -> None:
    first = repo.commit(tree, "os/ref").commit
    (tree / "usr/share/a").write_text("changed\n")
    second = repo.commit(tree, "os/ref").commit
    export = OSTreeRepo(tmp_path / "export").init("archive")
    export.pull_local(repo, ["os/ref"], depth=1)
    assert export.rev_parse("os/ref") == second and export.has_commit(first)
    assert export.static_delta_generate("os/ref", from_rev=first) == f"{first}-{second}"
    assert export.static_delta_generate("os/ref") == second
    assert export.static_delta_list() == sorted([f"{first}-{second}", second])
    export.summary_update()
    assert (export.path / "summary").stat().st_size > 0
    assert "0 errors" in export.fsck() or "no errors" in export.fsck()


def test_fsck_reports_corruption(repo: OSTreeRepo, tree: Path, tmp_path: Path) -> None:
    repo.commit(tree, "os/ref")
    export = OSTreeRepo(tmp_path / "export").init("archive")
    export.pull_local(repo, ["os/ref"])
    victim = next((export.path / "objects").rglob("*.filez"))
    victim.chmod(0o644)
    victim.write_bytes(b"garbage")
    with pytest.raises(OSTreeError) as excinfo:
        export.fsck()
    assert "ostree fsck failed" in str(excinfo.value)
    assert "corrupted" in str(excinfo.value).lower() or "error" in str(excinfo.value)


def test_every_path_goes_through_the_runner(tmp_path: Path) -> None:
    host = tmp_path / "host"
    make_tree(host / "tree", {"usr/x": "x\n"})
    os.symlink(host, tmp_path / "inner")
    runner = MappedRunner(host, tmp_path / "inner")
    repo = OSTreeRepo(host / "repo", runner).init()
    commit = repo.commit(host / "tree", "r").commit
    repo.checkout(commit, host / "co")
    assert (host / "co/usr/x").read_text() == "x\n"
    args = [a for argv in runner.argvs for a in argv]
    assert any(str(tmp_path / "inner" / "tree") in a for a in args)
    assert not [a for a in args if str(host) in a]  # no host path reached a command


@pytest.mark.parametrize(
    "text, value",
    [
        ("'plain'", "plain"),
        ('"it\'s \\"q\\" \\n \\u00e9 \\t"', "it's \"q\" \n \u00e9 \t"),
        ("[('a', '0', '1', '2', 'noarch')]", [("a", "0", "1", "2", "noarch")]),
        ("@a(sssss) []", []),
        ("{'k': <int64 5>, 'b': <true>, 'n': <@as []>}", {"k": 5, "b": True, "n": []}),
        ("('x',)", ("x",)),
        ("[{1, 'a'}]", [(1, "a")]),
        ("(@mi nothing, just 3, uint64 18446744073709551615)",
         (None, 3, 18446744073709551615)),
        ("[byte 0x8a, 0x00]", [0x8A, 0]),
        ("b'ab\\001'", b"ab\x01\x00"),
        ("double -1.5e3", -1500.0),
        ("objectpath '/a/b'", "/a/b"),
    ],
)
def test_parse_gvariant_text(text: str, value: object) -> None:
    assert parse_gvariant_text(text) == value


@pytest.mark.parametrize("text", ["", "'open", "[1, 2", "{'a' 1}", "bogus", "(1 2)", "@z 1"])
def test_parse_gvariant_text_rejects(text: str) -> None:
    with pytest.raises(GVariantTextError, match="GVariant text"):
        parse_gvariant_text(text)


def test_gvariant_text_round_trip_and_limits() -> None:
    values = ["a'b\\c\n\x02", 12, True, ["x", "y"], ("p", 1), {"k": ["v"]}, b"\x01\x02"]
    for value in values:
        parsed = parse_gvariant_text(gvariant_text(value))
        assert parsed == (list(value) if isinstance(value, bytes) else value)
    assert gvariant_text([], empty_type="a(ss)") == "@a(ss) []"
    assert quote_gvariant_string("it's") == "'it\\'s'"
    with pytest.raises(GVariantTextError, match="cannot store the number"):
        gvariant_text(1.5, big_endian=True)
    with pytest.raises(GVariantTextError, match="cannot encode a set"):
        gvariant_text({1, 2})
