# SPDX-License-Identifier: GPL-2.0-or-later
"""Earlier builds of the same name: what a new one continues from, and delta sources.

Which builds (the ``delta_from`` option or the builder's default count), where Koji
serves their archives, and fetching them to the builder. The Koji calls are the hub's
``listTagged``, ``getBuild`` and ``listArchives`` (koji-project/koji kojihub/kojihub.py
``list_tagged``, ``get_build``, ``list_archives``); archive URLs follow
``koji.PathInfo.imagebuild``, where ``import_archive_internal`` puts image files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import koji

from koji_hostimage.errors import HostImageError, KojiBuildError
from koji_hostimage.fsutil import atomic_output

from .options import MAX_DELTA_COUNT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeltaPlan:
    """Which earlier builds to make static deltas from: the latest ``count`` tagged ones,
    or exactly the builds named in ``nvrs``."""

    count: int = 0
    nvrs: tuple[str, ...] = ()


def delta_plan(delta_from: Any, default_count: int) -> DeltaPlan:
    """Read the ``delta_from`` option (see koji_hostimage.koji.options) or the config default."""
    if delta_from is None:
        return DeltaPlan(count=default_count)
    if delta_from == "none":
        return DeltaPlan()
    if isinstance(delta_from, bool):
        raise KojiBuildError(f"delta_from: expected 'none', a count or NVRs, got {delta_from!r}")
    if isinstance(delta_from, int):
        if not 0 <= delta_from <= MAX_DELTA_COUNT:
            raise KojiBuildError(
                f"delta_from: expected a count from 0 to {MAX_DELTA_COUNT}, got {delta_from}"
            )
        return DeltaPlan(count=delta_from)
    if isinstance(delta_from, list) and all(isinstance(n, str) for n in delta_from):
        return DeltaPlan(nvrs=tuple(dict.fromkeys(delta_from)))
    raise KojiBuildError(f"delta_from: expected 'none', a count or NVRs, got {delta_from!r}")


def pick_previous_builds(
    tagged: Iterable[Mapping[str, Any]], name: str, count: int, exclude_nvr: str | None = None
) -> list[Mapping[str, Any]]:
    """The latest ``count`` complete builds of ``name`` from ``listTagged`` output.

    Newest first, by build id (listTagged's own order follows tagging events, which an
    untag and retag can reorder). The build being made is never its own delta source.
    """
    complete = koji.BUILD_STATES["COMPLETE"]
    candidates = [
        build
        for build in tagged
        if build.get("name") == name
        and build.get("nvr") != exclude_nvr
        and build.get("state", complete) == complete
    ]
    candidates.sort(key=lambda b: b.get("build_id", b.get("id", 0)), reverse=True)
    unique: dict[Any, Mapping[str, Any]] = {}
    for build in candidates:
        unique.setdefault(build.get("build_id", build.get("id")), build)
    return list(unique.values())[:count]


def pick_archive(archives: Iterable[Mapping[str, Any]], arch: str) -> Mapping[str, Any] | None:
    """The OCI archive for ``arch`` among a build's archives (``listArchives`` output)."""
    suffix = f".{arch}.oci.tar"
    for archive in archives:
        if archive.get("filename", "").endswith(suffix):
            return archive
    return None


def previous_archive_url(topurl: str, build: Mapping[str, Any], filename: str) -> str:
    """Where Koji's web server serves an image file of ``build`` (pathinfo.imagebuild)."""
    return f"{koji.PathInfo(topdir=topurl).imagebuild(build)}/{filename}"


def download(url: str, dest: Path, timeout: float = 600.0) -> Path:
    """Fetch ``url`` into ``dest`` through a temporary file (nothing half-written)."""
    import requests  # deferred: only a builder fetching previous builds needs it

    dest = Path(dest)
    try:
        with atomic_output(dest) as tmp, open(tmp, "wb") as out:
            with requests.get(url, stream=True, timeout=timeout) as response:
                if response.status_code != 200:
                    raise KojiBuildError(
                        f"{url}: expected HTTP 200, got {response.status_code} {response.reason}"
                    )
                for chunk in response.iter_content(chunk_size=1 << 20):
                    out.write(chunk)
    except requests.RequestException as exc:
        raise KojiBuildError(f"{url}: download failed: {exc}") from exc
    return dest




@dataclass
class PreviousBuilds:
    """What a new build takes from earlier ones, as local archive files."""

    seed: Path | None  # the latest tagged build: the compose continues from its commit
    deltas: list[Path]  # static delta sources (``delta_from``)


def previous_builds(
    session: Any,
    plan: DeltaPlan,
    *,
    name: str,
    dest_tag: int | str,
    arch: str,
    exclude_nvr: str,
    dest: Path,
    topurl: str | None,
    topdir: str | None,
    timeout: float = 600.0,
) -> PreviousBuilds:
    """The ``arch`` archives of the latest tagged build (the seed) and of the builds
    ``plan`` names (the delta sources), each downloaded once.

    ``session`` is the task's hub session. Builds named by NVR must all be there (the user
    asked for them); of the latest tagged ones, a pruned or archive-less build is skipped
    with a warning, so an old build cannot fail a new one. Archives come from ``topurl``
    (Koji's web server) when the builder has one, else from ``topdir`` on its own disk.
    """
    tagged = session.listTagged(dest_tag, package=name)
    latest = pick_previous_builds(tagged, name, max(plan.count, 1), exclude_nvr)
    if plan.nvrs:
        delta_builds = [session.getBuild(nvr, strict=True) for nvr in plan.nvrs]
    else:
        delta_builds = latest[: plan.count]
    dest.mkdir(parents=True, exist_ok=True)
    fetched: dict[Any, Path | None] = {}

    def fetch(build: Mapping[str, Any], strict: bool) -> Path | None:
        key = build.get("id")
        if key not in fetched:
            try:
                archives = session.listArchives(buildID=build["id"], type="image")
                fetched[key] = _archive_file(build, archives, arch, dest, topurl, topdir,
                                             timeout)
            except HostImageError as exc:
                if strict:
                    raise
                log.warning("not using %s: %s", build.get("nvr"), exc)
                fetched[key] = None
        return fetched[key]

    deltas = [fetch(build, strict=bool(plan.nvrs)) for build in delta_builds]
    seed = fetch(latest[0], strict=False) if latest else None
    return PreviousBuilds(seed=seed, deltas=[path for path in deltas if path is not None])


def latest_version(session: Any, dest_tag: int | str, name: str) -> str | None:
    """The version of the latest complete build of ``name`` tagged in ``dest_tag``."""
    builds = pick_previous_builds(session.listTagged(dest_tag, package=name), name, 1)
    return str(builds[0]["version"]) if builds else None


def _archive_file(
    build: Mapping[str, Any],
    archives: Iterable[Mapping[str, Any]],
    arch: str,
    dest: Path,
    topurl: str | None,
    topdir: str | None,
    timeout: float,
) -> Path:
    archives = list(archives)
    archive = pick_archive(archives, arch)
    if archive is None:
        raise KojiBuildError(
            f"build {build.get('nvr')}: expected an archive ending .{arch}.oci.tar,"
            f" got {', '.join(a.get('filename', '?') for a in archives) or 'none'}"
        )
    filename = archive["filename"]
    if topurl:
        url = previous_archive_url(topurl, build, filename)
        log.info("fetching %s for deltas", url)
        return download(url, dest / filename, timeout)
    local = Path(koji.PathInfo(topdir=topdir).imagebuild(build)) / filename
    if not local.is_file():
        raise KojiBuildError(f"{local}: expected the archive, got nothing")
    return local
