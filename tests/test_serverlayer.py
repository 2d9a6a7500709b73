# SPDX-License-Identifier: GPL-2.0-or-later
"""Choosing the server of a base-less image (issue 14): the busybox server layer is the
default of `koji-hostimage build` and of the kojid plugin; an image that cannot serve
(`--no-server`, kojid `server = none`) is only built when asked for; a base image wins.
Real builds (dnf engine) and the real config reader; tests/test_oci.py checks the layer
itself and tests/test_container.py runs the images with podman."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from koji_hostimage.commands.main import main
from koji_hostimage.image.oci_reader import OciArchive
from koji_hostimage.image.serverlayer import SERVER_CMD, find_busybox
from koji_hostimage.koji import builder as kojibuild
from koji_hostimage.koji import config as builder_config
from koji_hostimage.koji.options import with_defaults
from koji_hostimage.manifest import Source

ARCH = "x86_64"


def cli_build(example_content, out: Path, *extra: str) -> int:
    return main(["build", str(example_content.treefile), "-o", str(out), "--arch", ARCH,
                 "--engine", "dnf", "--version", "7", *extra])


def test_build_serves_by_default_and_not_only_when_asked(example_content, tmp_path: Path):
    assert cli_build(example_content, tmp_path / "default") == 0
    with OciArchive(tmp_path / "default/host-7-1.x86_64.oci.tar") as image:
        assert len(image.layers) == 2 and image.config["config"]["Cmd"] == SERVER_CMD
        assert image.config["config"]["User"] == "65534:65534"
    assert cli_build(example_content, tmp_path / "none", "--no-server") == 0
    with OciArchive(tmp_path / "none/host-7-1.x86_64.oci.tar") as image:
        assert len(image.layers) == 1 and "Cmd" not in image.config["config"]


def test_no_server_and_base_image_exclude_each_other(example_content, tmp_path: Path,
                                                    capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_build(example_content, tmp_path, "--no-server", "--base-image", "b.oci.tar")
    assert exit_info.value.code == 2
    assert "--base-image: not allowed with argument --no-server" in capsys.readouterr().err


def test_a_missing_busybox_fails_before_the_compose(example_content, tmp_path: Path, caplog):
    out = tmp_path / "out"
    assert cli_build(example_content, out, "--busybox", str(tmp_path / "nope")) == 1
    message = caplog.records[-1].getMessage()
    assert f"--busybox: {tmp_path / 'nope'}: not found" in message
    assert not out.exists() or not list(out.iterdir())  # nothing was composed


def test_find_busybox_names_where_it_looked(monkeypatch, tmp_path: Path):
    from koji_hostimage.errors import ArchiveError
    from koji_hostimage.image import serverlayer

    monkeypatch.setattr(serverlayer, "BUSYBOX_PATHS", (tmp_path / "a", tmp_path / "b"))
    with pytest.raises(ArchiveError, match=f"looked for {tmp_path / 'a'}, {tmp_path / 'b'}"
                       ".*--no-server; kojid: server = none"):
        serverlayer.find_busybox(None)


def _request(config, base_image=None):
    return kojibuild.build_request(
        opts=with_defaults({}), config=config, treefile=Path("/c/host.yaml"),
        output_dir=Path("/o"), workdir=Path("/w"), arch=ARCH, name="host", version="1",
        release="1", koji_repo="http://koji/repos/b/1/x86_64", previous=[],
        base_image=base_image, source=Source(), runner=None)


def test_kojid_config_chooses_the_server(tmp_path: Path):
    path = tmp_path / "hostimage.conf"
    default = _request(builder_config.load_builder_config(path))  # no file: defaults
    assert default.server == "busybox" and default.busybox == find_busybox()
    assert _request(builder_config.BuilderConfig(), Path("/b.tar")).busybox is None

    copy = tmp_path / "busybox"
    copy.write_bytes(find_busybox().read_bytes())
    path.write_text(f"[hostimage]\nserver = busybox\nbusybox = {copy}\n")
    assert _request(builder_config.load_builder_config(path)).busybox == copy
    path.write_text("[hostimage]\nserver = none\n")
    none = _request(builder_config.load_builder_config(path))
    assert none.server == "none" and none.busybox is None

    for text, message in (
        ("server = nginx\n", "server: expected one of busybox, none, got 'nginx'"),
        (f"busybox = {tmp_path / 'nope'}\n", f"busybox: {tmp_path / 'nope'}: not found"),
    ):
        path.write_text("[hostimage]\n" + textwrap.dedent(text))
        with pytest.raises(Exception, match=f"{path}: \\[hostimage\\] {message}"):
            builder_config.load_builder_config(path)


def test_kubernetes_example_matches_the_image():
    """conf/kubernetes/hostimage.yaml: readiness on /config, the image's port and user."""
    import yaml

    from koji_hostimage.image.serverlayer import SERVER_PORT, SERVER_USER

    path = Path(__file__).resolve().parent.parent / "conf/kubernetes/hostimage.yaml"
    deployment, service = yaml.safe_load_all(path.read_text())
    assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/config"
    assert container["ports"][0]["containerPort"] == SERVER_PORT
    uid, gid = SERVER_USER.split(":")
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(uid), int(gid))
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
