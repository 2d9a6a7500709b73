# SPDX-License-Identifier: GPL-2.0-or-later
"""Where hostimage.json manifests are found: a directory of builds, a pungi compose's
images.json, or a Koji hub.

Every source returns the manifests it could read plus the ones it skipped, with a
reason, so one bad file never hides the rest (a dashboard must keep working while a
newer koji-hostimage writes a newer schema).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

from koji_hostimage.errors import HostImageError, ManifestError
from koji_hostimage.manifest import (
    MANIFEST_NAME,
    HostImageManifest,
    Package,
    parse_manifest_bytes,
)

from .page import ManifestEntry, SkippedManifest

log = logging.getLogger(__name__)

ARCHIVE_SUFFIX = ".oci.tar"
MANIFEST_SUFFIX = ".hostimage.json"
_KNOWN_KEYS = {f.name for f in fields(HostImageManifest)}
_KNOWN_PACKAGE_KEYS = {f.name for f in fields(Package)} | {"nevra"}

Found = tuple[list[ManifestEntry], list[SkippedManifest]]


def parse_strict(data: Any, origin: str) -> HostImageManifest:
    """Parse a manifest, also refusing fields this version does not know.

    An unknown field means the writer knew something we do not; showing the build
    without it could mislead, so the report skips it and says why. The schema version
    and required fields are checked first, so a newer manifest is reported as newer.
    """
    manifest = HostImageManifest.from_dict(data, origin)
    _check_known_fields(data, origin)
    return manifest


def _check_known_fields(data: dict[str, Any], origin: str) -> None:
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise ManifestError(f"{origin}: unknown fields: {', '.join(unknown)}")
    for index, pkg in enumerate(data["packages"]):
        extra = sorted(set(pkg) - _KNOWN_PACKAGE_KEYS)
        if extra:
            raise ManifestError(f"{origin}: packages[{index}]: unknown fields: "
                                f"{', '.join(extra)}")


def _entry_from_bytes(raw: bytes, origin: str, archive_size: int | None,
                      found: Found) -> None:
    entries, skipped = found
    try:
        # the schema (types, bounds) first, then the fields this version does not know
        manifest = parse_manifest_bytes(raw, origin)
        _check_known_fields(json.loads(raw), origin)
    except ManifestError as exc:
        skipped.append(SkippedManifest(origin, str(exc)))
        return
    if archive_size is None and manifest.oci is not None:
        archive_size = manifest.oci.archive_size
    entries.append(ManifestEntry(manifest, origin, archive_size))


def _manifest_in_archive(archive: Path, found: Found) -> None:
    from koji_hostimage.image.oci_reader import (
        OciArchive,  # only needed when no manifest lies beside the archive
    )

    origin = f"{archive}:srv/{MANIFEST_NAME}"
    try:
        with OciArchive(archive) as image:
            image.verify()  # a tampered archive is skipped with the digest mismatch
            raw = image.read_content_file(f"srv/{MANIFEST_NAME}")
    except (HostImageError, OSError, KeyError) as exc:
        found[1].append(SkippedManifest(str(archive), f"cannot read manifest: {exc}"))
        return
    _entry_from_bytes(raw, origin, archive.stat().st_size, found)


def _sibling_manifest(archive: Path) -> Path:
    return archive.with_name(archive.name[: -len(ARCHIVE_SUFFIX)] + MANIFEST_SUFFIX)


def from_directory(root: Path) -> Found:
    """Every ``*.hostimage.json`` below ``root``, and the embedded manifest of every
    ``*.oci.tar`` that has no manifest beside it."""
    found: Found = ([], [])
    root = Path(root)
    if not root.is_dir():
        raise HostImageError(f"{root}: expected a directory of builds")
    for path in sorted(root.rglob(f"*{MANIFEST_SUFFIX}")):
        archive = path.with_name(path.name[: -len(MANIFEST_SUFFIX)] + ARCHIVE_SUFFIX)
        try:
            size = archive.stat().st_size if archive.is_file() else None
            raw = path.read_bytes()
        except OSError as exc:
            found[1].append(SkippedManifest(str(path), f"cannot read: {exc.strerror}"))
            continue
        _entry_from_bytes(raw, str(path), size, found)
    for archive in sorted(root.rglob(f"*{ARCHIVE_SUFFIX}")):
        if not _sibling_manifest(archive).exists():
            _manifest_in_archive(archive, found)
    return found


def from_images_json(path: Path) -> Found:
    """The host images a pungi compose recorded (type ``ociarchive``) in images.json.

    ``path`` is images.json itself or a compose directory (``COMPOSE/compose/metadata/
    images.json``); image paths in it are relative to the ``compose/`` directory.
    """
    import productmd.images

    path = Path(path)
    if path.is_dir():
        candidates = [path / "compose" / "metadata" / "images.json", path / "metadata" /
                      "images.json"]
        path = next((c for c in candidates if c.exists()), candidates[0])
    images = productmd.images.Images()
    try:
        images.load(str(path))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise HostImageError(f"{path}: expected a productmd images.json: {exc}") from exc
    compose_dir = path.parent.parent
    found: Found = ([], [])
    for image in _oci_images(images):
        archive = compose_dir / image.path
        manifest = _sibling_manifest(archive)
        if manifest.exists():
            try:
                raw = manifest.read_bytes()
            except OSError as exc:
                found[1].append(SkippedManifest(str(manifest), f"cannot read: {exc.strerror}"))
                continue
            _entry_from_bytes(raw, str(manifest), image.size, found)
        elif archive.exists():
            _manifest_in_archive(archive, found)
        else:
            found[1].append(SkippedManifest(str(archive), "archive listed but missing"))
    return found


def _oci_images(images: Any) -> Iterable[Any]:
    for arches in images.images.values():
        for image_set in arches.values():
            for image in sorted(image_set, key=lambda i: i.path):
                if image.type == "ociarchive" and image.path.endswith(ARCHIVE_SUFFIX):
                    yield image


# --- Koji -------------------------------------------------------------------------------


def from_koji(session: Any, topurl: str, name: str, limit: int | None = None) -> Found:
    """The complete builds of package ``name`` on a Koji hub, newest ``limit`` of them.

    Real hub calls (koji-project/koji kojihub.py): getPackageID, listBuilds(packageID=,
    state=), listArchives(buildID=); files come from koji.PathInfo(topurl).imagebuild().
    """
    import koji

    package_id = session.getPackageID(name)
    if package_id is None:
        raise HostImageError(f"Koji has no package named {name!r}")
    builds = session.listBuilds(packageID=package_id, state=koji.BUILD_STATES["COMPLETE"])
    builds = sorted(builds, key=lambda b: b.get("build_id", 0))
    if limit:
        builds = builds[-limit:]
    found: Found = ([], [])
    for build in builds:
        _koji_build_manifests(session, topurl, build, found)
    return found


def from_koji_nvr(session: Any, topurl: str, nvr: str) -> Found:
    """The manifests (one per arch) of one Koji build."""
    build = session.getBuild(nvr)
    if not build:
        raise HostImageError(f"Koji has no build {nvr}")
    found: Found = ([], [])
    _koji_build_manifests(session, topurl, build, found)
    return found


def _koji_build_manifests(session: Any, topurl: str, build: dict, found: Found) -> None:
    import koji
    import requests

    images_url = koji.PathInfo(topdir=topurl).imagebuild(build)
    archives = session.listArchives(buildID=build["id"]) or []
    sizes = {a["filename"]: a.get("size") for a in archives}
    for archive in archives:
        filename = archive["filename"]
        if not filename.endswith(MANIFEST_SUFFIX):
            continue
        url = f"{images_url}/{filename}"
        try:
            response = requests.get(url, timeout=60)
            response.raise_for_status()
        except requests.RequestException as exc:
            found[1].append(SkippedManifest(url, f"download failed: {exc}"))
            continue
        archive_name = filename[: -len(MANIFEST_SUFFIX)] + ARCHIVE_SUFFIX
        _entry_from_bytes(response.content, url, sizes.get(archive_name), found)


def koji_session(profile: str | None, hub: str | None, topurl: str | None
                 ) -> tuple[Any, str]:
    """An anonymous Koji session and topurl from a koji profile or explicit URLs."""
    import koji

    if profile:
        config = koji.read_config(profile)
        hub = hub or config["server"]
        topurl = topurl or config["topurl"]
    if not hub or not topurl:
        raise HostImageError("Koji source: expected --koji PROFILE or --koji-hub and "
                             "--koji-topurl")
    return koji.ClientSession(hub), topurl

