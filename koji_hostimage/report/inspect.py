# SPDX-License-Identifier: GPL-2.0-or-later
"""Look inside a host image (``inspect``) and compare two of them (``diff``).

Both read the build manifest a build carries (``srv/hostimage.json`` in the archive, or
the ``<nvr>.<arch>.hostimage.json`` beside it) and, for archives, the OCI config and
layers. The package comparison is pkgdiff.diff_packages (rpm's own version ordering), so
``diff`` and the HTML report agree on what "upgraded" means.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koji_hostimage.errors import ArchiveError, HostImageError
from koji_hostimage.manifest import MANIFEST_NAME, HostImageManifest
from koji_hostimage.pkgdiff import PackageDiff, diff_packages

log = logging.getLogger(__name__)

CONTENT_MANIFEST = f"srv/{MANIFEST_NAME}"


@dataclass
class LayerSummary:
    digest: str
    size: int
    media_type: str


@dataclass
class ImageInfo:
    """What ``koji-hostimage inspect`` shows: the manifest plus the OCI view."""

    path: Path
    manifest: HostImageManifest
    archive_size: int | None = None  # None: read from a hostimage.json, not an archive
    manifest_digest: str | None = None
    architecture: str | None = None
    created: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)
    cmd: list[str] | None = None
    layers: list[LayerSummary] = field(default_factory=list)
    # Archives: every blob matched its digest and the content layer's tar is whole
    # (load_image raises otherwise); None for a hostimage.json.
    verified: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "path": str(self.path),
            "name": m.name,
            "version": m.version,
            "release": m.release,
            "arch": m.arch,
            "nvr": m.nvr,
            "ref": m.ref,
            "commit": m.commit,
            "parent": m.parent,
            "timestamp": m.timestamp,
            "inputhash": m.inputhash,
            "engine": m.engine,
            "packages": len(m.packages),
            "object_count": m.object_count,
            "object_bytes": m.object_bytes,
            "deltas": [{"from": d.from_commit, "to": d.to_commit, "bytes": d.bytes}
                       for d in m.deltas],
            "archive_size": self.archive_size,
            "manifest_digest": self.manifest_digest,
            "architecture": self.architecture,
            "created": self.created,
            "labels": dict(sorted(self.labels.items())),
            "exposed_ports": self.exposed_ports,
            "cmd": self.cmd,
            "layers": [{"digest": la.digest, "size": la.size, "media_type": la.media_type}
                       for la in self.layers],
            "verified": self.verified,
        }


def _is_json_file(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(1).lstrip()[:1] in (b"{", b"")  # a tar never starts with "{"


def load_image(path: Path) -> ImageInfo:
    """Read an OCI archive of ours, or a hostimage.json file, into an ImageInfo."""
    path = Path(path)
    if not path.is_file():
        raise HostImageError(f"{path}: expected an OCI archive or a hostimage.json file")
    if _is_json_file(path):
        manifest = HostImageManifest.load(path)
        info = ImageInfo(path, manifest)
        if manifest.oci is not None:
            info.archive_size = manifest.oci.archive_size
            info.manifest_digest = manifest.oci.manifest_digest
        return info
    return _load_archive(path)


def _load_archive(path: Path) -> ImageInfo:
    from koji_hostimage.image.oci_reader import OciArchive

    with OciArchive(path) as image:
        # Only verified content is described: every blob against its digest, then every
        # tar header of the content layer (a member claiming more bytes than the layer
        # holds is reported, not passed over); ArchiveError names the archive and blob.
        image.verify()
        entries = sum(1 for _member in image.iter_content_members())
        log.debug("%s: verified, %d content entries", path, entries)
        raw = image.read_content_file(CONTENT_MANIFEST)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ArchiveError(f"{path}: {CONTENT_MANIFEST}: not valid JSON: {exc}") from exc
        manifest = HostImageManifest.from_dict(data, f"{path}:{CONTENT_MANIFEST}")
        config = image.image_config
        ports = config.get("ExposedPorts")
        cmd = config.get("Cmd")
        return ImageInfo(
            path=path,
            manifest=manifest,
            archive_size=image.size,
            manifest_digest=image.manifest_digest,
            architecture=image.architecture,
            created=str(image.config.get("created") or "") or None,
            labels=image.labels,
            exposed_ports=sorted(map(str, ports)) if isinstance(ports, dict) else [],
            cmd=[str(c) for c in cmd] if isinstance(cmd, list) else None,
            layers=[LayerSummary(la.digest, la.size, la.media_type) for la in image.layers],
            verified=True,
        )


def format_image(info: ImageInfo) -> str:
    """The human-readable ``inspect`` output."""
    m = info.manifest
    lines = [
        f"image:        {m.nvr}.{m.arch}",
        f"file:         {info.path}" + (f" ({info.archive_size} bytes)"
                                        if info.archive_size is not None else ""),
        f"version:      {m.version}",
        f"ref:          {m.ref}",
        f"commit:       {m.commit}",
        f"parent:       {m.parent or '-'}",
        f"engine:       {m.engine}",
        f"packages:     {len(m.packages)}",
        f"objects:      {m.object_count} ({m.object_bytes} bytes)",
    ]
    if info.manifest_digest:
        lines.append(f"manifest:     {info.manifest_digest}")
    if info.verified:
        lines.append("verified:     every blob matches its digest; content layer tar whole")
    if info.architecture:
        lines.append(f"platform:     linux/{info.architecture}, created {info.created}")
    if info.exposed_ports:
        lines.append(f"ports:        {', '.join(info.exposed_ports)}")
    if info.cmd:
        lines.append(f"cmd:          {json.dumps(info.cmd)}")
    for number, layer in enumerate(info.layers):
        lines.append(f"layer {number}:      {layer.digest} {layer.size} bytes "
                     f"({layer.media_type})")
    for key, value in sorted(info.labels.items()):
        lines.append(f"label:        {key}={value}")
    for delta in m.deltas:
        lines.append(f"delta:        {delta.from_commit or 'scratch'} -> {delta.to_commit} "
                     f"{delta.bytes} bytes")
    return "\n".join(lines)


# --- diff --------------------------------------------------------------------------------


@dataclass
class SizeChange:
    old: int | None
    new: int | None

    @property
    def change(self) -> int | None:
        if self.old is None or self.new is None:
            return None
        return self.new - self.old


@dataclass
class BuildDiff:
    old: HostImageManifest
    new: HostImageManifest
    packages: PackageDiff
    object_bytes: SizeChange
    object_count: SizeChange
    archive_size: SizeChange

    @property
    def commit_changed(self) -> bool:
        return self.old.commit != self.new.commit

    @property
    def has_delta_from_old(self) -> bool:
        """Whether the new build ships a static delta from the old build's commit."""
        return any(d.from_commit == self.old.commit for d in self.new.deltas)

    def to_dict(self) -> dict[str, Any]:
        def side(m: HostImageManifest) -> dict[str, Any]:
            return {"nvr": m.nvr, "arch": m.arch, "version": m.version, "ref": m.ref,
                    "commit": m.commit}

        def size(s: SizeChange) -> dict[str, int | None]:
            return {"old": s.old, "new": s.new, "change": s.change}

        return {
            "old": side(self.old),
            "new": side(self.new),
            "commit_changed": self.commit_changed,
            "delta_from_old": self.has_delta_from_old,
            "packages": self.packages.to_dict(),
            "object_bytes": size(self.object_bytes),
            "object_count": size(self.object_count),
            "archive_size": size(self.archive_size),
        }


def diff_manifests(old: HostImageManifest, new: HostImageManifest,
                   old_archive_size: int | None = None,
                   new_archive_size: int | None = None) -> BuildDiff:
    """Compare two builds' manifests (packages, commits, sizes)."""
    if old_archive_size is None and old.oci is not None:
        old_archive_size = old.oci.archive_size
    if new_archive_size is None and new.oci is not None:
        new_archive_size = new.oci.archive_size
    return BuildDiff(
        old=old,
        new=new,
        packages=diff_packages(old.packages, new.packages),
        object_bytes=SizeChange(old.object_bytes, new.object_bytes),
        object_count=SizeChange(old.object_count, new.object_count),
        archive_size=SizeChange(old_archive_size, new_archive_size),
    )


def diff_images(old: Path, new: Path) -> BuildDiff:
    """``koji-hostimage diff A B``: A and B are archives or hostimage.json files."""
    a, b = load_image(old), load_image(new)
    return diff_manifests(a.manifest, b.manifest, a.archive_size, b.archive_size)


def _signed(value: int | None) -> str:
    return "?" if value is None else f"{value:+d}"


def format_diff(diff: BuildDiff) -> str:
    """The human-readable ``diff`` output."""
    old, new = diff.old, diff.new
    lines = [
        f"old:       {old.nvr}.{old.arch} {old.commit}",
        f"new:       {new.nvr}.{new.arch} {new.commit}",
        "commit:    " + ("changed" if diff.commit_changed else "same"),
        "delta:     " + ("new build ships a static delta from old"
                         if diff.has_delta_from_old else "none from old"),
    ]
    pkgs = diff.packages
    lines.append(f"packages:  {len(pkgs.added)} added, {len(pkgs.removed)} removed, "
                 f"{len(pkgs.upgraded)} upgraded, {len(pkgs.downgraded)} downgraded")
    lines += [f"  + {p.nevra}" for p in pkgs.added]
    lines += [f"  - {p.nevra}" for p in pkgs.removed]
    lines += [f"  ^ {c.name}.{c.arch} {c.old.evr} -> {c.new.evr}" for c in pkgs.upgraded]
    lines += [f"  v {c.name}.{c.arch} {c.old.evr} -> {c.new.evr}" for c in pkgs.downgraded]
    for label, size in (("objects", diff.object_count), ("object bytes", diff.object_bytes),
                        ("archive bytes", diff.archive_size)):
        lines.append(f"{label + ':':<14}{size.old if size.old is not None else '?'} -> "
                     f"{size.new if size.new is not None else '?'} ({_signed(size.change)})")
    return "\n".join(lines)


# --- Koji builds ------------------------------------------------------------------------


def diff_koji_builds(session: Any, topurl: str, old_nvr: str, new_nvr: str,
                     arch: str | None = None) -> BuildDiff:
    """Compare two Koji builds (NVRs) of host images, one arch of each.

    ``arch`` may be left out when the two builds share exactly one arch.
    """
    old = _koji_manifests_by_arch(session, topurl, old_nvr)
    new = _koji_manifests_by_arch(session, topurl, new_nvr)
    common = sorted(old.keys() & new.keys())
    if arch is None:
        if len(common) != 1:
            raise HostImageError(
                f"diff {old_nvr} {new_nvr}: expected --arch, one of "
                f"{', '.join(common) or '(no arch in common)'}"
            )
        arch = common[0]
    if arch not in common:
        raise HostImageError(f"diff {old_nvr} {new_nvr}: arch {arch!r} is not in both "
                             f"builds (common: {', '.join(common) or 'none'})")
    (a, a_size), (b, b_size) = old[arch], new[arch]
    return diff_manifests(a, b, a_size, b_size)


def _koji_manifests_by_arch(session: Any, topurl: str, nvr: str
                            ) -> dict[str, tuple[HostImageManifest, int | None]]:
    from .sources import from_koji_nvr  # report side; not needed for local diffs

    entries, skipped = from_koji_nvr(session, topurl, nvr)
    if skipped:
        reasons = "; ".join(f"{s.origin}: {s.reason}" for s in skipped)
        raise HostImageError(f"Koji build {nvr}: unusable manifest: {reasons}")
    if not entries:
        raise HostImageError(f"Koji build {nvr}: no *.hostimage.json archive (not a host "
                             "image build?)")
    return {e.manifest.arch: (e.manifest, e.archive_size) for e in entries}
