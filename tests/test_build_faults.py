# SPDX-License-Identifier: GPL-2.0-or-later
"""Fault injection for `koji-hostimage build`: a SIGKILL at every stage boundary, a full
disk (a small tmpfs), a read-only output directory and things in the outputs' way.

After each: nothing under the outputs' final names, a one-line error (no traceback), and
the next build, with and without --work-repo, produces the outputs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from koji_hostimage.commands.main import main

ARCH = "x86_64"
STEM = "host-1-1.x86_64"
OUTPUTS = sorted(f"{STEM}.{suffix}" for suffix in ("oci.tar", "hostimage.json",
                                                    "compose.json", "compose.log"))

# Runs `koji-hostimage build` with one function replaced by a SIGKILL of the process:
# the build dies exactly at the boundary before that stage, as `kill -9` would leave it.
CHILD = """
import os, signal, sys
from koji_hostimage import pipeline
from koji_hostimage.image import oci_writer
module = {"pipeline": pipeline, "oci_writer": oci_writer}[sys.argv[1]]
getattr(module, sys.argv[2])
setattr(module, sys.argv[2], lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
from koji_hostimage.commands.main import main
sys.exit(main(sys.argv[3:]))
"""

# (module, function): the stage that never starts
BOUNDARIES = [
    ("pipeline", "_compose"),  # after loading the treefile
    ("pipeline", "_verify"),  # after the compose committed to the work repo
    ("pipeline", "_export"),  # after verifying
    ("pipeline", "_manifest"),  # after exporting
    ("oci_writer", "write_oci_archive"),  # after the manifest
    ("pipeline", "_publish"),  # after the archive was written, before any rename
]


def build_argv(example, out: Path, *extra: str) -> list[str]:
    return ["build", str(example.treefile), "-o", str(out), "--arch", ARCH, "--engine", "dnf",
            "--version", "1", *extra]


def finals(out: Path) -> list[str]:
    """What is in ``out`` under a name that is not a scratch (dot) name."""
    return sorted(name for name in os.listdir(out) if not name.startswith("."))


def fails_in_one_line(argv: list[str], caplog: pytest.LogCaptureFixture, *expected: str
                      ) -> str:
    """Run the command in this process: an exception other than the project's own would
    propagate here (the traceback a user would see); its own is logged as one line."""
    caplog.clear()
    with caplog.at_level("ERROR", logger="koji_hostimage"):
        assert main(argv) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, errors
    line = errors[0]
    assert "\n" not in line and line.startswith("koji-hostimage build: error: ")
    for text in expected:
        assert text in line, line
    return line


@pytest.fixture(scope="module")
def shared_work_repo(example_content, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work repo that already has the build's commit: builds with it only package."""
    work_repo = tmp_path_factory.mktemp("faults") / "work-repo"
    assert main(build_argv(example_content, work_repo.parent / "out", "--work-repo",
                           str(work_repo))) == 0
    return work_repo


@pytest.mark.parametrize(("module", "function"), BOUNDARIES,
                         ids=[f for _, f in BOUNDARIES])
def test_killed_build_leaves_nothing_and_the_next_build_delivers(
        example_content, tmp_path: Path, shared_work_repo: Path, module: str, function: str):
    out, work_repo = tmp_path / "out", tmp_path / "work-repo"
    if function not in ("_compose", "_verify"):
        # killed after a compose: start from a work repo with the commit (saves a compose);
        # the _verify case kills right after a fresh commit
        shutil.copytree(shared_work_repo, work_repo, symlinks=True)
    killed = subprocess.run(
        [sys.executable, "-c", CHILD, module, function,
         *build_argv(example_content, out, "--work-repo", str(work_repo))],
        capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert finals(out) == []
    assert any(name.startswith(".work-") for name in os.listdir(out))  # what a kill leaves
    # retried with the same work repo: the compose is unchanged, the build is not lost
    assert main(build_argv(example_content, out, "--work-repo", str(work_repo))) == 0
    assert sorted(os.listdir(out)) == OUTPUTS  # the killed build's scratch is gone
    for name in OUTPUTS:
        assert (out / name).stat().st_mode & 0o777 == 0o644, name


def test_killed_build_then_a_build_without_work_repo(example_content, tmp_path: Path):
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", CHILD, "pipeline", "_publish",
                             *build_argv(example_content, out)],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert finals(out) == [] and os.listdir(out)  # the scratch of the killed build
    assert main(build_argv(example_content, out)) == 0
    assert sorted(os.listdir(out)) == OUTPUTS  # the stale scratch is gone too


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def remount(mount: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


# 1m: full while composing (our log write); 2m: while writing the archive
@pytest.mark.parametrize("size", ["1m", "2m"])
def test_disk_full_is_one_line_and_leaves_nothing(example_content, tmpfs: Path,
                                                  tmp_path: Path, size: str, caplog):
    remount(tmpfs, f"size={size}")
    out, work_repo = tmpfs / "out", str(tmp_path / "wr")
    fails_in_one_line(build_argv(example_content, out, "--work-repo", work_repo), caplog,
                      "No space left on device", str(out))
    assert os.listdir(out) == []  # nor any scratch: removed on the way out
    remount(tmpfs, "size=64m")
    assert main(build_argv(example_content, out, "--work-repo", work_repo)) == 0
    assert finals(out) == OUTPUTS
    (tmpfs / "other").mkdir()
    assert main(build_argv(example_content, tmpfs / "other")) == 0  # without --work-repo
    assert finals(tmpfs / "other") == OUTPUTS


def test_read_only_output_dir_is_one_line(example_content, tmpfs: Path, shared_work_repo,
                                          caplog):
    remount(tmpfs, "ro")
    argv = ["--work-repo", str(shared_work_repo)]
    fails_in_one_line(build_argv(example_content, tmpfs, *argv), caplog, str(tmpfs),
                      "expected a writable directory")
    fails_in_one_line(build_argv(example_content, tmpfs / "sub", *argv), caplog,
                      str(tmpfs / "sub"), "Read-only file system")
    remount(tmpfs, "rw,size=64m")
    assert main(build_argv(example_content, tmpfs, *argv)) == 0
    assert finals(tmpfs) == OUTPUTS


def test_output_dir_that_is_a_file_is_one_line(example_content, tmp_path: Path, caplog):
    target = tmp_path / "file"
    target.write_text("not a directory\n")
    fails_in_one_line(build_argv(example_content, target), caplog, str(target),
                      "expected a directory, got a file")
    assert target.read_text() == "not a directory\n"


@pytest.mark.parametrize("blocked", [f"{STEM}.oci.tar", f"{STEM}.hostimage.json"])
def test_a_directory_at_an_output_name_blocks_all_outputs(
        example_content, tmp_path: Path, shared_work_repo: Path, blocked: str, caplog):
    out = tmp_path / "out"
    (out / blocked).mkdir(parents=True)
    argv = build_argv(example_content, out, "--work-repo", str(shared_work_repo))
    fails_in_one_line(argv, caplog, str(out / blocked), "got a directory")
    assert os.listdir(out) == [blocked]  # nothing else: not the archive, no scratch
    (out / blocked).rmdir()
    assert main(argv) == 0
    assert finals(out) == OUTPUTS
