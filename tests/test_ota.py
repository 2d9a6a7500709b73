# SPDX-License-Identifier: GPL-2.0-or-later
"""The OTA round trip: example content v1 and v2 built with the real pipeline (dnf
engine, real rpmbuild/createrepo_c RPMs), v2 served by HostImageServer straight from its
archive, a throwaway sysroot deployed at v1 with `ostree admin deploy` and upgraded to v2
over real HTTP with `ostree admin upgrade`; with signing on, GPG verification on the
node; tampering and wrong keys refused; the same commit packed twice byte-identical.

No stand-ins: every step runs the real tool.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gpgtools import GpgKey, make_gpg_key, remove_gpg_key

from koji_hostimage.compose.base import ComposeResult
from koji_hostimage.errors import OSTreeError
from koji_hostimage.example.roundtrip import (
    RoundTripConfig,
    Sysroot,
    build_pair,
    deploy_from_repo,
    extract_repo,
    init_sysroot,
    remove_sysroot,
    run_roundtrip,
    upgrade,
)
from koji_hostimage.pipeline import BuildRequest, BuildResult, package_commit
from koji_hostimage.serve.server import HostImageServer
from koji_hostimage.serve.sources import ArchiveTree, DirectoryTree

GREETER = "usr/bin/greeter"


@dataclass
class Pair:
    root: Path
    v1: BuildResult
    v2: BuildResult
    v1_repo: Path  # v1's srv/repo, unpacked: what a node is installed from

    @property
    def ref(self) -> str:
        assert self.v2.manifest is not None
        return self.v2.manifest.ref


def _pair(root: Path, key: GpgKey | None = None) -> Pair:
    config = RoundTripConfig(workdir=root, engine="dnf",
                             sign_key=key.fingerprint if key else None,
                             gpg_homedir=key.homedir if key else None)
    v1, v2 = build_pair(config)
    assert v1.archive is not None
    return Pair(root, v1, v2, extract_repo(v1.archive, root / "v1-repo-unpacked"))


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return _pair(tmp_path_factory.mktemp("ota-unsigned"))


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, gpg_key: GpgKey) -> Pair:
    return _pair(tmp_path_factory.mktemp("ota-signed"), gpg_key)


@pytest.fixture
def sysroot_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sysroot"
    yield path
    remove_sysroot(path)  # deployment roots are immutable: pytest could not delete them
    assert not path.exists()


def test_roundtrip_moves_the_node_from_v1_to_v2(unsigned: Pair, tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="koji_hostimage.serve.access")
    config = RoundTripConfig(workdir=tmp_path, engine="dnf")
    try:
        result = run_roundtrip(config, builds=(unsigned.v1, unsigned.v2))
        m1, m2 = unsigned.v1.manifest, unsigned.v2.manifest
        assert m1 is not None and m2 is not None
        assert result.before == m1.commit and result.after == m2.commit != m1.commit
        # v1 stays deployed as the rollback entry
        assert [c for c, _ in result.sysroot.deployments()] == [m2.commit, m1.commit]
        old = (result.sysroot.deployment_root(m1.commit) / GREETER).read_text()
        new = (result.sysroot.deployment_root(m2.commit) / GREETER).read_text()
        assert "greeter 1.0" in old and "greeter 1.1" in new
        assert result.requests > 0 and result.bytes_served > 0
        served = [
            r.getMessage() for r in caplog.records if r.name == "koji_hostimage.serve.access"
        ]
        # the node took the static delta v1 -> v2 the archive ships
        assert any("/superblock 200" in line for line in served), served
        assert "v2: host-1.0.1-1" in "\n".join(result.summary_lines())
    finally:
        remove_sysroot(tmp_path / "sysroot")


def _serve_and_deploy_v1(pair: Pair, sysroot_dir: Path, url: str,
                         public_key: Path | None) -> Sysroot:
    sysroot = init_sysroot(sysroot_dir, url, public_key)
    deploy_from_repo(sysroot, pair.v1_repo, pair.ref)
    return sysroot


def test_signed_update_verifies_on_the_node(signed: Pair, gpg_key: GpgKey, sysroot_dir: Path):
    assert signed.v2.archive is not None and signed.v2.manifest is not None
    with ArchiveTree(signed.v2.archive) as tree, HostImageServer(tree, port=0) as server:
        sysroot = _serve_and_deploy_v1(signed, sysroot_dir, server.url, gpg_key.public_key)
        assert upgrade(sysroot) == signed.v2.manifest.commit
    remote = (sysroot.repo / "config").read_text()
    assert "gpg-verify=true" in remote and "gpg-verify-summary=true" in remote


def test_wrong_key_is_refused(signed: Pair, sysroot_dir: Path):
    other = make_gpg_key("Not The Builder")
    try:
        assert signed.v2.archive is not None and signed.v1.manifest is not None
        with ArchiveTree(signed.v2.archive) as tree, HostImageServer(tree, port=0) as server:
            sysroot = _serve_and_deploy_v1(signed, sysroot_dir, server.url, other.public_key)
            with pytest.raises(OSTreeError, match="public key not found"):
                upgrade(sysroot)
        assert sysroot.deployed_commit() == signed.v1.manifest.commit
    finally:
        remove_gpg_key(other)


def _tampered_copy(pair: Pair, dest: Path) -> Path:
    assert pair.v2.archive is not None
    return extract_repo(pair.v2.archive, dest)


def test_tampered_summary_is_refused(signed: Pair, gpg_key: GpgKey, sysroot_dir: Path,
                                     tmp_path: Path):
    repo = _tampered_copy(signed, tmp_path / "served")
    summary = repo / "summary"
    data = bytearray(summary.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern: the signature no longer matches
    summary.write_bytes(bytes(data))
    with DirectoryTree(repo) as tree, HostImageServer(tree, port=0) as server:
        sysroot = _serve_and_deploy_v1(signed, sysroot_dir, server.url, gpg_key.public_key)
        with pytest.raises(OSTreeError, match="BAD signature"):
            upgrade(sysroot)


def test_tampered_content_is_refused(signed: Pair, gpg_key: GpgKey, sysroot_dir: Path,
                                     tmp_path: Path):
    """Every way in for the changed file is altered: the delta parts and the loose
    object. Whatever path ostree takes, the bytes do not match their checksums."""
    repo = _tampered_copy(signed, tmp_path / "served")
    for part in repo.glob("deltas/*/*/[0-9]*"):
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0xFF
        part.write_bytes(bytes(data))
    for obj in repo.glob("objects/*/*.filez"):
        data = bytearray(obj.read_bytes())
        data[-5] ^= 0xFF
        obj.write_bytes(bytes(data))
    with DirectoryTree(repo) as tree, HostImageServer(tree, port=0) as server:
        sysroot = _serve_and_deploy_v1(signed, sysroot_dir, server.url, gpg_key.public_key)
        with pytest.raises(OSTreeError, match="(?i)corrupt|checksum"):
            upgrade(sysroot)
    assert signed.v1.manifest is not None
    assert sysroot.deployed_commit() == signed.v1.manifest.commit


def test_same_commit_packs_into_identical_bytes(unsigned: Pair, tmp_path: Path):
    """The v2 archive, packed again from v2's commit, is the same file byte for byte."""
    v2 = unsigned.v2
    assert v2.manifest is not None and v2.archive is not None and v2.compose_json_path
    # v2's work repo is gone with its build; the archive's repo holds the same commit
    work_repo = extract_repo(v2.archive, tmp_path / "from-archive")
    compose = ComposeResult(changed=True, ref=v2.manifest.ref, commit=v2.manifest.commit,
                            engine=v2.manifest.engine, compose_json_path=v2.compose_json_path)
    outputs = []
    for attempt in ("again-1", "again-2"):
        request = BuildRequest(treefile=Path(v2.manifest.source.treefile or "host.yaml"),
                               output_dir=tmp_path / attempt, arch=v2.manifest.arch,
                               name=v2.manifest.name, version=v2.manifest.version,
                               previous=[unsigned.v1.archive])
        outputs.append(package_commit(request, compose, work_repo))
    first, second = (r.archive for r in outputs)
    assert first is not None and second is not None
    assert first.read_bytes() == second.read_bytes() == v2.archive.read_bytes()
    assert outputs[0].manifest.oci.manifest_digest == v2.manifest.oci.manifest_digest
    shutil.rmtree(work_repo)
