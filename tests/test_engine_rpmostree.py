# SPDX-License-Identifier: GPL-2.0-or-later
"""The rpm-ostree compose engine, driven against tests/fake-rpm-ostree.

Every test here that composes uses the STAND-IN tests/fake-rpm-ostree (rpm-ostree is not
installable here), put on PATH as ``rpm-ostree``. The stand-in makes real ostree commits,
so the results are checked against a real repository with the real ostree CLI.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path

import pytest
from runnertools import MappedRunner

from koji_hostimage.compose import rpmostree
from koji_hostimage.compose.base import ComposeRequest
from koji_hostimage.compose.engines import get_engine
from koji_hostimage.compose.rpmostree import (
    RpmOstreeEngine,
    build_compose_argv,
    parse_compose_json,
)
from koji_hostimage.errors import ComposeError
from koji_hostimage.treefile.inputs import FLAT_REPO_FILE_NAME
from koji_hostimage.treefile.load import load_treefile

FAKE = Path(__file__).resolve().parent / "fake-rpm-ostree"

COMPOSE_JSON_FIELDS = {
    "ref",
    "ostree-commit",
    "ostree-content-checksum",
    "ostree-version",
    "ostree-timestamp",
    "rpm-ostree-inputhash",
    "ostree-n-metadata-total",
    "ostree-n-content-total",
    "ostree-content-bytes-written",
}


def ostree(*args: str) -> str:
    return subprocess.run(["ostree", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the stand-in on PATH as ``rpm-ostree``; return its argv log (JSON lines)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "rpm-ostree").symlink_to(FAKE)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    argv_log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("FAKE_RPM_OSTREE_ARGV_LOG", str(argv_log))
    monkeypatch.delenv("FAKE_RPM_OSTREE_MODE", raising=False)
    return argv_log


def logged_argvs(argv_log: Path) -> list[list[str]]:
    return [json.loads(line) for line in argv_log.read_text().splitlines()]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A treefile with a real (empty) rpm-md repo defined beside it."""
    src = tmp_path / "src"
    rpms = src / "rpms"
    rpms.mkdir(parents=True)
    subprocess.run(["createrepo_c", "--quiet", str(rpms)], check=True, capture_output=True)
    (src / "local.repo").write_text(f"[local]\nbaseurl={rpms.as_uri()}\n")
    (src / "host.yaml").write_text(
        "ref: test/${basearch}/host\nrepos: [local]\npackages: [alpha, beta]\n"
    )
    return src / "host.yaml"


def make_request(tmp_path: Path, treefile: Path, **kwargs) -> ComposeRequest:
    return ComposeRequest(
        treefile=load_treefile(treefile, "x86_64"),
        repo=tmp_path / "work-repo",
        workdir=tmp_path / "work",
        **kwargs,
    )


# ---------------------------------------------------------------------------------------
# argv


def test_argv_minimal():
    assert build_compose_argv("/r", "/t.json", "/c.json") == [
        "rpm-ostree",
        "compose",
        "tree",
        "--unified-core",
        "--repo=/r",
        "--write-composejson-to=/c.json",
        "/t.json",
    ]


def test_argv_with_parent_version_and_force_nocache():
    parent = "a" * 64
    assert build_compose_argv(
        "/r", "/t.json", "/c.json", parent=parent, version="42.1", force_nocache=True
    ) == [
        "rpm-ostree",
        "compose",
        "tree",
        "--unified-core",
        "--repo=/r",
        "--write-composejson-to=/c.json",
        f"--parent={parent}",
        "--add-metadata-string=version=42.1",
        "--force-nocache",
        "/t.json",
    ]


def test_argv_with_only_version():
    argv = build_compose_argv("/r", "/t.json", "/c.json", version="1")
    assert argv[-2:] == ["--add-metadata-string=version=1", "/t.json"]
    assert not any(a.startswith("--parent") or a == "--force-nocache" for a in argv)


# ---------------------------------------------------------------------------------------
# composing (with the stand-in)


def test_compose_parses_compose_json_against_the_real_commit(tmp_path, fake, source):
    """Uses the stand-in tests/fake-rpm-ostree."""
    request = make_request(tmp_path, source, version="1.0", extra_repos=["https://koji/r/"])
    result = RpmOstreeEngine().compose(request)
    repo = request.repo
    assert ostree("config", f"--repo={repo}", "get", "core.mode").strip() == "bare-user"
    commit = ostree("rev-parse", f"--repo={repo}", "test/x86_64/host").strip()
    assert result.changed is True and result.engine == "rpm-ostree"
    assert result.ref == "test/x86_64/host" and result.commit == commit
    assert result.compose_json_path == tmp_path / "work" / "compose.json"
    data = result.compose_json
    assert COMPOSE_JSON_FIELDS <= set(data)
    assert data["ostree-commit"] == commit
    show = ostree("show", f"--repo={repo}", commit)
    assert f"ContentChecksum:  {data['ostree-content-checksum']}" in show
    version = ostree("show", f"--repo={repo}", "--print-metadata-key=version", commit)
    assert version.strip() == "'1.0'" == repr(data["ostree-version"])
    inputhash = ostree(
        "show", f"--repo={repo}", "--print-metadata-key=rpmostree.inputhash", commit
    )
    assert inputhash.strip() == repr(data["rpm-ostree-inputhash"])
    date = next(line for line in show.splitlines() if line.startswith("Date:"))
    when = datetime.datetime.strptime(date.split(None, 1)[1].strip(), "%Y-%m-%d %H:%M:%S %z")
    assert data["ostree-timestamp"] == when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # rpm-ostree was called exactly as built, on the flattened treefile.
    flat = tmp_path / "work" / "treefile" / "treefile.json"
    assert (
        logged_argvs(fake)[0][1:]
        == build_compose_argv(
            str(repo), str(flat), str(tmp_path / "work" / "compose.json"), version="1.0"
        )[1:]
    )
    flat_data = json.loads(flat.read_text())
    assert flat_data["repos"] == ["local", "extra-1"] and flat_data["packages"] == [
        "alpha",
        "beta",
    ]
    assert "extra-1" in (flat.parent / FLAT_REPO_FILE_NAME).read_text()


def test_compose_with_parent_records_parent_and_pkgdiff(tmp_path, fake, source):
    """Uses the stand-in tests/fake-rpm-ostree."""
    engine = RpmOstreeEngine()
    first = engine.compose(make_request(tmp_path, source, version="1"))
    source.write_text("ref: test/${basearch}/host\nrepos: [local]\npackages: [alpha, gamma]\n")
    second = engine.compose(
        make_request(tmp_path, source, version="2", parent=first.commit, force_nocache=True)
    )
    assert second.changed and second.commit != first.commit
    repo = tmp_path / "work-repo"
    assert ostree("rev-parse", f"--repo={repo}", f"{second.commit}^").strip() == first.commit
    diff = {name: kind for name, kind, _info in second.compose_json["pkgdiff"]}
    assert diff == {"gamma": 0, "beta": 1}
    argv = logged_argvs(fake)[1]
    assert f"--parent={first.commit}" in argv and argv[-2] == "--force-nocache"


def test_no_change_is_a_normal_outcome(tmp_path, fake, source, monkeypatch):
    """Uses the stand-in tests/fake-rpm-ostree (mode nochange: exit 0, no compose.json)."""
    engine = RpmOstreeEngine()
    first = engine.compose(make_request(tmp_path, source))
    assert (tmp_path / "work" / "compose.json").exists()
    monkeypatch.setenv("FAKE_RPM_OSTREE_MODE", "nochange")
    again = engine.compose(make_request(tmp_path, source))
    # The first run's compose.json must not be mistaken for a new one.
    assert not (tmp_path / "work" / "compose.json").exists()
    assert again.changed is False
    assert again.commit == first.commit and again.ref == "test/x86_64/host"
    assert again.compose_json == {} and again.compose_json_path is None


def test_no_change_without_any_commit_yet(tmp_path, fake, source, monkeypatch):
    """Uses the stand-in tests/fake-rpm-ostree."""
    monkeypatch.setenv("FAKE_RPM_OSTREE_MODE", "nochange")
    result = RpmOstreeEngine().compose(make_request(tmp_path, source))
    assert result.changed is False and result.commit is None


def test_failure_carries_the_output_tail(tmp_path, fake, source, monkeypatch):
    """Uses the stand-in tests/fake-rpm-ostree (mode fail: exit 1)."""
    monkeypatch.setenv("FAKE_RPM_OSTREE_MODE", "fail")
    log_path = tmp_path / "compose.log"
    with pytest.raises(ComposeError) as info:
        RpmOstreeEngine().compose(make_request(tmp_path, source, log_path=log_path))
    message = str(info.value)
    assert "exit 1" in message
    assert "error: Packages not found: no-such-package" in message
    assert str(source) in message
    assert "no-such-package" in log_path.read_text()
    assert "bubblewrap" not in message  # only a bwrap failure gets the chroot hint


@pytest.mark.parametrize("output", [
    "error: bwrap test failed, see <https://github.com/coreos/rpm-ostree/pull/429>: "
    "bwrap(true): Child process killed by signal 1",
    "bwrap: Failed to make / slave: Invalid argument",
])
def test_a_bubblewrap_failure_explains_the_chroot_it_needs(output):
    hint = rpmostree.bwrap_hint(output)
    assert "mock's default systemd-nspawn chroot" in hint and "mock.new_chroot" in hint


def test_runner_path_mapping(tmp_path, fake, monkeypatch):
    """Uses the stand-in tests/fake-rpm-ostree; every path it gets is the runner's view."""
    host_root = tmp_path / "host"
    host_root.mkdir()
    inner_root = tmp_path / "inner"
    inner_root.symlink_to(host_root)
    src = host_root / "src"
    (src / "rpms").mkdir(parents=True)
    subprocess.run(["createrepo_c", "--quiet", str(src / "rpms")], check=True)
    (src / "local.repo").write_text(f"[local]\nbaseurl={(src / 'rpms').as_uri()}\n")
    (src / "host.yaml").write_text("ref: mapped/host\nrepos: [local]\npackages: [alpha]\n")
    runner = MappedRunner(host_root, inner_root)
    request = ComposeRequest(
        treefile=load_treefile(src / "host.yaml", "x86_64"),
        repo=host_root / "repo",
        workdir=host_root / "work",
        extra_repos=[str(src / "rpms")],
    )
    result = RpmOstreeEngine(runner).compose(request)
    init, compose = runner.argvs
    assert init == ["ostree", "init", f"--repo={inner_root}/repo", "--mode=bare-user"]
    assert compose == build_compose_argv(
        f"{inner_root}/repo",
        f"{inner_root}/work/treefile/treefile.json",
        f"{inner_root}/work/compose.json",
    )
    assert logged_argvs(fake)[0][1:] == compose[1:]
    # Local repos in the flattened .repo file are given as the runner sees them.
    repo_file = (host_root / "work" / "treefile" / FLAT_REPO_FILE_NAME).read_text()
    assert f"baseurl=file://{inner_root}/src/rpms" in repo_file
    assert str(host_root) not in repo_file
    # The commit landed in the host-side repo, and the result reads it from there.
    commit = ostree("rev-parse", f"--repo={host_root / 'repo'}", "mapped/host").strip()
    assert result.commit == commit


def test_existing_repo_is_not_reinitialised(tmp_path, fake, source):
    """Uses the stand-in tests/fake-rpm-ostree."""
    repo = tmp_path / "work-repo"
    ostree("init", f"--repo={repo}", "--mode=bare-user")

    runner = MappedRunner(tmp_path, tmp_path)  # maps nothing; records every argv
    RpmOstreeEngine(runner).compose(make_request(tmp_path, source))
    assert [a[0] for a in runner.argvs] == ["rpm-ostree"]


def test_get_engine_picks_rpm_ostree_when_installed(fake):
    """Uses the stand-in tests/fake-rpm-ostree (as the installed rpm-ostree)."""
    assert isinstance(get_engine("auto"), RpmOstreeEngine)
    assert isinstance(get_engine("rpm-ostree"), RpmOstreeEngine)


@pytest.mark.parametrize(
    "content,complaint",
    [
        ("not json", "cannot read"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"ostree-commit": "' + "a" * 64 + '"}', "ref: expected a non-empty string"),
        ('{"ref": "r", "ostree-commit": "xyz"}', "ostree-commit: expected a 64-digit hex"),
    ],
)
def test_malformed_compose_json(tmp_path, content, complaint):
    path = tmp_path / "compose.json"
    path.write_text(content)
    with pytest.raises(ComposeError) as info:
        parse_compose_json(path)
    assert complaint in str(info.value) and str(path) in str(info.value)
