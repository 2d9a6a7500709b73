# SPDX-License-Identifier: GPL-2.0-or-later
"""Property tests for the hostimage.json parser (koji_hostimage/manifest.py) and the
report built from what it accepts: arbitrary JSON or bytes give a HostImageManifest or
ManifestError, never another exception; whatever is accepted renders into a report."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from koji_hostimage.errors import ManifestError
from koji_hostimage.manifest import HostImageManifest, parse_manifest_bytes
from koji_hostimage.report.page import ManifestEntry, build_report, render_html, report_to_dict

COMMIT = "a" * 64
VALID: dict[str, Any] = {
    "schema_version": 1, "name": "host", "version": "1", "release": "1", "arch": "x86_64",
    "ref": "example/x86_64/host", "commit": COMMIT, "parent": None,
    "content_checksum": "b" * 64, "timestamp": 1700000000, "inputhash": "c" * 64,
    "engine": "dnf", "object_count": 3, "object_bytes": 100, "source_date_epoch": None,
    "packages": [{"name": "greeter", "epoch": None, "version": "1.0", "release": "1",
                  "arch": "noarch", "nevra": "greeter-1.0-1.noarch", "payloadhash": "d" * 32,
                  "size": 10, "buildtime": 1600000000}],
    "deltas": [{"from": None, "to": COMMIT, "bytes": 5}],
    "source": {"scm_url": None, "revision": None, "treefile": "host.yaml"},
    "oci": {"archive": "host-1-1.x86_64.oci.tar", "archive_size": 2048,
            "manifest_digest": "sha256:1", "config_digest": "sha256:2",
            "content_layer_digest": "sha256:3"},
}

json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=False) | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=16)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into ``value`` (dict keys and list indexes)."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


PATHS = _paths(VALID)


@st.composite
def mutated(draw) -> Any:
    data = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        target = data
        try:
            for part in path[:-1]:
                target = target[part]
            if draw(st.booleans()) and isinstance(target, dict):
                target.pop(path[-1], None)
            else:
                target[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue
    return data


def _accepted(manifest: HostImageManifest) -> None:
    """What the parser accepts is a manifest a report can show."""
    assert isinstance(manifest.name, str) and isinstance(manifest.timestamp, int)
    for package in manifest.packages:
        assert isinstance(package.name, str) and isinstance(package.version, str)
        assert package.epoch is None or isinstance(package.epoch, int)
    report = build_report([ManifestEntry(manifest, "m.json",
                                         manifest.oci.archive_size if manifest.oci else None),
                           ManifestEntry(manifest, "n.json", None)])
    render_html(report)
    json.dumps(report_to_dict(report))
    json.dumps(manifest.to_dict())


def _parse(data: Any) -> None:
    try:
        manifest = HostImageManifest.from_dict(data, "m.json")
    except ManifestError as exc:
        assert str(exc).startswith("m.json")
        return
    _accepted(manifest)


@settings(max_examples=250, deadline=None)
@given(mutated())
def test_a_mutated_manifest_parses_or_is_a_manifest_error(data):
    _parse(data)


@settings(max_examples=80, deadline=None)
@given(json_values)
def test_any_json_parses_or_is_a_manifest_error(data):
    _parse(data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200) | mutated().map(lambda d: json.dumps(d).encode()))
def test_any_bytes_parse_or_are_a_manifest_error(raw):
    try:
        manifest = parse_manifest_bytes(raw, "m.json")
    except ManifestError as exc:
        assert str(exc).startswith("m.json") and "\n" not in str(exc)
        return
    _accepted(manifest)


def test_the_valid_example_round_trips():
    manifest = HostImageManifest.from_dict(VALID)
    again = parse_manifest_bytes(manifest.to_json().encode(), "again")
    assert again == manifest
