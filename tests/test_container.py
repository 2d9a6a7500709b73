# SPDX-License-Identifier: GPL-2.0-or-later
"""The image runs: real podman serves it, a real registry carries it (issue 14).

Build -> ``podman load`` -> ``podman run -p 127.0.0.1:PORT:8080`` -> stock ``ostree pull``
from the running container -> ``ostree admin deploy`` into a throwaway sysroot, once for
an image without a base image (our busybox server layer) and once on a base image made
here. Then build -> ``koji-hostimage push`` to Debian's ``docker-registry`` started here on
127.0.0.1 -> ``skopeo inspect`` shows the same digest -> ``podman run`` from the registry
serves a pull.

podman runs with a private storage root in a temp dir (vfs, cgroupfs, runc: crun refuses
this machine's cgroups; explicit rlimits: the defaults are refused here). Every container,
image and the registry are started and removed by these tests. scripts/setup-debian.sh
installs podman, runc, docker-registry and busybox-static, so a missing tool fails; only
a non-root user skips (podman's port mapping and ostree admin need root here).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from koji_hostimage.commands.main import main
from koji_hostimage.example.roundtrip import init_sysroot, remove_sysroot
from koji_hostimage.image.oci_reader import OciArchive
from koji_hostimage.image.serverlayer import find_busybox
from koji_hostimage.pipeline import BuildRequest, BuildResult, build_host_image

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="podman port mapping and ostree admin need root here")

RUN_LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
BASE_SERVER_CMD = ["httpd", "-f", "-p", "8080", "-h", "/srv/repo"]


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name}: not installed (scripts/setup-debian.sh installs it)"
    return path


def run(*argv: str | Path, timeout: float = 120) -> str:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Podman:
    """podman with a private storage root; remembers what it started."""

    def __init__(self, root: Path):
        self.base = [tool("podman"), "--root", str(root / "root"), "--runroot",
                     str(root / "run"), "--storage-driver=vfs", "--cgroup-manager=cgroupfs",
                     "--runtime", tool("runc")]

    def __call__(self, *args: str | Path) -> str:
        return run(*self.base, *args)

    def serve(self, image: str, *options: str) -> str:
        """``podman run -d -p 127.0.0.1:PORT:8080 IMAGE``; the URL, once it answers."""
        port = free_port()
        self("run", "-d", "--rm", *RUN_LIMITS, "-p", f"127.0.0.1:{port}:8080", *options,
             image)
        url = f"http://127.0.0.1:{port}/"
        assert b"mode=archive" in wait_http(url + "config")
        return url

    def cleanup(self) -> None:
        subprocess.run([*self.base, "rm", "--all", "--force", "--time", "0"],
                       capture_output=True, check=False)
        subprocess.run([*self.base, "rmi", "--all", "--force"], capture_output=True,
                       check=False)


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    engine = Podman(tmp_path_factory.mktemp("podman"))
    try:
        yield engine
    finally:
        engine.cleanup()


def build(content, out: Path, version: str, **changes) -> BuildResult:
    result = build_host_image(BuildRequest(treefile=content.treefile, output_dir=out,
                                           arch="x86_64", version=version, release="1",
                                           engine="dnf", **changes))
    assert result.archive is not None and result.manifest is not None
    return result


@pytest.fixture(scope="module")
def plain(example_content, tmp_path_factory) -> BuildResult:
    """Built without a base image: our busybox server layer."""
    return build(example_content, tmp_path_factory.mktemp("plain"), "2.0")


def pull_and_deploy(url: str, result: BuildResult, sysroot_dir: Path) -> None:
    """Stock ostree: pull from ``url`` into a throwaway sysroot and deploy the ref."""
    manifest = result.manifest
    assert manifest is not None
    sysroot = init_sysroot(sysroot_dir, url)
    try:
        run("ostree", "pull", f"--repo={sysroot.repo}", "origin", manifest.ref)
        run("ostree", "admin", "deploy", f"--sysroot={sysroot.path}",
            f"--os={sysroot.osname}", f"origin:{manifest.ref}")
        assert sysroot.deployed_commit() == manifest.commit
        greeter = sysroot.deployment_root() / "usr/bin/greeter"
        assert "greeter 1.0" in greeter.read_text()
    finally:
        remove_sysroot(sysroot_dir)


def test_podman_loads_runs_and_serves_an_image_without_base(
        podman: Podman, plain: BuildResult, tmp_path: Path):
    manifest = plain.manifest
    assert manifest is not None and manifest.oci is not None
    loaded = podman("load", "-i", plain.archive)
    assert "Loaded image: localhost/host:2.0-1" in loaded, loaded
    shown = json.loads(podman("image", "inspect", "localhost/host:2.0-1"))[0]
    assert shown["Labels"]["com.coreos.ostree-commit"] == manifest.commit
    assert shown["Labels"]["io.koji-hostimage.ostree.ref"] == manifest.ref
    assert shown["Config"]["User"] == "65534:65534"
    assert shown["Config"]["WorkingDir"] == "/srv/repo"
    assert "8080/tcp" in shown["Config"]["ExposedPorts"]
    url = podman.serve("localhost/host:2.0-1", "--name", "plain")
    pull_and_deploy(url, plain, tmp_path / "sysroot")
    # the server runs unprivileged, and stops at once (StopSignal: PID 1 ignores SIGTERM)
    assert podman("exec", "plain", "/bin/busybox", "id", "-u").strip() == "65534"
    started = time.monotonic()
    podman("stop", "plain")
    assert time.monotonic() - started < 5


@pytest.fixture(scope="module")
def base_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base image of our own making (umoci): busybox in /usr/bin, httpd linked to it
    in /usr/sbin, PATH and a non-root user in its config."""
    work = tmp_path_factory.mktemp("base")
    rootfs = work / "rootfs"
    (rootfs / "usr/bin").mkdir(parents=True)
    (rootfs / "usr/sbin").mkdir()
    shutil.copy(find_busybox(), rootfs / "usr/bin/busybox")
    (rootfs / "usr/sbin/httpd").symlink_to("../bin/busybox")
    (rootfs / "usr/share").mkdir()
    (rootfs / "usr/share/base-marker").write_text("made by test_container\n")
    layout = work / "layout"
    umoci = tool("umoci")
    run(umoci, "init", "--layout", layout)
    run(umoci, "new", "--image", f"{layout}:latest")
    layer = work / "layer.tar"
    run("tar", "-C", rootfs, "--owner=0", "--group=0", "-cf", layer, "usr")
    run(umoci, "raw", "add-layer", "--image", f"{layout}:latest", layer)
    run(umoci, "config", "--image", f"{layout}:latest", "--architecture=amd64", "--os=linux",
        "--config.env=PATH=/usr/sbin:/usr/bin", "--config.user=1000:1000")
    archive = work / "base.oci.tar"
    run("tar", "-C", layout, "-cf", archive, ".")
    return archive


def test_podman_runs_and_serves_an_image_on_a_base_image(
        podman: Podman, example_content, base_image: Path, tmp_path: Path):
    result = build(example_content, tmp_path / "out", "3.0", base_image=base_image,
                   server_cmd=list(BASE_SERVER_CMD))
    with OciArchive(base_image) as base, OciArchive(result.archive) as image:
        # the base's layers, then the content layer: no server layer of ours
        assert [la.digest for la in image.layers[:-1]] == [la.digest for la in base.layers]
    assert "Loaded image: localhost/host:3.0-1" in podman("load", "-i", result.archive)
    url = podman.serve("localhost/host:3.0-1", "--name", "based")
    pull_and_deploy(url, result, tmp_path / "sysroot")
    # the base's user and files are what runs
    assert podman("exec", "based", "busybox", "id", "-u").strip() == "1000"
    assert "test_container" in podman("exec", "based", "busybox", "cat",
                                      "/usr/share/base-marker")
    podman("rm", "--force", "--time", "0", "based")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """Debian's docker-registry on 127.0.0.1, plain HTTP, its own config and storage."""
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {tmp_path / 'registry-data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: test-only\n"
    )
    proc = subprocess.Popen([tool("docker-registry"), "serve", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_push_to_a_registry_keeps_the_digest_and_podman_runs_it(
        podman: Podman, plain: BuildResult, registry: str, tmp_path: Path, capsys, caplog):
    manifest = plain.manifest
    assert manifest is not None and manifest.oci is not None
    dest = f"docker://{registry}/os/host:2.0-1"
    # refused: the registry speaks plain HTTP and TLS is verified by default
    assert main(["push", str(plain.archive), dest]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert "refused" in errors[0] and "HTTP response to HTTPS client" in errors[0]
    assert "Traceback" not in capsys.readouterr().err

    assert main(["push", str(plain.archive), dest, "--dest-tls-verify=false"]) == 0
    assert capsys.readouterr().out == f"{manifest.oci.manifest_digest} {dest}\n"
    shown = json.loads(run("skopeo", "inspect", "--tls-verify=false", dest))
    assert shown["Digest"] == manifest.oci.manifest_digest
    assert shown["Labels"]["com.coreos.ostree-commit"] == manifest.commit

    url = podman.serve(f"{registry}/os/host:2.0-1", "--tls-verify=false")
    repo = tmp_path / "client"
    run("ostree", "init", f"--repo={repo}", "--mode=archive")
    run("ostree", "remote", "add", f"--repo={repo}", "--no-gpg-verify", "r", url)
    run("ostree", "pull", f"--repo={repo}", "r", manifest.ref)
    assert run("ostree", "rev-parse", f"--repo={repo}", manifest.ref).strip() == manifest.commit
    digest = podman("image", "inspect", "--format", "{{.Digest}}", f"{registry}/os/host:2.0-1")
    assert digest.strip() == manifest.oci.manifest_digest
