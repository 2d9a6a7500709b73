# SPDX-License-Identifier: GPL-2.0-or-later
"""The OCI archive writer and reader (koji_hostimage.image: oci_writer, oci_reader,
oci_layout, tarwriter, tarreader).

Everything here is real: archive-mode OSTree repos made with the ostree CLI, skopeo and
umoci reading what we write, GNU tar and Python's tarfile checking our tar bytes, and a
base image built with umoci. No stand-ins.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from koji_hostimage.errors import ArchiveError, HostImageError
from koji_hostimage.image import oci_layout, tarheaders, tarreader, tarwriter
from koji_hostimage.image.oci_layout import (
    LABEL_OSTREE_REF,
    OciSpecError,
    image_labels,
    koji_arch_to_oci,
)
from koji_hostimage.image.oci_reader import OciArchive
from koji_hostimage.image.oci_writer import OciImageSpec, write_oci_archive

REF = "example/x86_64/host"
VERSION = "42.20260101.0"
TIMESTAMP = 1767225600  # 2026-01-01T00:00:00Z
CREATED = "2026-01-01T00:00:00Z"
SOURCE_URL = "git+https://example.com/os-config.git#main"
REVISION = "0123456789abcdef0123456789abcdef01234567"
SERVER_CMD = ["/usr/bin/serve", "--directory", "/srv/repo", "8080"]


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
    return result.stdout


def make_content_dir(root: Path) -> tuple[Path, str]:
    """content_dir with srv/repo (archive mode, one commit of REF) and srv/hostimage.json."""
    tree = root / "tree"
    for sub in ("usr/bin", "usr/share/doc/example", "usr/lib/os-release.d"):
        (tree / sub).mkdir(parents=True)
    (tree / "usr/bin/greeter").write_text("#!/bin/sh\necho hello\n")
    (tree / "usr/bin/greeter").chmod(0o755)
    for number in range(40):
        (tree / f"usr/share/doc/example/page{number:02}.txt").write_text(
            f"page {number}\n" + "lorem ipsum dolor sit amet\n" * (number * 7)
        )
    (tree / "usr/lib/os-release.d/empty").write_text("")
    (tree / "usr/bin/hello").symlink_to("greeter")
    content = root / "content"
    repo = content / "srv" / "repo"
    repo.mkdir(parents=True)
    run("ostree", "init", f"--repo={repo}", "--mode=archive")
    commit = run(
        "ostree", "commit", f"--repo={repo}", f"--branch={REF}", f"--tree=dir={tree}",
        "--timestamp=2026-01-01T00:00:00Z", "--subject=v1",
        f"--add-metadata-string=version={VERSION}", "--owner-uid=0", "--owner-gid=0",
    ).strip()
    run("ostree", "summary", "-u", f"--repo={repo}")
    (content / "srv" / "hostimage.json").write_text(
        json.dumps({"schema_version": 1, "commit": commit, "version": VERSION}) + "\n"
    )
    return content, commit


def spec_for(commit: str, **changes: object) -> OciImageSpec:
    spec = OciImageSpec(
        koji_arch="x86_64",
        created=TIMESTAMP,
        labels=image_labels(commit, VERSION, REF, TIMESTAMP, SOURCE_URL, REVISION),
        ref_name=VERSION,
        cmd=list(SERVER_CMD),
    )
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


def files_of(root: Path) -> dict[str, bytes | str]:
    """relative path -> content (files) or "dir" / "-> target" (for comparisons)."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = path.read_bytes()
    return found


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A content dir (real archive-mode repo) shared read-only by this module's tests."""
    return make_content_dir(tmp_path_factory.mktemp("oci-content"))


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, content: tuple[Path, str]) -> Path:
    """A base-less archive of ``content`` (read-only for the tests)."""
    content_dir, commit = content
    dest = tmp_path_factory.mktemp("oci-archive") / "example.x86_64.oci.tar"
    write_oci_archive(dest, content_dir, spec_for(commit))
    return dest


@pytest.fixture(scope="module")
def base_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small base image made with umoci: one gzip layer, Env, Entrypoint and Cmd."""
    work = tmp_path_factory.mktemp("oci-base")
    rootfs = work / "rootfs"
    (rootfs / "usr/bin").mkdir(parents=True)
    (rootfs / "usr/bin/serve").write_text("#!/bin/sh\nexec true\n")
    (rootfs / "usr/bin/serve").chmod(0o755)
    layout = work / "layout"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:latest")
    # `umoci raw add-layer` gzips a tar made by GNU tar. (Not `umoci insert`: umoci 0.4.7
    # writes that layer without the last file's padding and the end-of-archive blocks.)
    layer_tar = work / "layer.tar"
    run("tar", "-C", rootfs, "--owner=0", "--group=0", "-cf", layer_tar, "usr")
    run("umoci", "raw", "add-layer", "--image", f"{layout}:latest", layer_tar)
    run(
        "umoci", "config", "--image", f"{layout}:latest", "--architecture=amd64",
        "--os=linux", "--config.env=PATH=/usr/bin", "--config.entrypoint=/usr/bin/base-init",
        "--config.cmd=base-cmd", "--config.label=ostree.bootable=true",
    )
    tar_path = work / "base.oci.tar"
    run("tar", "-C", layout, "-cf", tar_path, ".")  # "./"-prefixed names, as tar makes them
    return tar_path


# ------------------------------------------------------------------ skopeo and umoci


def test_skopeo_inspect_shows_labels_and_config(archive: Path, content: tuple[Path, str]):
    _, commit = content
    inspect = json.loads(run("skopeo", "inspect", f"oci-archive:{archive}"))
    assert inspect["Architecture"] == "amd64"
    assert inspect["Os"] == "linux"
    assert inspect["Created"] == CREATED
    labels = inspect["Labels"]
    assert labels["com.coreos.ostree-commit"] == commit
    assert labels["version"] == VERSION
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] == REVISION
    assert labels["org.opencontainers.image.source"] == SOURCE_URL
    assert labels["org.opencontainers.image.created"] == CREATED
    assert labels[LABEL_OSTREE_REF] == REF
    assert "ostree.bootable" not in labels and "containers.bootc" not in labels
    assert len(inspect["Layers"]) == 1

    config = json.loads(run("skopeo", "inspect", "--config", f"oci-archive:{archive}"))
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert "Cmd" not in config["config"], "a base-less image is a content image: no Cmd"
    assert config["created"] == CREATED
    assert config["rootfs"]["diff_ids"] == inspect["Layers"]


def test_umoci_unpacks_the_repo_and_ostree_fsck_passes(
    archive: Path, content: tuple[Path, str], tmp_path: Path
):
    content_dir, commit = content
    layout = tmp_path / "layout"
    layout.mkdir()
    run("tar", "-xf", archive, "-C", layout)
    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--rootless", "--image", f"{layout}:{VERSION}", bundle)
    unpacked = bundle / "rootfs" / "srv"
    assert files_of(unpacked) == files_of(content_dir / "srv")
    repo = unpacked / "repo"
    assert "no errors found" in run("ostree", "fsck", f"--repo={repo}")
    assert run("ostree", "rev-parse", f"--repo={repo}", REF).strip() == commit


def test_layer_tar_is_reproducible_in_every_header(archive: Path):
    with OciArchive(archive) as image:
        layer = image.content_layer()
        assert layer.media_type == oci_layout.MEDIA_LAYER
        with tarfile.open(fileobj=image.open_blob(layer.digest)) as tar:
            members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:3] == ["srv", "srv/hostimage.json", "srv/repo"]
    assert len(set(names)) == len(names)
    for member in members:
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.mtime == TIMESTAMP
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            assert (member.uid, member.gid, member.uname, member.mtime) == (0, 0, "", TIMESTAMP)


# ------------------------------------------------------------------ reproducibility


def test_same_inputs_give_byte_identical_archives(content: tuple[Path, str], tmp_path: Path):
    content_dir, commit = content
    first = write_oci_archive(tmp_path / "a.oci.tar", content_dir, spec_for(commit))
    # A copy elsewhere with different file mtimes must still give the same bytes.
    copy = tmp_path / "copy"
    shutil.copytree(content_dir, copy, symlinks=True)
    for path in copy.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000), follow_symlinks=False)
    second = write_oci_archive(tmp_path / "b.oci.tar", copy, spec_for(commit))
    assert first.manifest_digest == second.manifest_digest
    assert (tmp_path / "a.oci.tar").read_bytes() == (tmp_path / "b.oci.tar").read_bytes()
    # ...and a different commit timestamp changes it (the test can fail).
    third = write_oci_archive(
        tmp_path / "c.oci.tar", content_dir, spec_for(commit, created=TIMESTAMP + 1)
    )
    assert third.manifest_digest != first.manifest_digest


def test_result_digests_match_the_file(archive: Path, content: tuple[Path, str], tmp_path):
    content_dir, commit = content
    result = write_oci_archive(tmp_path / "x.oci.tar", content_dir, spec_for(commit))
    data = result.path.read_bytes()
    assert result.size == len(data) == result.path.stat().st_size
    with OciArchive(result.path) as image:
        assert image.manifest_digest == result.manifest_digest
        assert image.manifest["config"]["digest"] == result.config_digest
        layer = image.content_layer()
        assert (layer.digest, layer.size) == (
            result.content_layer_digest, result.content_layer_size
        )
        blob = data[layer.offset : layer.offset + layer.size]
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer.digest
        image.verify()
    assert result.file_count == sum(1 for p in content_dir.rglob("*") if p.is_file())


# ------------------------------------------------------------------ base image


def test_base_image_layers_come_first_verbatim(
    base_image: Path, content: tuple[Path, str], tmp_path: Path
):
    content_dir, commit = content
    with OciArchive(base_image) as base:
        base_layers = list(base.layers)
        base_config = base.config
        base_blobs = {layer.digest: base.read_blob(layer.digest) for layer in base_layers}
    assert base_layers and all(layer.media_type.endswith("+gzip") for layer in base_layers)

    dest = tmp_path / "with-base.oci.tar"
    result = write_oci_archive(dest, content_dir, spec_for(commit, base_image=base_image))
    with OciArchive(dest) as image:
        assert [layer.digest for layer in image.layers[:-1]] == list(base_blobs)
        for layer in image.layers[:-1]:
            assert image.read_blob(layer.digest) == base_blobs[layer.digest]
            assert layer.media_type == oci_layout.MEDIA_LAYER_GZIP
        assert image.content_layer().digest == result.content_layer_digest
        assert result.layer_digests == [layer.digest for layer in image.layers]
        config = image.config
    assert config["rootfs"]["diff_ids"] == [
        *base_config["rootfs"]["diff_ids"], result.content_layer_digest
    ]
    assert len(config["history"]) == len(base_config.get("history") or []) + 1
    assert config["config"]["Cmd"] == SERVER_CMD
    assert config["config"]["Env"] == ["PATH=/usr/bin"]
    assert "Entrypoint" not in config["config"], "the base's Entrypoint must not wrap our Cmd"
    assert "ostree.bootable" not in config["config"]["Labels"], "base labels are not inherited"

    inspect = json.loads(run("skopeo", "inspect", f"oci-archive:{dest}"))
    assert inspect["Layers"] == result.layer_digests
    layout = tmp_path / "layout"
    layout.mkdir()
    run("tar", "-xf", dest, "-C", layout)
    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--rootless", "--image", f"{layout}:{VERSION}", bundle)
    assert (bundle / "rootfs/usr/bin/serve").read_text().startswith("#!/bin/sh")
    assert (bundle / "rootfs/srv/repo/config").is_file()
    runtime = json.loads((bundle / "config.json").read_text())
    assert runtime["process"]["args"] == SERVER_CMD


def test_base_image_of_another_arch_is_refused(
    base_image: Path, content: tuple[Path, str], tmp_path: Path
):
    content_dir, commit = content
    with pytest.raises(ArchiveError, match="architecture is 'amd64', expected 'arm64'"):
        write_oci_archive(
            tmp_path / "x.oci.tar",
            content_dir,
            spec_for(commit, base_image=base_image, koji_arch="aarch64"),
        )
    assert not (tmp_path / "x.oci.tar").exists()


# ------------------------------------------------------------------ labels and arch


def test_image_labels_hold_commit_version_ref_and_source():
    labels = image_labels("c0ffee", "1.2", "os/x86_64", TIMESTAMP, SOURCE_URL, REVISION)
    assert labels == {
        "com.coreos.ostree-commit": "c0ffee",
        "version": "1.2",
        "org.opencontainers.image.version": "1.2",
        "org.opencontainers.image.revision": REVISION,
        "org.opencontainers.image.created": CREATED,
        "org.opencontainers.image.source": SOURCE_URL,
        "io.koji-hostimage.ostree.ref": "os/x86_64",
    }
    assert "org.opencontainers.image.source" not in image_labels("c", "1", "r", 0)


@pytest.mark.parametrize("label", ["ostree.bootable", "containers.bootc"])
def test_bootable_labels_are_refused(label: str, content: tuple[Path, str], tmp_path: Path):
    content_dir, commit = content
    spec = spec_for(commit)
    spec.labels[label] = "1"
    with pytest.raises(OciSpecError, match=label):
        write_oci_archive(tmp_path / "x.oci.tar", content_dir, spec)
    assert not (tmp_path / "x.oci.tar").exists()


@pytest.mark.parametrize(
    ("koji", "expected"),
    [("x86_64", "amd64"), ("aarch64", "arm64"), ("ppc64le", "ppc64le"), ("s390x", "s390x")],
)
def test_koji_arch_maps_to_oci(koji: str, expected: str):
    assert koji_arch_to_oci(koji) == expected


def test_unknown_arch_is_an_error_naming_it(content: tuple[Path, str], tmp_path: Path):
    content_dir, commit = content
    with pytest.raises(OciSpecError, match="'pdp11'"):
        koji_arch_to_oci("pdp11")
    with pytest.raises(HostImageError, match="'vax'"):
        write_oci_archive(tmp_path / "x.oci.tar", content_dir, spec_for(commit, koji_arch="vax"))
    assert not (tmp_path / "x.oci.tar").exists()


@pytest.mark.parametrize(("koji_arch", "oci_arch"), [
    ("x86_64", "amd64"), ("aarch64", "arm64"), ("i686", "386"), ("armhfp", "arm"),
    ("ppc64le", "ppc64le"), ("s390x", "s390x"), ("riscv64", "riscv64"),
    ("loongarch64", "loong64"),
])
def test_every_koji_arch_has_its_oci_platform(koji_arch, oci_arch):
    assert koji_arch_to_oci(koji_arch) == oci_arch


def test_other_arch_lands_in_config_and_index(content: tuple[Path, str], tmp_path: Path):
    content_dir, commit = content
    dest = tmp_path / "arm.oci.tar"
    write_oci_archive(dest, content_dir, spec_for(commit, koji_arch="aarch64"))
    with OciArchive(dest) as image:
        assert image.architecture == "arm64"
        assert image.index["manifests"][0]["platform"] == {"architecture": "arm64", "os": "linux"}
        assert image.ref_name == VERSION


# ------------------------------------------------------------------ reader


def test_reader_round_trips_the_content(
    archive: Path, content: tuple[Path, str], tmp_path: Path
):
    content_dir, commit = content
    with OciArchive(archive) as image:
        assert image.labels["com.coreos.ostree-commit"] == commit
        assert image.read_content_file("srv/hostimage.json") == (
            content_dir / "srv/hostimage.json"
        ).read_bytes()
        members = list(image.iter_content_members())
        index = image.content_index()
        raw = archive.read_bytes()
        for member in members:
            source = content_dir / member.name
            if member.kind == "file":
                data = raw[member.offset : member.offset + member.size]
                assert data == source.read_bytes(), member.name
                # modes kept, made world-readable (the repo is public; servers run as nobody)
                assert member.mode == source.stat().st_mode & 0o7777 | 0o444
        assert {m.name for m in members} == {
            p.relative_to(content_dir).as_posix() for p in content_dir.rglob("*")
        }
        assert index["srv/repo/config"].kind == "file"
        with pytest.raises(ArchiveError, match="srv/nothing: not in the content layer"):
            image.read_content_file("srv/nothing")
        repo = tmp_path / "repo"
        count = image.extract_content(repo)
    assert count == sum(1 for p in (content_dir / "srv/repo").rglob("*") if p.is_file())
    assert files_of(repo) == files_of(content_dir / "srv/repo")
    assert "no errors found" in run("ostree", "fsck", f"--repo={repo}")
    assert run("ostree", "rev-parse", f"--repo={repo}", REF).strip() == commit


def test_extract_refuses_a_non_empty_target(archive: Path, tmp_path: Path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with OciArchive(archive) as image, pytest.raises(ArchiveError, match="not empty"):
        image.extract_content(tmp_path / "busy")


def test_reader_handles_a_gzip_content_layer_from_umoci(base_image: Path, tmp_path: Path):
    with OciArchive(base_image) as image:
        assert image.content_layer().compressed
        with pytest.raises(ArchiveError, match=f"{base_image}: .* uncompressed content layer"):
            image.uncompressed_content_layer()  # its files have no offsets to read in place
        assert image.read_content_file("usr/bin/serve").startswith(b"#!/bin/sh")
        count = image.extract_content(tmp_path / "out", prefix="usr/")
    assert count == 1
    assert os.access(tmp_path / "out/bin/serve", os.X_OK)


def test_truncated_archive_is_an_error_naming_the_file(archive: Path, tmp_path: Path):
    data = archive.read_bytes()
    with OciArchive(archive) as image:
        layer = image.content_layer()
    for cut in (layer.offset + layer.size // 2, len(data) - 2048, 700):
        broken = tmp_path / f"cut-{cut}.oci.tar"
        broken.write_bytes(data[:cut])
        with pytest.raises(ArchiveError, match=str(broken)):
            OciArchive(broken)


def test_non_oci_files_are_errors_naming_the_file(tmp_path: Path):
    text = tmp_path / "notes.txt"
    text.write_text("not a tar at all\n" * 100)
    with pytest.raises(ArchiveError, match=f"{text}: not a .*tar"):
        OciArchive(text)
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(text, arcname="notes.txt")
    with pytest.raises(ArchiveError, match=f"{plain}: not an OCI archive: no oci-layout"):
        OciArchive(plain)
    with pytest.raises(ArchiveError, match="cannot open"):
        OciArchive(tmp_path / "missing.oci.tar")


def test_a_tampered_blob_is_detected(archive: Path, tmp_path: Path):
    data = bytearray(archive.read_bytes())
    with OciArchive(archive) as image:
        layer = image.content_layer()
    tampered = tmp_path / "tampered.oci.tar"
    data[layer.offset + 600] ^= 0xFF  # inside the first file of the content layer
    tampered.write_bytes(bytes(data))
    with OciArchive(tampered) as image:
        assert image.config["config"]["Labels"]  # JSON blobs still fine
        with pytest.raises(ArchiveError, match="does not match its digest"):
            image.verify()


# ------------------------------------------------------------------ interruption


def test_interrupted_write_leaves_nothing_at_dest(
    content: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    content_dir = tmp_path / "content"
    shutil.copytree(content[0], content_dir, symlinks=True)
    (content_dir / "srv/repo/big").write_bytes(os.urandom(9 * 1024 * 1024))
    dest = tmp_path / "out" / "image.oci.tar"
    dest.parent.mkdir()
    dest.write_bytes(b"previous archive")

    calls = []
    real_submit = tarwriter.HashingWriter.submit

    def interrupt_after_first_buffer(self, buf, length):
        calls.append(length)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_submit(self, buf, length)

    monkeypatch.setattr(tarwriter.HashingWriter, "submit", interrupt_after_first_buffer)
    with pytest.raises(KeyboardInterrupt):
        write_oci_archive(dest, content_dir, spec_for(content[1]))
    assert dest.read_bytes() == b"previous archive", "the old archive must stay untouched"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["image.oci.tar"]


def _fstat_lying_about(victim: Path, delta: int):
    """An os.fstat that reports ``victim``'s size off by ``delta``: stands in for a file
    that changes size between the packer's fstat and its read (a race too narrow to
    hit on purpose)."""
    real = os.fstat

    def fstat(fd: int) -> os.stat_result:
        st = real(fd)
        if os.readlink(f"/proc/self/fd/{fd}") != str(victim):
            return st
        fields = list(st)[:10]
        fields[6] += delta  # st_size
        return os.stat_result(fields)

    return fstat


def test_a_file_growing_while_packing_fails_cleanly(
    content: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    content_dir = tmp_path / "content"
    shutil.copytree(content[0], content_dir, symlinks=True)
    victim = content_dir / "srv/hostimage.json"
    monkeypatch.setattr(tarwriter, "_fstat", _fstat_lying_about(victim, -5))
    dest = tmp_path / "image.oci.tar"
    with pytest.raises(ArchiveError, match="hostimage.json: file grew while packing"):
        write_oci_archive(dest, content_dir, spec_for(content[1]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content"]


# ------------------------------------------------------------------ the tar writer


def test_tar_writer_output_matches_gnu_tar_extraction(tmp_path: Path):
    src = tmp_path / "src"
    deep = src / ("d" * 90) / ("e" * 90)
    deep.mkdir(parents=True)
    (deep / ("x" * 120)).write_text("long path needs PAX")
    (src / "ünïcode.txt").write_text("utf-8 name")
    (src / "empty").write_bytes(b"")
    (src / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024 + 123))  # spans two buffers
    (src / "exec").write_text("#!/bin/sh\n")
    (src / "exec").chmod(0o750)
    (src / "link").symlink_to("exec")
    (src / "hard").hardlink_to(src / "exec")
    (src / ("l" * 10)).symlink_to("t" * 150)  # long symlink target needs PAX linkpath

    out = tmp_path / "out.tar"
    with out.open("wb") as fh:
        packed = tarwriter.pack_tree(src, fh, TIMESTAMP)
    data = out.read_bytes()
    assert len(data) == packed.size
    assert hashlib.sha256(data).hexdigest() == packed.sha256
    assert packed.file_count == 6  # exec, hard, empty, big.bin, ünïcode.txt, the long one

    extracted = tmp_path / "gnu"
    extracted.mkdir()
    run("tar", "-xf", out, "-C", extracted)
    assert files_of(extracted) == files_of(src)
    assert (extracted / "exec").stat().st_mode & 0o7777 == 0o750
    assert not (extracted / "hard").samefile(extracted / "exec"), "hard links become files"

    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert names == sorted(names, key=lambda n: n.encode().split(b"/"))
        assert tar.getmember("hard").isfile()
        assert tar.getmember("link").issym()
        assert all(m.mtime == TIMESTAMP and m.uid == 0 and m.uname == "" for m in tar)


def test_tar_writer_refuses_special_files_by_name(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    with pytest.raises(ArchiveError, match=f"{src / 'pipe'}: cannot pack a fifo"):
        tarwriter.pack_tree(src, io.BytesIO(), TIMESTAMP)


def test_a_file_replaced_by_a_fifo_after_listing_is_refused_without_hanging(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("listed as a regular file")
    entries = tarwriter._list_tree(os.fsencode(src), TIMESTAMP, 0)
    (src / "file").unlink()
    os.mkfifo(src / "file")  # opened without O_NONBLOCK, this would wait for a writer
    writer = tarwriter.HashingWriter(io.BytesIO())
    with pytest.raises(ArchiveError, match=f"{src / 'file'}: cannot pack a fifo"):
        tarwriter._fill(entries, writer, TIMESTAMP, 0, None)
    writer.abort()


def test_ustar_name_split_and_pax_fallback():
    assert tarheaders._split_ustar_name(b"a/b") == (b"", b"a/b")
    name = b"p" * 120 + b"/" + b"n" * 50
    assert tarheaders._split_ustar_name(name) == (b"p" * 120, b"n" * 50)
    assert tarheaders._split_ustar_name(b"x" * 101) is None
    header = tarheaders.encode_header(b"x" * 101, tarheaders.REGTYPE, 0o644, 5, 0)
    assert len(header) == 3 * 512 and header[156:157] == tarheaders.PAXTYPE


@pytest.mark.parametrize("tar_format", ["gnu", "posix", "ustar"])
def test_scan_tar_agrees_with_tarfile(tar_format: str, tmp_path: Path):
    src = tmp_path / "src"
    deep = src / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    (deep / "file.txt").write_text("deep")
    (src / "plain").write_bytes(os.urandom(1000))
    (src / "plain").chmod(0o640)
    (src / "link").symlink_to("plain")
    (src / "hard").hardlink_to(src / "plain")
    if tar_format != "ustar":
        (src / ("n" * 150)).write_text("long name")
    out = tmp_path / "gnu.tar"
    run("tar", f"--format={tar_format}", "-C", src, "-cf", out, ".")
    data = out.read_bytes()
    scanned = list(tarreader.scan_tar(data, 0, len(data), str(out)))
    with tarfile.open(out) as tar:
        expected = [
            (m.name.rstrip("/"), m.size if m.isfile() else 0, m.mode, m.linkname, m.offset_data)
            for m in tar
        ]
    assert [
        (h.name.rstrip("/"), h.size, h.mode, h.linkname, h.offset) for h in scanned
    ] == expected
    kinds = {h.name.rstrip("/").removeprefix("./"): h.kind for h in scanned}
    assert kinds["link"] == "symlink"
    assert {kinds["plain"], kinds["hard"]} == {"file", "hardlink"}  # whichever tar met first
    with pytest.raises(ArchiveError, match="truncated"):
        list(tarreader.scan_tar(data, 0, len(data) // 2, str(out)))


def _python_tar(fmt: int) -> bytes:
    """A tar written by Python's tarfile in ``fmt``: long names, an empty and a multi-block
    file, a hard link and a symlink."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, data in (
            ("short", b"a" * 10),
            ("d" * 60 + "/" + "e" * 60 + "/file", b"b" * 1000),  # ustar prefix, pax or GNU L
            ("empty", b""),
            ("big", os.urandom(5000)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, kind, target in (("hard", tarfile.LNKTYPE, "short"),
                                   ("sym", tarfile.SYMTYPE, "short")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_scan_tar_of_a_nested_tar_matches_tarfile(fmt: int):
    """Offsets are absolute: a tar nested at an odd offset (as a layer sits inside an
    archive) gives offsets into the outer bytes, matching tarfile's offset_data."""
    data = _python_tar(fmt)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        expected = {
            m.name: (m.offset_data, m.size if m.isfile() else 0, m.linkname)
            for m in tar.getmembers()
        }
        big = tar.extractfile("big").read()
    outer = b"\x00" * 1536 + data
    scanned = list(tarreader.scan_tar(outer, 1536, len(outer), "outer.tar"))
    assert {h.name: (h.offset - 1536, h.size, h.linkname) for h in scanned} == expected
    kinds = {h.name: h.kind for h in scanned}
    assert (kinds["short"], kinds["hard"], kinds["sym"]) == ("file", "hardlink", "symlink")
    (member,) = [h for h in scanned if h.name == "big"]
    assert outer[member.offset : member.offset + member.size] == big


def _reseal(header: bytearray, signed: bool = False) -> bytes:
    """Recompute a header's checksum (as old writers did with ``signed``)."""
    header[148:156] = b" " * 8
    total = sum(b - 256 if signed and b > 127 else b for b in header)
    header[148:156] = b"%06o\0 " % total
    return bytes(header)


def test_scan_tar_accepts_signed_checksums_and_ignores_gnu_time_fields(tmp_path: Path):
    """Checked against GNU tar (tarfile would take the old GNU atime for a name prefix)."""
    data = bytearray(_python_tar(tarfile.GNU_FORMAT))
    first = bytearray(data[:512])
    assert first[257:265] == b"ustar  \0" and first[0:5] == b"short"
    first[345:357] = b"15000000000\0"  # old GNU: atime where ustar has its name prefix
    first[99] = 0xE9  # a byte > 127 (after the name's NUL): signed and unsigned sums differ
    data[:512] = _reseal(first, signed=True)
    names = [h.name for h in tarreader.scan_tar(data, 0, len(data), "old.tar")]
    assert names[0] == "short"
    old = tmp_path / "old.tar"
    old.write_bytes(data)
    assert run("tar", "-tf", old).splitlines() == names


def test_scan_tar_refuses_gnu_sparse_members_and_bad_headers():
    data = bytearray(_python_tar(tarfile.USTAR_FORMAT))
    first = bytearray(data[:512])
    first[156:157] = b"S"
    sparse = bytes(_reseal(first)) + bytes(data[512:])
    with pytest.raises(ArchiveError, match=r"sparse.tar: GNU sparse member at byte 0"):
        list(tarreader.scan_tar(sparse, 0, len(sparse), "sparse.tar"))
    data[0] ^= 0xFF  # the stored checksum no longer matches
    with pytest.raises(ArchiveError, match=r"bad.tar: not a tar header at byte 0"):
        list(tarreader.scan_tar(data, 0, len(data), "bad.tar"))


def oci_archive_from_layer(tmp_path: Path, layer: bytes) -> Path:
    """Wrap a hand-made (possibly hostile) layer tar into an OCI archive, with GNU tar."""
    layout = tmp_path / "layout"
    blobs = layout / "blobs/sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    layer_desc = {"mediaType": oci_layout.MEDIA_LAYER, **blob(layer)}
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}}
    manifest = {"schemaVersion": 2, "mediaType": oci_layout.MEDIA_MANIFEST,
                "config": {"mediaType": oci_layout.MEDIA_CONFIG,
                           **blob(json.dumps(config).encode())},
                "layers": [layer_desc]}
    index = {"schemaVersion": 2,
             "manifests": [{"mediaType": oci_layout.MEDIA_MANIFEST,
                            **blob(json.dumps(manifest).encode())}]}
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    archive_path = tmp_path / "hostile.oci.tar"
    run("tar", "-C", layout, "-cf", archive_path, ".")
    return archive_path


def layer_with(*members: tuple[str, str, str]) -> bytes:
    """A layer tar of (name, kind, value) members: kind "file" (value = data) or "symlink"."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, value
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value.encode()))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("srv/repo/../../escape", "file", "x")], "unsafe path"),
        ([("srv/repo/out", "symlink", "../../../etc")], "points outside"),
        ([("srv/repo/abs", "symlink", "/etc")], "points outside"),
        ([("srv/repo/sub/in", "symlink", ".."), ("srv/repo/sub/in/x", "file", "x")],
         "through a symlink"),
    ],
)
def test_extract_refuses_to_leave_the_target(members, message: str, tmp_path: Path):
    archive_path = oci_archive_from_layer(tmp_path, layer_with(*members))
    target = tmp_path / "target"
    with OciArchive(archive_path) as image, pytest.raises(ArchiveError, match=message):
        image.extract_content(target)
    assert not (tmp_path / "escape").exists()


def test_extract_keeps_inside_symlinks_and_reads_foreign_archives(tmp_path: Path):
    layer = layer_with(("srv/repo/config", "file", "[core]\n"),
                       ("srv/repo/alias", "symlink", "config"),
                       ("srv/hostimage.json", "file", "{}\n"))
    archive_path = oci_archive_from_layer(tmp_path, layer)
    with OciArchive(archive_path) as image:
        assert image.read_content_file("srv/hostimage.json") == b"{}\n"
        assert image.extract_content(tmp_path / "repo") == 1
    assert (tmp_path / "repo/alias").read_text() == "[core]\n"
    assert os.readlink(tmp_path / "repo/alias") == "config"


def test_content_dir_must_hold_an_archive_mode_repo(tmp_path: Path):
    content_dir = tmp_path / "content"
    (content_dir / "srv").mkdir(parents=True)
    with pytest.raises(ArchiveError, match=r"srv/repo/config: cannot read"):
        write_oci_archive(tmp_path / "x.oci.tar", content_dir, spec_for("c"))
    run("ostree", "init", f"--repo={content_dir / 'srv/repo'}", "--mode=bare-user")
    with pytest.raises(ArchiveError, match=r"core.mode: expected archive .* got 'bare-user'"):
        write_oci_archive(tmp_path / "x.oci.tar", content_dir, spec_for("c"))
    assert not (tmp_path / "x.oci.tar").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [({"created": -1}, "created: expected"), ({"exposed_ports": ["http"]}, "exposed_ports")],
)
def test_bad_spec_values_are_named(change, message: str, content: tuple[Path, str], tmp_path):
    with pytest.raises(OciSpecError, match=message):
        write_oci_archive(tmp_path / "x.oci.tar", content[0], spec_for(content[1], **change))


# ------------------------------------------------------------------ server layer (issue 14)


def _busybox() -> Path:
    from koji_hostimage.image.serverlayer import find_busybox

    return find_busybox()  # scripts/setup-debian.sh installs busybox-static


def test_server_layer_runs_busybox_httpd_as_nobody(content: tuple[Path, str], tmp_path: Path):
    from koji_hostimage.image.serverlayer import SERVER_CMD

    content_dir, commit = content
    dest = tmp_path / "served.oci.tar"
    result = write_oci_archive(dest, content_dir,
                               spec_for(commit, cmd=None, server_busybox=_busybox()))
    config = json.loads(run("skopeo", "inspect", "--config", f"oci-archive:{dest}"))["config"]
    assert config["Cmd"] == SERVER_CMD == ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080",
                                           "-h", "/srv/repo"]
    assert (config["User"], config["WorkingDir"]) == ("65534:65534", "/srv/repo")
    assert config["ExposedPorts"] == {"8080/tcp": {}} and config["StopSignal"] == "SIGKILL"
    with OciArchive(dest) as image:
        assert len(image.layers) == 2 and image.content_layer().digest == (
            result.content_layer_digest)
        server = image.layers[0]
        assert image.config["rootfs"]["diff_ids"] == [server.digest, result.content_layer_digest]
        assert "BusyBox v" in image.config["history"][0]["created_by"]
        with tarfile.open(fileobj=io.BytesIO(image.read_blob(server.digest))) as tar:
            members = {m.name: m for m in tar.getmembers()}
            binary = tar.extractfile("bin/busybox").read()  # type: ignore[union-attr]
            passwd = tar.extractfile("etc/passwd").read()  # type: ignore[union-attr]
    assert list(members) == ["bin", "bin/busybox", "etc", "etc/group", "etc/passwd"]
    assert binary == _busybox().read_bytes() and members["bin/busybox"].mode == 0o755
    assert b"nobody:x:65534:65534:" in passwd
    for member in members.values():
        assert (member.mtime, member.uid, member.gid, member.uname) == (0, 0, 0, "")


def test_server_layer_digest_depends_only_on_the_binary(
        content: tuple[Path, str], tmp_path: Path):
    content_dir, commit = content
    copy = tmp_path / "busybox-copy"
    shutil.copy(_busybox(), copy)
    os.utime(copy, (1_000_000, 1_000_000))
    layers = []
    for number, (busybox, created) in enumerate([(_busybox(), TIMESTAMP),
                                                 (copy, TIMESTAMP + 86400)]):
        dest = tmp_path / f"{number}.oci.tar"
        write_oci_archive(dest, content_dir,
                          spec_for(commit, created=created, server_busybox=busybox))
        with OciArchive(dest) as image:
            layers.append(image.layers[0].digest)
    assert layers[0] == layers[1]  # another build time, another copy: the same layer
    changed = tmp_path / "busybox-changed"
    changed.write_bytes(_busybox().read_bytes() + b"\0")
    changed.chmod(0o755)
    write_oci_archive(tmp_path / "c.oci.tar", content_dir,
                      spec_for(commit, server_busybox=changed))
    with OciArchive(tmp_path / "c.oci.tar") as image:
        assert image.layers[0].digest != layers[0]


def test_server_binary_must_be_static_and_of_the_arch(content: tuple[Path, str],
                                                     tmp_path: Path):
    content_dir, commit = content
    dynamic = Path(shutil.which("ostree") or "/usr/bin/ostree")
    with pytest.raises(ArchiveError, match=f"{dynamic}: dynamically linked"):
        write_oci_archive(tmp_path / "x.oci.tar", content_dir,
                          spec_for(commit, server_busybox=dynamic))
    with pytest.raises(ArchiveError, match="expected a busybox for aarch64"):
        write_oci_archive(tmp_path / "x.oci.tar", content_dir,
                          spec_for(commit, server_busybox=_busybox(), koji_arch="aarch64"))
    script = tmp_path / "busybox"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(ArchiveError, match="expected a 64-bit ELF executable"):
        write_oci_archive(tmp_path / "x.oci.tar", content_dir,
                          spec_for(commit, server_busybox=script))
    with pytest.raises(OciSpecError, match="expected no server layer with a base image"):
        write_oci_archive(tmp_path / "x.oci.tar", content_dir,
                          spec_for(commit, server_busybox=_busybox(), base_image=script))
    assert not (tmp_path / "x.oci.tar").exists()


def test_content_layer_is_world_readable(content: tuple[Path, str], tmp_path: Path):
    content_dir, commit = content
    copy = tmp_path / "content"
    shutil.copytree(content_dir, copy, symlinks=True)
    (copy / "srv/hostimage.json").chmod(0o600)
    (copy / "srv/repo/refs").chmod(0o700)
    dest = tmp_path / "x.oci.tar"
    write_oci_archive(dest, copy, spec_for(commit))
    with OciArchive(dest) as image:
        modes = {m.name: m.mode for m in image.iter_content_members()}
    assert modes["srv/hostimage.json"] == 0o644 and modes["srv/repo/refs"] == 0o755


@pytest.mark.parametrize(("name", "version", "release", "expected"), [
    ("host", "2.0", "1", "host:2.0-1"),
    ("Fedora-IoT", "41.20260101.0", "3", "fedora-iot:41.20260101.0-3"),
    ("os host", "1.0+git", "1", "os-host:1.0_git-1"),
])
def test_ref_name_is_name_colon_version_release(name, version, release, expected):
    assert oci_layout.image_ref_name(name, version, release) == expected


# ------------------------------------------------------------------ tar writer: exact bytes


def _ustar_block(info: tarfile.TarInfo) -> bytes:
    """tarfile's ustar header with devmajor/devminor written as zeros (tarfile leaves
    them empty for non-devices, our writer writes "0000000"), checksum recomputed."""
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    block[329:345] = b"0000000\0" * 2
    block[148:156] = b" " * 8
    block[148:155] = b"%06o\0" % sum(block)
    return bytes(block)


def _reference_tar(src: Path) -> bytes:
    """The tar our writer must produce for a tree whose names all fit ustar, built by
    Python's tarfile with the same normalisation: sorted, parents first, fixed mtime,
    uid/gid 0 and no names, modes & 0o7777, hard links as files, symlinks as symlinks."""
    blocks: list[bytes] = []

    def add(directory: Path, prefix: str) -> None:
        for child in sorted(directory.iterdir(), key=lambda p: os.fsencode(p.name)):
            st = child.lstat()
            info = tarfile.TarInfo(prefix + child.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = TIMESTAMP, 0, 0, "", ""
            info.mode = st.st_mode & 0o7777
            if child.is_symlink():
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(child)
                blocks.append(_ustar_block(info))
            elif child.is_dir():
                info.type = tarfile.DIRTYPE
                blocks.append(_ustar_block(info))
                add(child, prefix + child.name + "/")
            else:
                data = child.read_bytes()
                info.size = len(data)
                blocks.append(_ustar_block(info))
                blocks.append(data + bytes(-len(data) % 512))

    add(src, "")
    return b"".join(blocks) + bytes(1024)


def _ustar_tree(src: Path) -> None:
    deep = src / ("p" * 70) / ("q" * 70)  # 141 + 60: a name split into prefix and name
    deep.mkdir(parents=True)
    (deep / ("n" * 58)).write_text("prefix split")
    (src / "empty").write_bytes(b"")
    (src / "block").write_bytes(b"x" * 1024)  # a whole number of blocks: no padding
    (src / "big.bin").write_bytes(os.urandom(tarwriter.BUFFER_SIZE * 2 + 777))
    (src / "exec").write_text("#!/bin/sh\n")
    (src / "exec").chmod(0o4755)
    (src / "private").mkdir(mode=0o700)
    (src / "private" / "file").write_bytes(os.urandom(600))
    (src / "link").symlink_to("exec")
    (src / "dangling").symlink_to("does/not/exist")
    (src / "hard").hardlink_to(src / "exec")
    for number in range(300):  # many small files share buffers
        (src / "many").mkdir(exist_ok=True)
        (src / "many" / f"f{number:03}").write_bytes(os.urandom(number * 37))


def test_tar_writer_bytes_equal_a_tarfile_reference(tmp_path: Path):
    src = tmp_path / "src"
    _ustar_tree(src)
    out = tmp_path / "out.tar"
    with out.open("wb") as fh:
        packed = tarwriter.pack_tree(src, fh, TIMESTAMP)
    expected = _reference_tar(src)
    data = out.read_bytes()
    assert data == expected
    assert packed.size == len(expected)
    assert packed.sha256 == hashlib.sha256(expected).hexdigest()
    assert packed.data_bytes == sum(
        p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink()
    )


def test_pax_members_read_back_by_tarfile(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / ("u" * 120)).write_text("long name")
    (src / "ünï").write_text("non-ASCII name")
    (src / "l").symlink_to("t" * 150)
    out = tmp_path / "out.tar"
    with out.open("wb") as fh:
        tarwriter.pack_tree(src, fh, TIMESTAMP)
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar}
        assert members["l"].linkname == "t" * 150
        assert tar.extractfile(members["u" * 120]).read() == b"long name"
        assert tar.extractfile(members["ünï"]).read() == b"non-ASCII name"
        assert all(m.mtime == TIMESTAMP for m in members.values())


@pytest.mark.parametrize("size", [100, tarwriter.BUFFER_SIZE + 100])
def test_tar_writer_refuses_files_that_changed_size(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
):
    src = tmp_path / "src"
    src.mkdir()
    victim = src / "victim"
    victim.write_bytes(b"v" * size)
    monkeypatch.setattr(tarwriter, "_fstat", _fstat_lying_about(victim, -1))
    with (tmp_path / "grew.tar").open("wb") as fh, pytest.raises(
        ArchiveError, match=f"{victim}: file grew while packing \\(expected {size - 1} bytes\\)"
    ):
        tarwriter.pack_tree(src, fh, TIMESTAMP)
    monkeypatch.setattr(tarwriter, "_fstat", _fstat_lying_about(victim, +1))
    with (tmp_path / "shrank.tar").open("wb") as fh, pytest.raises(
        ArchiveError, match=f"{victim}: file shrank while packing \\(expected {size + 1} bytes\\)"
    ):
        tarwriter.pack_tree(src, fh, TIMESTAMP)


@pytest.mark.parametrize("size", [0, 12345, 0o77777777777, 0o77777777777 + 1, 20 << 30])
def test_fixed_length_header_holds_any_size_in_one_block(size: int):
    """The OCI writer rewrites the content layer's header in place once the layer's size
    is known: the header must be one block whatever the size (base-256 from 8 GiB)."""
    name = b"blobs/sha256/" + b"a" * 64
    block = tarheaders.fixed_length_header(name, 0o644, size, TIMESTAMP)
    assert len(block) == tarwriter.BLOCK
    if size <= 0o77777777777:
        assert block == tarheaders.encode_header(name, tarheaders.REGTYPE, 0o644, size, TIMESTAMP)
    member = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")  # checks the sum
    assert (member.name, member.size, member.mode) == (name.decode(), size, 0o644)
    assert tarreader._number(block[124:136], "test", 0) == size


@pytest.mark.parametrize("typeflag", [tarheaders.REGTYPE, tarheaders.DIRTYPE, tarheaders.SYMTYPE])
def test_header_template_path_equals_the_general_encoder(typeflag: bytes):
    for name, mode, size, mtime in [
        (b"a", 0o644, 0, 0),
        (b"objects/ab/" + b"c" * 62 + b".filez", 0o644, 12345, TIMESTAMP),
        (b"d" * 100, 0o4755, tarheaders.MAX_OCTAL_SIZE, TIMESTAMP),
        (b"x/y/", 0o700, 511, 2**33 - 1),
    ]:
        expected = tarheaders.ustar_header(name, typeflag, mode, size, mtime)
        assert tarheaders.encode_header(name, typeflag, mode, size, mtime) == expected
        parsed = tarfile.TarInfo.frombuf(expected, "utf-8", "surrogateescape")
        assert (parsed.size, parsed.mode, parsed.mtime) == (size, mode, mtime)
