# SPDX-License-Identifier: GPL-2.0-or-later
"""The main job: a whole OTA round trip on the built-in example content.

    python3 -m koji_hostimage.example.roundtrip [--workdir DIR] [--keep]

1. build the example content v1 and v2 (v2 upgrades ``greeter`` and ``host-release``);
2. build host image v1, then v2 with a static delta from v1 (``--previous`` v1's archive);
3. serve v2's archive with HostImageServer, straight from the tar;
4. deploy v1 into a throwaway sysroot: ``ostree admin init-fs``, ``os-init``, the remote,
   ``pull-local`` from v1's repo (extracted from v1's archive), ``ostree admin deploy``;
5. upgrade that sysroot to v2 over HTTP (``ostree admin upgrade``: pull + deploy);
6. print versions, bytes transferred and requests served; exit non-zero on any failure.

The steps are functions the OTA test (tests/test_ota.py) reuses with signing turned on.
A deployment root carries the immutable attribute (ostree sets it), so removing a
sysroot goes through ``remove_sysroot``.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from koji_hostimage.compose.base import host_arch
from koji_hostimage.errors import HostImageError, OSTreeError
from koji_hostimage.pipeline import BuildRequest, BuildResult, build_host_image
from koji_hostimage.runner import HostRunner

log = logging.getLogger(__name__)

OSNAME = "exampleos"
REMOTE = "origin"
V1_VERSION = "1.0.0"
V2_VERSION = "1.0.1"
_STATUS_RE = re.compile(r"^\s*\*?\s*(\S+)\s+([0-9a-f]{64})\.(\d+)")


class RoundTripError(HostImageError):
    """A step of the round trip did not do what it must (the message says which)."""


@dataclass
class RoundTripConfig:
    workdir: Path
    arch: str = ""  # default: this machine's
    engine: str = "auto"
    sign_key: str | None = None  # GPG key id: builds are signed...
    gpg_homedir: Path | None = None
    public_key: Path | None = None  # ...and the node's remote verifies with this key


@dataclass
class Sysroot:
    """A throwaway OSTree sysroot (what ``/`` of a node would be)."""

    path: Path
    osname: str = OSNAME

    @property
    def repo(self) -> Path:
        return self.path / "ostree" / "repo"

    def deployments(self) -> list[tuple[str, int]]:
        """(commit, serial) of each deployment, the default (newest) first."""
        output = _run(["ostree", "admin", "status", f"--sysroot={self.path}"])
        found = []
        for line in output.splitlines():
            match = _STATUS_RE.match(line)
            if match and match.group(1) == self.osname:
                found.append((match.group(2), int(match.group(3))))
        return found

    def deployed_commit(self) -> str:
        deployments = self.deployments()
        if not deployments:
            raise RoundTripError(f"{self.path}: no deployments of {self.osname}")
        return deployments[0][0]

    def deployment_root(self, commit: str | None = None) -> Path:
        commit = commit or self.deployed_commit()
        serial = next(s for c, s in self.deployments() if c == commit)
        return self.path / "ostree" / "deploy" / self.osname / "deploy" / f"{commit}.{serial}"


@dataclass
class RoundTripResult:
    v1: BuildResult
    v2: BuildResult
    sysroot: Sysroot
    before: str  # commit deployed before the upgrade
    after: str  # commit deployed after it
    requests: int  # HTTP requests the server answered during the upgrade
    bytes_served: int  # body bytes it sent

    def summary_lines(self) -> list[str]:
        m1, m2 = self.v1.manifest, self.v2.manifest
        assert m1 is not None and m2 is not None
        delta = next((d.bytes for d in m2.deltas if d.from_commit == m1.commit), None)
        return [
            f"v1: {m1.nvr}.{m1.arch} commit {m1.commit}",
            f"v2: {m2.nvr}.{m2.arch} commit {m2.commit}",
            f"delta v1->v2 in the archive: {delta} bytes",
            f"deployed before: {self.before} (version {m1.version})",
            f"deployed after:  {self.after} (version {m2.version})",
            f"upgrade over HTTP: {self.requests} requests, {self.bytes_served} bytes served",
        ]


def _run(argv: Sequence[str]) -> str:
    result = HostRunner().run(argv)
    if result.returncode != 0:
        raise OSTreeError(result.argv, result.returncode, result.output,
                          what=" ".join(argv[:3]))
    return result.output


# --- builds ------------------------------------------------------------------------------


def build_pair(config: RoundTripConfig) -> tuple[BuildResult, BuildResult]:
    """Build example content v1 and v2, then host images v1 and v2 (delta from v1)."""
    from .content import UPDATE_OVERRIDES, build_example_content

    workdir = Path(config.workdir)
    content_v1 = build_example_content(workdir / "content-v1")
    content_v2 = build_example_content(workdir / "content-v2",
                                       version_overrides=UPDATE_OVERRIDES)
    v1 = _build(config, content_v1.treefile, workdir / "out-v1", V1_VERSION, [])
    assert v1.archive is not None
    v2 = _build(config, content_v2.treefile, workdir / "out-v2", V2_VERSION, [v1.archive])
    return v1, v2


def _build(config: RoundTripConfig, treefile: Path, output_dir: Path, version: str,
           previous: list[Path]) -> BuildResult:
    result = build_host_image(BuildRequest(
        treefile=treefile,
        output_dir=output_dir,
        arch=config.arch or host_arch(),
        version=version,
        engine=config.engine,
        previous=previous,
        sign_key=config.sign_key,
        gpg_homedir=config.gpg_homedir,
    ))
    if not result.changed or result.archive is None:
        raise RoundTripError(f"{treefile}: build of {version} produced no archive")
    log.info("built %s", result.archive)
    return result


def extract_repo(archive: Path, dest: Path) -> Path:
    """The archive's srv/repo, unpacked (what a node does to `pull-local` from an image)."""
    from koji_hostimage.image.oci_reader import OciArchive

    with OciArchive(archive) as image:
        image.verify()  # every blob against its digest before its content is trusted
        image.extract_content(dest, prefix="srv/repo/")
    return dest


# --- the node ----------------------------------------------------------------------------


def init_sysroot(path: Path, url: str, public_key: Path | None = None,
                 osname: str = OSNAME) -> Sysroot:
    """A fresh sysroot with the OS stateroot and a remote pointing at ``url``."""
    sysroot = Sysroot(Path(path), osname)
    sysroot.path.mkdir(parents=True, exist_ok=True)
    _run(["ostree", "admin", "init-fs", str(sysroot.path)])
    _run(["ostree", "admin", "os-init", f"--sysroot={sysroot.path}", osname])
    add_remote(sysroot, url, public_key)
    return sysroot


def add_remote(sysroot: Sysroot, url: str, public_key: Path | None = None) -> None:
    """``ostree remote add``; with a public key, verify commits and summary with it."""
    repo = f"--repo={sysroot.repo}"
    if public_key is None:
        _run(["ostree", "remote", "add", repo, "--force", "--no-gpg-verify", REMOTE, url])
        return
    _run(["ostree", "remote", "add", repo, "--force", "--set=gpg-verify=true",
          "--set=gpg-verify-summary=true", REMOTE, url])
    _run(["ostree", "remote", "gpg-import", repo, f"--keyring={public_key}", REMOTE])


def deploy_from_repo(sysroot: Sysroot, source_repo: Path, ref: str) -> str:
    """Deploy ``ref`` from a local repo, recording the remote as its origin."""
    _run(["ostree", "pull-local", f"--repo={sysroot.repo}", f"--remote={REMOTE}",
          str(source_repo), ref])
    _run(["ostree", "admin", "deploy", f"--sysroot={sysroot.path}", f"--os={sysroot.osname}",
          f"{REMOTE}:{ref}"])
    return sysroot.deployed_commit()


def upgrade(sysroot: Sysroot) -> str:
    """``ostree admin upgrade``: pull the origin's ref over HTTP and deploy it."""
    _run(["ostree", "admin", "upgrade", f"--sysroot={sysroot.path}", f"--os={sysroot.osname}"])
    return sysroot.deployed_commit()


def remove_sysroot(path: Path) -> None:
    """Delete a sysroot: deployment roots are immutable (chattr +i), so clear that first."""
    path = Path(path)
    for deployment in path.glob("ostree/deploy/*/deploy/*"):
        if deployment.is_dir():
            HostRunner().run(["chattr", "-i", str(deployment)])
    shutil.rmtree(path, ignore_errors=True)


# --- the whole trip ---------------------------------------------------------------------


def run_roundtrip(config: RoundTripConfig,
                  builds: tuple[BuildResult, BuildResult] | None = None) -> RoundTripResult:
    """The whole trip; ``builds`` (v1, v2) skips building when they already exist."""
    from koji_hostimage.serve.server import HostImageServer
    from koji_hostimage.serve.sources import ArchiveTree

    workdir = Path(config.workdir)
    v1, v2 = builds or build_pair(config)
    assert v1.manifest is not None and v2.manifest is not None and v2.archive is not None
    assert v1.archive is not None
    v1_repo = workdir / "v1-repo"
    if v1_repo.exists():
        shutil.rmtree(v1_repo)
    extract_repo(v1.archive, v1_repo)
    with ArchiveTree(v2.archive) as tree, HostImageServer(tree, port=0) as server:
        log.info("serving %s at %s", v2.archive.name, server.url)
        remove_sysroot(workdir / "sysroot")  # a fresh node every time
        sysroot = init_sysroot(workdir / "sysroot", server.url, config.public_key)
        before = deploy_from_repo(sysroot, v1_repo, v1.manifest.ref)
        if before != v1.manifest.commit:
            raise RoundTripError(f"deployed {before}, expected v1's commit {v1.manifest.commit}")
        served_before = server.stats()
        after = upgrade(sysroot)
        served_after = server.stats()
    if after != v2.manifest.commit:
        raise RoundTripError(f"after the upgrade {after} is deployed, expected v2's commit "
                             f"{v2.manifest.commit}")
    return RoundTripResult(
        v1=v1, v2=v2, sysroot=sysroot, before=before, after=after,
        requests=served_after.requests - served_before.requests,
        bytes_served=served_after.body_bytes - served_before.body_bytes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m koji_hostimage.example.roundtrip",
        description="Build v1 and v2 of the example host image, deploy v1 into a "
        "throwaway sysroot and upgrade it to v2 over HTTP.")
    parser.add_argument("--workdir", type=Path,
                        help="keep everything here (default: a temporary dir, removed)")
    parser.add_argument("--engine", default="auto", help="compose engine [auto]")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    keep = args.workdir is not None
    workdir = Path(args.workdir) if keep else Path(tempfile.mkdtemp(prefix="roundtrip-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run_roundtrip(RoundTripConfig(workdir=workdir, engine=args.engine))
    except HostImageError as exc:
        log.error("round trip failed: %s", exc)
        return 1
    finally:
        if not keep:
            remove_sysroot(workdir / "sysroot")
            shutil.rmtree(workdir, ignore_errors=True)
    # the user-facing result of the main job
    sys.stdout.write("OTA round trip: OK\n" + "\n".join(result.summary_lines()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
