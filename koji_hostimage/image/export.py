# SPDX-License-Identifier: GPL-2.0-or-later
"""The export repo: the archive-mode OSTree repo that ships inside the container archive.

From the work repo (bare-user, where the compose wrote commit C on ref R) we build a
fresh archive-mode repo holding only C and R (``ostree pull-local --depth=0``), plus:

- static deltas from earlier builds (given as earlier OCI archives or repo dirs). A delta
  needs both commits in one repo, so it is generated in a scratch repo and its directory
  is then copied into the export repo; the export repo never holds the old commit.
- optionally a from-scratch delta (``--empty``), for first installs in one request;
- ``summary`` regenerated so ``ostree pull`` sees the deltas (ostree >= 2020.7 also writes
  ``delta-indexes/`` from ``summary -u``);
- GPG signatures on the commit and the summary when a key id is given.

Reproducibility: ostree stamps the wall-clock time into each delta superblock
(``ostree_repo_static_delta_generate`` in ostree-repo-static-delta-compilation.c adds
``g_date_time_new_now_utc()`` as the superblock's ``t`` field) and into the summary
(``ostree.summary.last-modified`` in ``ostree_repo_regenerate_summary``). Neither takes a
caller-supplied time, so we overwrite both 8-byte fields in place with the commit
timestamp before anything checksums or signs them. Unsigned builds of the same commit
then give the same bytes; GPG signatures carry their own creation time and always differ.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from koji_hostimage.errors import ArchiveError, HostImageError
from koji_hostimage.fsutil import atomic_output
from koji_hostimage.manifest import Delta
from koji_hostimage.ostree.repo import OSTreeRepo
from koji_hostimage.progress import Progress, count_files

log = logging.getLogger(__name__)

SUMMARY_LAST_MODIFIED_KEY = b"ostree.summary.last-modified\x00"
# A delta from a previous build is shipped unless it is this much larger than the objects
# that changed (see _worth_shipping).
DELTA_MARGIN_BYTES = 64 * 1024


class ExportError(HostImageError):
    """The export repo could not be built (bad previous build, failed delta, ...)."""


@dataclass
class SigningKey:
    """A GPG key ostree signs with (``--gpg-sign=KEY_ID --gpg-homedir=DIR``)."""

    key_id: str
    homedir: Path | None = None


@dataclass
class PreviousCommit:
    """An earlier build's commit, in some repo we can ``pull-local`` from."""

    source: Path  # what the user named: an archive, a repo or an unpacked image
    repo: Path
    ref: str
    commit: str


@dataclass
class ExportResult:
    repo: Path
    ref: str
    commit: str
    timestamp: int
    deltas: list[Delta] = field(default_factory=list)
    object_count: int = 0
    object_bytes: int = 0
    signed: bool = False


# --- previous builds --------------------------------------------------------------------


def open_previous(path: Path, ref: str, scratch: Path, arch: str | None = None
                  ) -> PreviousCommit:
    """Find the commit an earlier build shipped.

    ``path`` is an earlier OCI archive (verified against its digests, then its
    ``srv/repo`` is extracted under ``scratch``), an unpacked image or content layer
    holding ``srv/repo``, or a repo dir. The commit is the one on ``ref``; a repo with a
    single other ref (a renamed stream) is accepted too. ``arch`` (a Koji arch): the
    build this one continues from must be of it, by the archive's OCI config
    ``architecture`` and by its ``hostimage.json`` ``arch`` (where there is one);
    ExportError naming both arches otherwise.
    """
    path = Path(path)
    if path.is_file():
        repo = _extract_archive_repo(path, scratch, arch)
    elif OSTreeRepo(path).exists():
        repo = path
    elif OSTreeRepo(path / "srv" / "repo").exists():
        repo = path / "srv" / "repo"
        manifest = path / "srv" / "hostimage.json"
        if arch and manifest.is_file():
            _check_arch(path, arch, None, _manifest_arch(path, manifest.read_bytes()))
    else:
        raise ExportError(
            f"{path}: previous build: expected an OCI archive (.oci.tar), an OSTree repo "
            "or a directory holding srv/repo"
        )
    refs = OSTreeRepo(repo).refs()
    if ref in refs:
        chosen = ref
    elif len(refs) == 1:
        chosen = refs[0]
    else:
        raise ExportError(
            f"{path}: previous build: expected ref {ref!r} (or exactly one ref), "
            f"got {', '.join(refs) or 'no refs'}"
        )
    return PreviousCommit(path, repo, chosen, str(OSTreeRepo(repo).rev_parse(chosen)))


def _extract_archive_repo(archive: Path, scratch: Path, arch: str | None = None) -> Path:
    # oci_reader.py reads the archive format; imported here so export stays usable without it
    from .oci_reader import OciArchive

    repo = Path(tempfile.mkdtemp(prefix="previous-", dir=scratch))
    with OciArchive(archive, architecture=_oci_arch(arch) if arch else None) as image:
        image.verify()  # a delta is never made from content that fails its digest
        if arch:
            try:
                raw = image.read_content_file("srv/hostimage.json")
            except ArchiveError:
                raw = None  # not one of ours: the OCI config alone tells the arch
            found = _manifest_arch(archive, raw) if raw is not None else None
            _check_arch(archive, arch, image.architecture, found)
        image.extract_content(repo, prefix="srv/repo/")  # ArchiveError names the file
    if not OSTreeRepo(repo).exists():
        raise ArchiveError(f"{archive}: content layer: expected srv/repo (an OSTree repo)")
    return repo


def _manifest_arch(path: Path, raw: bytes) -> str | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ExportError(f"{path}: previous build: srv/hostimage.json: not valid JSON: "
                          f"{exc}") from None
    found = value.get("arch") if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


def _oci_arch(arch: str) -> str:
    """The OCI architecture of a Koji arch (the name itself for one the layout lacks)."""
    from .oci_layout import OciSpecError, koji_arch_to_oci

    try:
        return koji_arch_to_oci(arch)
    except OciSpecError:
        return arch


def _check_arch(path: Path, arch: str, oci_arch: str | None, koji_arch: str | None) -> None:
    """The previous build must be of ``arch``: by hostimage.json's Koji arch, and by the
    OCI config's architecture (Koji x86_64 is OCI amd64, and so on)."""
    expected_oci = _oci_arch(arch)
    if koji_arch is not None and koji_arch != arch:
        raise ExportError(f"{path}: previous build is for arch {koji_arch} (hostimage.json "
                          f"arch), this build is for {arch}: expected a build of {arch}")
    if oci_arch is not None and oci_arch not in (expected_oci, arch):
        raise ExportError(f"{path}: previous build is for arch {oci_arch} (OCI config "
                          f"architecture), this build is for {arch} ({expected_oci}): "
                          f"expected a build of {arch}")


# --- deltas ------------------------------------------------------------------------------


def _mbase64(checksum: str) -> str:
    """ostree's "modified base64" of a checksum: `/` -> `_`, no padding."""
    raw = base64.b64encode(bytes.fromhex(checksum)).decode("ascii")
    return raw.rstrip("=").replace("/", "_")


def delta_relpath(from_commit: str | None, to_commit: str) -> Path:
    """Where a delta lives in a repo (``_ostree_get_relative_static_delta_path``)."""
    to_b64 = _mbase64(to_commit)
    if from_commit is None:
        return Path("deltas", to_b64[:2], to_b64[2:])
    from_b64 = _mbase64(from_commit)
    return Path("deltas", from_b64[:2], f"{from_b64[2:]}-{to_b64}")


def _offset_size(container_size: int) -> int:
    # GVariant framing offsets are as wide as the container needs (gvariant-serialiser.c)
    if container_size <= 0xFF:
        return 1
    if container_size <= 0xFFFF:
        return 2
    if container_size <= 0xFFFFFFFF:
        return 4
    return 8


def pin_superblock_timestamp(superblock: Path, timestamp: int) -> None:
    """Overwrite a delta superblock's generation time with ``timestamp``.

    The superblock is one GVariant tuple ``(a{sv}tayay...)``. Its first member, a{sv}, is
    variable-sized, so the tuple's last framing offset (at the very end of the file) says
    where it ends; the big-endian ``t`` follows at the next 8-byte boundary.
    """
    data = bytearray(superblock.read_bytes())
    width = _offset_size(len(data))
    metadata_end = int.from_bytes(data[-width:], "little")
    offset = (metadata_end + 7) & ~7
    if offset + 8 > len(data) - width:
        raise ExportError(f"{superblock}: not a static-delta superblock (bad framing)")
    data[offset : offset + 8] = struct.pack(">Q", timestamp)
    _rewrite(superblock, bytes(data))


def pin_summary_timestamp(summary: Path, timestamp: int) -> None:
    """Overwrite ``ostree.summary.last-modified`` in a summary with ``timestamp``.

    The entry is ``{sv}`` = key string, NUL, then the variant at the next 8-byte boundary:
    8 value bytes, NUL, type ``t``. ostree writes the value in host byte order.
    """
    data = bytearray(summary.read_bytes())
    at = data.find(SUMMARY_LAST_MODIFIED_KEY)
    if at < 0:
        return  # an ostree that does not stamp summaries: nothing to pin
    offset = (at + len(SUMMARY_LAST_MODIFIED_KEY) + 7) & ~7
    if data[offset + 8 : offset + 10] != b"\x00t":
        raise ExportError(f"{summary}: ostree.summary.last-modified: expected a uint64 variant")
    order = "<" if struct.unpack("<Q", data[offset : offset + 8])[0] < 2**40 else ">"
    data[offset : offset + 8] = struct.pack(f"{order}Q", timestamp)
    _rewrite(summary, bytes(data))


def _rewrite(path: Path, data: bytes) -> None:
    mode = path.stat().st_mode & 0o7777
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _generate_delta(
    scratch_repo: OSTreeRepo, export_repo: Path, from_commit: str | None, to_commit: str,
    ts: int,
) -> Delta:
    """Generate one delta in ``scratch_repo`` and copy it into ``export_repo``."""
    scratch_repo.static_delta_generate(to_commit, from_commit)
    relpath = delta_relpath(from_commit, to_commit)
    source = scratch_repo.path / relpath
    if not (source / "superblock").is_file():
        raise ExportError(f"{scratch_repo.path}: static-delta generate wrote no "
                          f"{relpath}/superblock")
    pin_superblock_timestamp(source / "superblock", ts)
    target = export_repo / relpath
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    size = _tree_bytes(target)
    log.info("delta %s -> %s: %d bytes", from_commit or "scratch", to_commit[:12], size)
    return Delta(from_commit, to_commit, size)


# --- the export -------------------------------------------------------------------------


def count_objects(repo: Path) -> tuple[int, int]:
    """Number and total size of the files under ``objects/``."""
    sizes = _object_sizes(repo)
    return len(sizes), sum(sizes.values())


def export_commit(
    work_repo: Path,
    ref: str,
    commit: str,
    dest: Path,
    previous: Sequence[Path] = (),
    delta_from_scratch: bool = False,
    signing: SigningKey | None = None,
    scratch_dir: Path | None = None,
    timestamp: int | None = None,
    arch: str | None = None,
    on_stage: Callable[[str, float], None] | None = None,
) -> ExportResult:
    """Build the export repo at ``dest`` (created whole or not at all).

    ``previous``: earlier builds (archives or repos) to generate static deltas from;
    with ``arch`` (Koji arch), each must be of that arch (see open_previous).
    ``timestamp``: pinned into delta superblocks and the summary; default: the commit's.
    ``on_stage(name, seconds)``: told the time spent on the part ``deltas``.
    """
    work_repo, dest = Path(work_repo), Path(dest)
    commit = str(OSTreeRepo(work_repo).rev_parse(commit))
    ts = timestamp if timestamp is not None else OSTreeRepo(work_repo).show(commit).timestamp
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="export-", dir=scratch_dir) as scratch_name:
        scratch = Path(scratch_name)
        with atomic_output(dest) as repo:
            result = _populate(work_repo, ref, commit, repo, previous, delta_from_scratch,
                               signing, scratch, ts, arch, on_stage)
        result.repo = dest
    return result


def _populate(
    work_repo: Path,
    ref: str,
    commit: str,
    repo: Path,
    previous: Sequence[Path],
    delta_from_scratch: bool,
    signing: SigningKey | None,
    scratch: Path,
    ts: int,
    arch: str | None = None,
    on_stage: Callable[[str, float], None] | None = None,
) -> ExportResult:
    export = OSTreeRepo(repo).init("archive")
    with Progress("exported").watch(lambda: count_files(repo / "objects")):
        export.pull_local(work_repo, [commit], depth=0)
    export.set_ref(ref, commit)
    if signing is not None:
        # before the deltas: each superblock embeds the commit's detached metadata
        export.gpg_sign(commit, signing.key_id, signing.homedir)
    started = time.monotonic()
    deltas = _make_deltas(repo, ref, commit, previous, delta_from_scratch, scratch, ts, arch)
    if on_stage is not None and (previous or delta_from_scratch):
        on_stage("deltas", time.monotonic() - started)
    _write_summary(export, signing, ts)
    export.fsck()
    _tidy(repo)
    count, size = count_objects(repo)
    log.info("export: %s @ %s, %d objects, %d bytes, %d deltas",
             ref, commit[:12], count, size, len(deltas))
    return ExportResult(repo, ref, commit, ts, deltas, count, size, signing is not None)


def _make_deltas(
    repo: Path,
    ref: str,
    commit: str,
    previous: Sequence[Path],
    delta_from_scratch: bool,
    scratch: Path,
    ts: int,
    arch: str | None = None,
) -> list[Delta]:
    if not previous and not delta_from_scratch:
        return []
    delta_repo = OSTreeRepo(scratch / "delta-repo").init("archive")
    # from the export repo, so detached metadata (signatures) lands in the superblocks
    delta_repo.pull_local(repo, [commit], depth=0)
    deltas: list[Delta] = []
    seen: set[str] = set()
    for path in previous:
        prev = open_previous(Path(path), ref, scratch, arch)
        if prev.commit == commit or prev.commit in seen:
            log.info("previous %s: commit %s already covered, no delta", path, prev.commit[:12])
            continue
        seen.add(prev.commit)
        delta_repo.pull_local(prev.repo, [prev.commit], depth=0)
        delta = _generate_delta(delta_repo, repo, prev.commit, commit, ts)
        if _worth_shipping(delta, repo, prev.repo):
            deltas.append(delta)
    if delta_from_scratch:
        deltas.append(_generate_delta(delta_repo, repo, None, commit, ts))
    return deltas


def _object_sizes(repo: Path) -> dict[str, int]:
    return {str(p.relative_to(repo)): p.stat().st_size
            for p in (repo / "objects").rglob("*") if p.is_file()}


def _worth_shipping(delta: Delta, repo: Path, previous_repo: Path) -> bool:
    """Drop a delta that costs clearly more than fetching the changed objects one by one.

    When files are rewritten rather than edited, bsdiff output compresses worse than the
    new objects themselves, and a node would download more with the delta than without.
    The changed objects are those of the export repo that the previous build's repo lacks
    (an exported repo holds exactly its commit's objects). The margin keeps deltas that
    are only a little larger: one or two requests beat dozens of small ones.
    """
    known = _object_sizes(previous_repo)
    changed = sum(size for name, size in _object_sizes(repo).items() if name not in known)
    if delta.bytes <= changed + DELTA_MARGIN_BYTES:
        return True
    directory = repo / delta_relpath(delta.from_commit, delta.to_commit)
    shutil.rmtree(directory)
    if not any(directory.parent.iterdir()):
        directory.parent.rmdir()
    log.info("delta %s -> %s not shipped: %d bytes, more than the %d bytes of changed objects",
             (delta.from_commit or "scratch")[:12], delta.to_commit[:12], delta.bytes, changed)
    return False


def _write_summary(repo: OSTreeRepo, signing: SigningKey | None, ts: int) -> None:
    if signing is not None:
        # ostree signs only while regenerating (`summary` alone refuses: "use -u"), so a
        # signed summary keeps ostree's wall-clock stamp; its signature differs per run
        # anyway, so a signed build is never byte-reproducible.
        repo.summary_update(gpg_key=signing.key_id, gpg_homedir=signing.homedir)
        return
    repo.summary_update()
    pin_summary_timestamp(repo.path / "summary", ts)


def _tidy(repo: Path) -> None:
    """Drop ostree's scratch state; only content-bearing files go into the archive."""
    tmp = repo / "tmp"
    if tmp.is_dir():
        shutil.rmtree(tmp)
        tmp.mkdir()
    (repo / ".lock").unlink(missing_ok=True)
