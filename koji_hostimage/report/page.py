# SPDX-License-Identifier: GPL-2.0-or-later
"""The release-engineering view: many hostimage.json manifests -> one HTML page + JSON.

Sources (see ``koji_hostimage.report.sources``): a directory of builds, a pungi
compose's images.json, or a Koji hub. The page is self-contained (inline CSS and SVG, no
JavaScript) so it can be archived next to a compose or mailed as is.
"""

from __future__ import annotations

import datetime
import html
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koji_hostimage.errors import HostImageError
from koji_hostimage.fsutil import os_error_line, write_atomic
from koji_hostimage.manifest import SCHEMA_VERSION, HostImageManifest
from koji_hostimage.pkgdiff import PackageDiff, diff_packages

log = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = 1


@dataclass
class ManifestEntry:
    """One build and arch, with where its manifest came from."""

    manifest: HostImageManifest
    origin: str
    archive_size: int | None = None  # from the manifest's oci block or the archive file

    @property
    def key(self) -> tuple[str, str]:
        return (self.manifest.name, self.manifest.arch)


@dataclass
class SkippedManifest:
    origin: str
    reason: str


@dataclass
class BuildDiff:
    name: str
    arch: str
    old: HostImageManifest
    new: HostImageManifest
    packages: PackageDiff


@dataclass
class Report:
    entries: list[ManifestEntry]
    diffs: list[BuildDiff]
    skipped: list[SkippedManifest] = field(default_factory=list)


def build_report(
    entries: Iterable[ManifestEntry], skipped: Sequence[SkippedManifest] = ()
) -> Report:
    """Order the builds per (name, arch) by time and diff each with the one before."""
    ordered = sorted(entries, key=_build_order)
    unique = _drop_duplicates(ordered)
    diffs = []
    previous: dict[tuple[str, str], ManifestEntry] = {}
    for entry in unique:
        before = previous.get(entry.key)
        if before is not None:
            diffs.append(
                BuildDiff(
                    name=entry.manifest.name,
                    arch=entry.manifest.arch,
                    old=before.manifest,
                    new=entry.manifest,
                    packages=diff_packages(before.manifest.packages, entry.manifest.packages),
                )
            )
        previous[entry.key] = entry
    return Report(entries=unique, diffs=diffs, skipped=list(skipped))


def _build_order(entry: ManifestEntry) -> tuple:
    m = entry.manifest
    return (m.name, m.arch, m.timestamp, m.version, m.release)


def _drop_duplicates(entries: list[ManifestEntry]) -> list[ManifestEntry]:
    """The same build can be found twice (e.g. the copy in and beside an archive)."""
    seen: set[tuple[str, str, str, str]] = set()
    unique = []
    for entry in entries:
        m = entry.manifest
        marker = (m.name, m.arch, m.commit, m.release)
        if marker not in seen:
            seen.add(marker)
            unique.append(entry)
    return unique


# --- JSON -------------------------------------------------------------------------------


def report_to_dict(report: Report) -> dict[str, Any]:
    return {
        "report_schema_version": REPORT_SCHEMA_VERSION,
        "manifest_schema_version": SCHEMA_VERSION,
        "builds": [_row(entry) for entry in report.entries],
        "diffs": [
            {
                "name": d.name,
                "arch": d.arch,
                "from": {"nvr": d.old.nvr, "commit": d.old.commit},
                "to": {"nvr": d.new.nvr, "commit": d.new.commit},
                "packages": d.packages.to_dict(),
            }
            for d in report.diffs
        ],
        "skipped": [{"origin": s.origin, "reason": s.reason} for s in report.skipped],
    }


def _row(entry: ManifestEntry) -> dict[str, Any]:
    m = entry.manifest
    return {
        "name": m.name,
        "nvr": m.nvr,
        "version": m.version,
        "release": m.release,
        "arch": m.arch,
        "commit": m.commit,
        "date": _iso(m.timestamp),
        "timestamp": m.timestamp,
        "archive_size": entry.archive_size,
        "package_count": len(m.packages),
        "deltas": [
            {"from": d.from_commit, "to": d.to_commit, "bytes": d.bytes} for d in m.deltas
        ],
        "origin": entry.origin,
    }


def _iso(timestamp: int) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- HTML -------------------------------------------------------------------------------

_CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 90%; }
.added { color: #1a7f37; } .removed { color: #b3261e; }
.upgraded { color: #0b57d0; } .downgraded { color: #a15c00; }
.skipped { background: #fff4e5; }
svg text { font-size: 11px; }
"""


def render_html(report: Report, title: str = "Host-image builds") -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _builds_table(report.entries),
    ]
    for key, group in _groups(report.entries).items():
        parts.append(f"<h2>{_e(key[0])} ({_e(key[1])}): size and packages over time</h2>")
        parts.append(render_svg(group))
    parts.append(_diffs_section(report.diffs))
    if report.skipped:
        parts.append(_skipped_section(report.skipped))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _groups(entries: Sequence[ManifestEntry]) -> dict[tuple[str, str], list[ManifestEntry]]:
    groups: dict[tuple[str, str], list[ManifestEntry]] = {}
    for entry in entries:
        groups.setdefault(entry.key, []).append(entry)
    return groups


def _builds_table(entries: Sequence[ManifestEntry]) -> str:
    head = (
        "<tr><th>Build</th><th>Version</th><th>Arch</th><th>Commit</th><th>Date</th>"
        "<th>Archive size</th><th>Packages</th><th>Deltas</th></tr>"
    )
    rows = []
    for entry in entries:
        m = entry.manifest
        deltas = ", ".join(
            f"{'scratch' if d.from_commit is None else d.from_commit[:12]}: {_size(d.bytes)}"
            for d in m.deltas
        )
        rows.append(
            '<tr class="build">'
            f"<td>{_e(m.nvr)}</td><td>{_e(m.version)}</td><td>{_e(m.arch)}</td>"
            f'<td><code title="{_e(m.commit)}">{_e(m.commit[:12])}</code></td>'
            f"<td>{_e(_iso(m.timestamp))}</td>"
            f'<td class="num">{_size(entry.archive_size)}</td>'
            f'<td class="num">{len(m.packages)}</td><td>{_e(deltas) or "none"}</td></tr>'
        )
    return f'<table id="builds">{head}{"".join(rows)}</table>'


def _size(value: int | None) -> str:
    if value is None:
        return "unknown"
    if value < 1024:
        return f"{value} B"
    scaled = float(value)
    for unit in ("KiB", "MiB", "GiB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GiB":
            break
    return f"{scaled:.1f} {unit}"


def _diffs_section(diffs: Sequence[BuildDiff]) -> str:
    parts = ["<h2>Package changes between consecutive builds</h2>"]
    if not diffs:
        parts.append("<p>Only one build per name and arch: nothing to compare.</p>")
    for diff in diffs:
        parts.append(
            f'<h3 class="diff">{_e(diff.old.nvr)} &rarr; {_e(diff.new.nvr)} '
            f"({_e(diff.arch)})</h3>"
        )
        parts.append(_diff_list(diff.packages))
    return "\n".join(parts)


def _diff_list(diff: PackageDiff) -> str:
    if diff.empty:
        return "<p>No package changes.</p>"
    items = [f'<li class="added">added {_e(p.nevra)}</li>' for p in diff.added]
    items += [f'<li class="removed">removed {_e(p.nevra)}</li>' for p in diff.removed]
    for kind, changes in (("upgraded", diff.upgraded), ("downgraded", diff.downgraded)):
        items += [
            f'<li class="{kind}">{kind} {_e(c.name)}.{_e(c.arch)}: '
            f"{_e(c.old.evr)} &rarr; {_e(c.new.evr)}</li>"
            for c in changes
        ]
    return f"<ul>{''.join(items)}</ul>"


def _skipped_section(skipped: Sequence[SkippedManifest]) -> str:
    rows = "".join(
        f'<tr class="skipped"><td>{_e(s.origin)}</td><td>{_e(s.reason)}</td></tr>'
        for s in skipped
    )
    return (
        "<h2>Skipped manifests</h2>"
        f'<table id="skipped"><tr><th>Manifest</th><th>Why</th></tr>{rows}</table>'
    )


# --- SVG plot ---------------------------------------------------------------------------

_WIDTH, _HEIGHT, _MARGIN = 640, 260, 50


def render_svg(entries: Sequence[ManifestEntry]) -> str:
    """Archive size (left axis, MiB) and package count (right axis) per build."""
    sizes = [(e.archive_size or 0) / (1024 * 1024) for e in entries]
    counts = [float(len(e.manifest.packages)) for e in entries]
    labels = [e.manifest.version for e in entries]
    plot_w, plot_h = _WIDTH - 2 * _MARGIN, _HEIGHT - 2 * _MARGIN
    xs = [_MARGIN + (plot_w * i / max(len(entries) - 1, 1)) for i in range(len(entries))]
    parts = [
        f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" '
        f'height="{_HEIGHT}" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img">',
        "<title>Archive size and package count per build</title>",
        f'<rect x="{_MARGIN}" y="{_MARGIN}" width="{plot_w}" height="{plot_h}" '
        'fill="none" stroke="#999"/>',
        _series(xs, sizes, plot_h, "#0b57d0", "size"),
        _series(xs, counts, plot_h, "#1a7f37", "packages"),
        _axis_labels(sizes, counts, plot_w, plot_h),
    ]
    for x, label in zip(xs, labels, strict=True):
        parts.append(
            f'<text x="{x:.1f}" y="{_HEIGHT - _MARGIN + 15}" text-anchor="middle">'
            f"{_e(label)}</text>"
        )
    parts.append(
        f'<text x="{_MARGIN}" y="20" fill="#0b57d0">archive size (MiB)</text>'
        f'<text x="{_WIDTH - _MARGIN}" y="20" fill="#1a7f37" text-anchor="end">'
        "package count</text></svg>"
    )
    return "\n".join(parts)


def _scale(values: Sequence[float], plot_h: float) -> list[float]:
    top = max(values) if values and max(values) > 0 else 1.0
    return [_MARGIN + plot_h - (v / top) * plot_h for v in values]


def _series(xs: Sequence[float], values: Sequence[float], plot_h: float, colour: str,
            name: str) -> str:
    ys = _scale(values, plot_h)
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    dots = "".join(
        f'<circle class="{name}" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>'
        for x, y in zip(xs, ys, strict=True)
    )
    return (
        f'<polyline class="{name}" points="{points}" fill="none" stroke="{colour}" '
        f'stroke-width="2"/>{dots}'
    )


def _axis_labels(sizes: Sequence[float], counts: Sequence[float], plot_w: float,
                 plot_h: float) -> str:
    top_size = max(sizes) if sizes else 0
    top_count = max(counts) if counts else 0
    right = _MARGIN + plot_w
    return (
        f'<text x="{_MARGIN - 5}" y="{_MARGIN + 4}" text-anchor="end">{top_size:.1f}</text>'
        f'<text x="{_MARGIN - 5}" y="{_MARGIN + plot_h}" text-anchor="end">0</text>'
        f'<text x="{right + 5}" y="{_MARGIN + 4}">{top_count:.0f}</text>'
        f'<text x="{right + 5}" y="{_MARGIN + plot_h}">0</text>'
    )


# --- output -----------------------------------------------------------------------------


def write_report(report: Report, out_dir: Path, title: str = "Host-image builds"
                 ) -> tuple[Path, Path]:
    """Write report.html and report.json into ``out_dir`` (each atomically); a place
    that cannot take them is a HostImageError naming it."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise HostImageError(f"{out_dir}: report output: expected a directory, got a file")
    html_path, json_path = out_dir / "report.html", out_dir / "report.json"
    for path in (html_path, json_path):
        if path.is_dir() and not path.is_symlink():
            raise HostImageError(f"{path}: expected a file or nothing, got a directory")
    html_text = render_html(report, title).encode("utf-8")
    payload = json.dumps(report_to_dict(report), indent=2, sort_keys=True) + "\n"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(html_path, html_text)
        write_atomic(json_path, payload.encode("utf-8"))
    except OSError as exc:
        raise HostImageError(os_error_line(exc, "writing the report")) from None
    log.info(
        "report: %d builds, %d diffs, %d skipped -> %s",
        len(report.entries), len(report.diffs), len(report.skipped), html_path,
    )
    return html_path, json_path
