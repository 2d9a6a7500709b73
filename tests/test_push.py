# SPDX-License-Identifier: GPL-2.0-or-later
"""`koji-hostimage push` without a registry: real skopeo into an ``oci:`` layout, the
options it passes through, and the digest check. (tests/test_container.py pushes to a
real registry.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from koji_hostimage.commands import push
from koji_hostimage.commands.main import build_parser, main
from koji_hostimage.image.oci_reader import OciArchive
from koji_hostimage.pipeline import BuildRequest, build_host_image


@pytest.fixture(scope="module")
def archive(example_content, tmp_path_factory) -> Path:
    result = build_host_image(BuildRequest(
        treefile=example_content.treefile, output_dir=tmp_path_factory.mktemp("push"),
        arch="x86_64", version="5.0", engine="dnf"))
    assert result.archive is not None
    return result.archive


def test_push_to_an_oci_layout_keeps_and_prints_the_digest(archive: Path, tmp_path: Path,
                                                           capsys):
    with OciArchive(archive) as image:
        expected = image.manifest_digest
    dest = f"oci:{tmp_path / 'layout'}:host-5.0-1"
    assert main(["push", str(archive), dest]) == 0
    assert capsys.readouterr().out == f"{expected} {dest}\n"
    index = json.loads((tmp_path / "layout/index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [expected]


def test_credentials_and_tls_options_reach_skopeo(tmp_path: Path):
    args = build_parser().parse_args([
        "push", "a.oci.tar", "docker://r.example/os/host:1-1", "--authfile", "/a/auth.json",
        "--dest-creds", "u:p", "--dest-cert-dir", "/certs", "--dest-tls-verify", "false",
        "--dest-registry-token", "T", "--retry-times", "3"])
    argv = push.skopeo_argv(args, tmp_path / "digest")
    assert argv[:4] == ["skopeo", "copy", "--preserve-digests",
                        f"--digestfile={tmp_path / 'digest'}"]
    assert set(argv[4:-2]) == {"--authfile=/a/auth.json", "--dest-creds=u:p",
                               "--dest-cert-dir=/certs", "--dest-tls-verify=false",
                               "--dest-registry-token=T", "--retry-times=3"}
    assert argv[-2:] == [f"oci-archive:{Path('a.oci.tar').absolute()}",
                         "docker://r.example/os/host:1-1"]


def test_a_refused_push_is_one_line(archive: Path, tmp_path: Path, caplog, capsys):
    # skopeo refuses a destination it cannot write: one line, no traceback
    assert main(["push", str(archive), "no-such-transport:x"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert "refused" in errors[0] and "no-such-transport" in errors[0]
    assert capsys.readouterr().out == ""
    assert main(["push", str(tmp_path / "missing.oci.tar"), "oci:x"]) == 1
    assert str(tmp_path / "missing.oci.tar") in caplog.records[-1].getMessage()


def test_a_changed_digest_is_refused(archive: Path, tmp_path: Path, caplog):
    """A stand-in skopeo that 'pushes' another digest: the check must catch it."""
    fake = tmp_path / "skopeo"
    fake.write_text("#!/bin/sh\nfor a; do case $a in --digestfile=*) "
                    "echo sha256:0000 > ${a#--digestfile=};; esac; done\n")
    fake.chmod(0o755)
    assert main(["push", str(archive), "oci:x", "--skopeo", str(fake)]) == 1
    message = caplog.records[-1].getMessage()
    assert "pushed manifest digest sha256:0000, expected the archive's sha256:" in message


def test_skopeo_reason_takes_the_fatal_message():
    output = ('Copying blob x\ntime="2026" level=fatal msg="trying to reuse blob: '
              'unauthorized: \\"authentication required\\""\n')
    assert push.skopeo_reason(output) == ('trying to reuse blob: unauthorized: '
                                          '"authentication required"')
    assert push.skopeo_reason("Error: plain\n") == "Error: plain"
    assert subprocess.run(["skopeo", "--version"], capture_output=True).returncode == 0
