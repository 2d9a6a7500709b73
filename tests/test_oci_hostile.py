# SPDX-License-Identifier: GPL-2.0-or-later
"""Tampered and lying archives (issue 13, items 4 and 5): a byte flipped inside a blob
(same size), a content-layer member claiming 8 GiB, a previous build of another arch.
Every reader that trusts an archive's content (inspect, diff, serve, build --previous)
must refuse them with one line naming the archive, the blob and the digests."""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from test_inspect_diff import REF, manifest, pkg
from test_server import make_oci_archive

from koji_hostimage.commands.main import main
from koji_hostimage.errors import ArchiveError, HostImageError
from koji_hostimage.image.export import ExportError, export_commit, open_previous
from koji_hostimage.image.oci_layout import image_labels
from koji_hostimage.image.oci_reader import OciArchive
from koji_hostimage.image.oci_writer import OciImageSpec, write_oci_archive
from koji_hostimage.report.inspect import diff_images, load_image
from koji_hostimage.serve.sources import ArchiveTree

pytestmark = pytest.mark.skipif(shutil.which("ostree") is None, reason="ostree CLI not installed")
ROOT = Path(__file__).resolve().parent.parent


def build_archive(root: Path, arch: str = "x86_64", manifest_arch: str | None = None
                  ) -> Path:
    """A real archive of ours: `ostree commit` -> export_commit -> write_oci_archive."""
    work, tree = root / "work", root / "tree"
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ostree", "init", f"--repo={work}", "--mode=bare-user"], check=True)
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/greeter").write_bytes(b"#!/bin/sh\necho hello\n" + os.urandom(20000))
    commit = subprocess.run(
        ["ostree", "commit", f"--repo={work}", f"--branch={REF}", f"--tree=dir={tree}",
         "--add-metadata-string=version=2.0", "--timestamp=2026-01-01T00:00:00Z"],
        check=True, capture_output=True, text=True).stdout.strip()
    content = root / "content"
    exported = export_commit(work, REF, commit, content / "srv" / "repo")
    built = manifest(commit, "2.0", [pkg("greeter", "1.1")], timestamp=exported.timestamp,
                     arch=manifest_arch or arch)
    built.write(content / "srv" / "hostimage.json")
    path = root / f"host-2.0-1.{arch}.oci.tar"
    spec = OciImageSpec(koji_arch=arch, created=built.timestamp, ref_name="2.0",
                        labels=image_labels(commit, "2.0", REF, built.timestamp, "", ""))
    write_oci_archive(path, content, spec)
    return path


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_archive(tmp_path_factory.mktemp("good"))


def flipped(source: Path, dest: Path, at: int) -> Path:
    data = bytearray(source.read_bytes())
    data[at] ^= 0x01
    dest.write_bytes(bytes(data))
    return dest


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "koji_hostimage.commands.main", *argv],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_a_flipped_byte_in_the_content_layer_is_refused_by_every_reader(good: Path,
                                                                        tmp_path: Path):
    with OciArchive(good) as image:
        layer = image.content_layer()
    bad = flipped(good, tmp_path / "bad.oci.tar", layer.offset + layer.size // 2)
    assert bad.stat().st_size == good.stat().st_size
    data = bad.read_bytes()[layer.offset : layer.offset + layer.size]
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    expected_message = (f"{bad}: content layer blob {layer.digest} does not match its "
                        f"digest: expected {layer.digest}, got {actual}")
    with pytest.raises(ArchiveError) as err:
        load_image(bad)  # inspect
    assert str(err.value).startswith(expected_message) and "\n" not in str(err.value)
    with pytest.raises(ArchiveError, match="does not match its digest"):
        diff_images(good, bad)
    with pytest.raises(ArchiveError, match="does not match its digest"):
        ArchiveTree(bad)  # serve
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(ArchiveError, match="does not match its digest"):
        open_previous(bad, REF, scratch)  # build --previous
    result = run_cli("inspect", str(bad))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"koji-hostimage inspect: error: {expected_message}"
        f" ({layer.size} bytes at byte {layer.offset})"]
    assert run_cli("serve", str(bad), "--port", "0").returncode == 1
    # the good archive still passes all of them
    assert load_image(good).verified is True


def test_a_flipped_byte_in_the_config_names_expected_and_actual(good: Path, tmp_path: Path):
    with OciArchive(good) as image:
        digest = image.manifest["config"]["digest"]
        offset, size = image._blob_location(digest)
    bad = flipped(good, tmp_path / "badconfig.oci.tar", offset + 2)
    actual = "sha256:" + hashlib.sha256(bad.read_bytes()[offset : offset + size]).hexdigest()
    with pytest.raises(ArchiveError) as err:
        load_image(bad)
    assert f"config blob {digest} does not match its digest: expected {digest}, got {actual}" \
        in str(err.value)


def _layer_with_huge_member(hostimage_json: bytes) -> bytes:
    """A content layer whose last member's size field claims 8 GiB (GNU base-256 field,
    header checksum fixed): only a reader that walks the whole layer notices."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("srv/repo/config", b"[core]\nmode=archive-z2\n"),
                           ("srv/hostimage.json", hostimage_json),
                           ("srv/repo/objects/00/big.filez", b"x" * 1000)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    layer = bytearray(buffer.getvalue())
    with tarfile.open(fileobj=io.BytesIO(bytes(layer))) as tar:
        at = tar.getmembers()[-1].offset
    assert layer[at : at + 29].rstrip(b"\0") == b"srv/repo/objects/00/big.filez"
    layer[at + 124 : at + 136] = b"\x80" + (8 << 30).to_bytes(11, "big")
    layer[at + 148 : at + 156] = b"        "
    layer[at + 148 : at + 156] = b"%06o\0 " % sum(layer[at : at + 512])
    return bytes(layer)


def test_a_member_claiming_8_gib_is_reported_corrupt(good: Path, tmp_path: Path):
    with OciArchive(good) as image:
        hostimage_json = image.read_content_file("srv/hostimage.json")
    huge = make_oci_archive(tmp_path / "huge.oci.tar", _layer_with_huge_member(hostimage_json))
    with OciArchive(huge) as image:
        image.verify()  # the digests are right: the lie is inside the tar
    for call in (lambda: load_image(huge), lambda: diff_images(good, huge)):
        with pytest.raises(ArchiveError) as err:
            call()
        message = str(err.value)
        assert str(huge) in message and "srv/repo/objects/00/big.filez" in message
        assert "truncated" in message and str(8 << 30) in message
    assert main(["inspect", str(huge)]) == 1
    assert main(["diff", str(good), str(huge)]) == 1


def test_verifying_100_mb_streams_and_catches_a_flip_in_its_last_megabyte(tmp_path: Path):
    """inspect of a ~100 MB archive whose content layer has a byte flipped near its end:
    refused, in bounded memory (one chunk, not the layer) and time."""
    layout = tmp_path / "layout"
    (layout / "blobs/sha256").mkdir(parents=True)
    layer_path = tmp_path / "layer.tar"
    with tarfile.open(layer_path, "w") as tar:
        big = tmp_path / "big"
        with open(big, "wb") as out:
            for _ in range(100):
                out.write(os.urandom(1 << 20))
        tar.add(big, arcname="srv/repo/objects/ff/big.filez")
        big.unlink()

    def blob_file(path: Path) -> dict[str, object]:
        hasher = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                hasher.update(chunk)
        size = path.stat().st_size
        path.rename(layout / "blobs/sha256" / hasher.hexdigest())
        return {"digest": f"sha256:{hasher.hexdigest()}", "size": size}

    def blob(data: bytes) -> dict[str, object]:
        path = tmp_path / "blob"
        path.write_bytes(data)
        return blob_file(path)

    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob_file(layer_path)}
    config = blob(json.dumps({"architecture": "amd64", "os": "linux"}).encode())
    manifest_blob = blob(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [layer]}).encode())
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_blob}]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    archive = tmp_path / "big.oci.tar"
    subprocess.run(["tar", "-C", layout, "-cf", archive, "."], check=True)
    shutil.rmtree(layout)
    with OciArchive(archive) as image:
        content = image.content_layer()
    with open(archive, "r+b") as fh:  # flip one byte 100 KiB before the layer's end
        fh.seek(content.offset + content.size - 100 * 1024)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x80]))
    probe = (
        "import resource, sys, time\n"
        "from koji_hostimage.image.oci_reader import OciArchive\n"
        "from koji_hostimage.errors import ArchiveError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "started = time.monotonic()\n"
        "try:\n"
        "    with OciArchive(sys.argv[1]) as image:\n"
        "        image.verify()\n"
        "    print('accepted')\n"
        "except ArchiveError as exc:\n"
        "    print('refused', exc)\n"
        "print(time.monotonic() - started)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(archive)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, check=True).stdout.splitlines()
    assert out[0].startswith(f"refused {archive}: content layer blob {content.digest}"), out
    seconds, grown_kib = float(out[1]), int(out[2])
    assert seconds < 10.0  # about 0.1 s on an idle machine
    assert grown_kib < 32 * 1024, grown_kib  # a chunk (1 MiB) and change, not 100 MB
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0
    started = time.monotonic()
    with pytest.raises(HostImageError, match="does not match its digest"):
        load_image(archive)
    assert time.monotonic() - started < 10.0


# -- item 5: a previous build of another arch ---------------------------------------------


@pytest.fixture(scope="module")
def aarch64_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_archive(tmp_path_factory.mktemp("arm"), arch="aarch64")


def test_previous_build_of_another_arch_is_refused_naming_both(aarch64_archive: Path,
                                                               good: Path, tmp_path: Path):
    with pytest.raises(ExportError) as err:
        open_previous(aarch64_archive, REF, tmp_path, arch="x86_64")
    message = str(err.value)
    assert str(aarch64_archive) in message and "aarch64" in message and "x86_64" in message
    assert "\n" not in message
    # the same archive is fine for an aarch64 build, and an x86_64 one for x86_64
    assert open_previous(aarch64_archive, REF, tmp_path, arch="aarch64").ref == REF
    assert open_previous(good, REF, tmp_path, arch="x86_64").ref == REF
    # through export_commit (build --previous): no delta is made from it
    work = tmp_path / "work"
    subprocess.run(["ostree", "init", f"--repo={work}", "--mode=bare-user"], check=True)
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=test\n")
    commit = subprocess.run(["ostree", "commit", f"--repo={work}", f"--branch={REF}",
                             f"--tree=dir={tree}"], check=True, capture_output=True,
                            text=True).stdout.strip()
    with pytest.raises(ExportError, match="arch aarch64 .* this build is for x86_64"):
        export_commit(work, REF, commit, tmp_path / "export", previous=[aarch64_archive],
                      arch="x86_64")
    assert not (tmp_path / "export").exists()


def test_previous_build_whose_oci_arch_disagrees_is_refused(tmp_path: Path):
    """hostimage.json says x86_64 but the OCI config says arm64: refused by the config."""
    lying = build_archive(tmp_path / "lying", arch="aarch64", manifest_arch="x86_64")
    with pytest.raises(ExportError, match=r"arm64 \(OCI config architecture\).*x86_64"):
        open_previous(lying, REF, tmp_path, arch="x86_64")
