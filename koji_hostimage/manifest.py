# SPDX-License-Identifier: GPL-2.0-or-later
"""hostimage.json: the build manifest (one per build and arch).

Dashboards read this file, so its shape is a contract: fields are only ever added
within a schema version; renaming or removing one bumps ``SCHEMA_VERSION``. The field
reference is docs/hostimage-json.md.

Two copies exist per build: one inside the archive (``srv/hostimage.json``), written
before the archive exists, so its ``oci`` block is null; and one beside the archive,
identical but with ``oci`` filled in (the archive cannot contain its own digest).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from koji_hostimage.errors import ManifestError
from koji_hostimage.fsutil import write_atomic

SCHEMA_VERSION = 1
MANIFEST_NAME = "hostimage.json"


@dataclass(frozen=True, order=True)
class Package:
    """One RPM in the composed tree.

    ``payloadhash`` (the header's SIGMD5, hex), ``size`` and ``buildtime`` are what
    kojid's ``BuildRoot.getPackageList`` reads from an rpmdb and kojihub records for an
    image's rpms; None when the list came from commit metadata that lacks them. They do
    not take part in comparing or sorting: a package is its NEVRA.
    """

    name: str
    epoch: int | None
    version: str
    release: str
    arch: str
    payloadhash: str | None = field(default=None, compare=False)
    size: int | None = field(default=None, compare=False)
    buildtime: int | None = field(default=None, compare=False)

    @property
    def evr(self) -> str:
        epoch = f"{self.epoch}:" if self.epoch else ""
        return f"{epoch}{self.version}-{self.release}"

    @property
    def nevra(self) -> str:
        epoch = f"{self.epoch}:" if self.epoch else ""
        return f"{self.name}-{epoch}{self.version}-{self.release}.{self.arch}"


@dataclass
class Delta:
    """A static delta shipped in the export repo. ``from_commit`` None = from scratch."""

    from_commit: str | None
    to_commit: str
    bytes: int


@dataclass
class OciInfo:
    archive: str  # file name of the .oci.tar
    archive_size: int
    manifest_digest: str  # sha256:... of the OCI image manifest
    config_digest: str
    content_layer_digest: str


@dataclass
class Source:
    scm_url: str | None = None
    revision: str | None = None
    treefile: str | None = None


@dataclass
class HostImageManifest:
    name: str
    version: str
    release: str
    arch: str
    ref: str
    commit: str
    parent: str | None
    content_checksum: str | None
    timestamp: int  # commit timestamp, seconds since the epoch (UTC)
    inputhash: str
    engine: str
    packages: list[Package]
    object_count: int
    object_bytes: int
    deltas: list[Delta] = field(default_factory=list)
    source: Source = field(default_factory=Source)
    oci: OciInfo | None = None
    schema_version: int = SCHEMA_VERSION
    # SOURCE_DATE_EPOCH the build ran with (reproducible builds), None when unset
    source_date_epoch: int | None = None
    # Wall seconds per build stage ("compose": 12.3, ...); only in the copy beside the
    # archive (the archive's own copy is null: its bytes must not vary between builds)
    stage_seconds: dict[str, float] | None = None

    @property
    def nvr(self) -> str:
        return f"{self.name}-{self.version}-{self.release}"

    @property
    def archive_name(self) -> str:
        return f"{self.nvr}.{self.arch}.oci.tar"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["packages"] = [
            dict(asdict(p), nevra=p.nevra) for p in sorted(self.packages)
        ]
        data["deltas"] = [
            {"from": d.from_commit, "to": d.to_commit, "bytes": d.bytes} for d in self.deltas
        ]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def write(self, path: Path) -> None:
        write_atomic(path, self.to_json().encode("utf-8"))

    @classmethod
    def from_dict(cls, data: Any, origin: str = "hostimage.json") -> HostImageManifest:
        return _parse(data, origin)

    @classmethod
    def load(cls, path: Path) -> HostImageManifest:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read: {exc.strerror}") from exc
        return parse_manifest_bytes(raw, str(path))


# The largest manifest read (a real one is well under 1 MiB: a line per package) and the
# deepest JSON nesting (a manifest has 3 levels): beyond them a file is not a manifest.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 32
# Timestamps are seconds since the epoch between 1970 and the end of year 9999.
MAX_TIMESTAMP = 253402300799


def parse_manifest_bytes(raw: bytes, origin: str) -> HostImageManifest:
    """A manifest from the bytes of a hostimage.json; ManifestError (one line naming
    ``origin``) for anything else: not UTF-8, not JSON, too deep, or off the schema."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{origin}: {len(raw)} bytes: expected a manifest of at most "
                            f"{MAX_MANIFEST_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{origin}: byte offset {exc.start}: expected UTF-8 text") from None
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ManifestError(f"{origin}: JSON nested {depth} deep: expected at most "
                            f"{MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{origin}: not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"{origin}: not valid JSON: {exc}") from None
    return _parse(data, origin)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name}: expected a JSON number, got a non-standard constant")


def _json_depth(text: str) -> int:
    """The deepest nesting of brackets outside strings (checked before json.loads, which
    would recurse that deep)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return type(value).__name__


def _expect(origin: str, key: str, value: Any, kind: type | tuple[type, ...]) -> None:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ManifestError(f"{origin}: {key}: expected {_kind_name(kind)}, got "
                            f"{_type_name(value)}")


def _get(origin: str, obj: dict[str, Any], key: str, kind: type | tuple[type, ...],
         where: str = "", required: bool = True, default: Any = None) -> Any:
    """``obj[key]`` checked against ``kind`` (None allowed when ``kind`` says so)."""
    name = f"{where}{key}"
    if key not in obj:
        if required:
            raise ManifestError(f"{origin}: {name}: missing (required)")
        return default
    value = obj[key]
    _expect(origin, name, value, kind)
    return value


def _count(origin: str, obj: dict[str, Any], key: str, where: str = "",
           required: bool = True, nullable: bool = False, maximum: int | None = None
           ) -> int | None:
    """A non-negative integer (seconds, bytes, a count), at most ``maximum``."""
    kind: type | tuple[type, ...] = (int, type(None)) if nullable else int
    value = _get(origin, obj, key, kind, where, required)
    if value is None:
        return None
    top = maximum if maximum is not None else 2**63 - 1
    if not 0 <= value <= top:
        raise ManifestError(f"{origin}: {where}{key}: expected an integer from 0 to {top}, "
                            f"got {value}")
    return int(value)


_OPTIONAL_STR = (str, type(None))


def _parse(data: Any, origin: str) -> HostImageManifest:
    if not isinstance(data, dict):
        raise ManifestError(f"{origin}: expected a JSON object, got {_type_name(data)}")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ManifestError(f"{origin}: schema_version: expected a positive integer, got "
                            f"{version!r}"[:200])
    if version > SCHEMA_VERSION:
        raise ManifestError(
            f"{origin}: schema_version: {version} is newer than this tool understands "
            f"(up to {SCHEMA_VERSION}); upgrade koji-hostimage"
        )
    text = {key: _get(origin, data, key, str) for key in
            ("name", "version", "release", "arch", "ref", "commit", "inputhash", "engine")}
    packages = [_package(origin, entry, index) for index, entry in
                enumerate(_get(origin, data, "packages", list))]
    deltas = [_delta(origin, entry, index, text["commit"]) for index, entry in
              enumerate(_get(origin, data, "deltas", (list, type(None)), required=False) or [])]
    source = _get(origin, data, "source", (dict, type(None)), required=False) or {}
    return HostImageManifest(
        **text,
        parent=_get(origin, data, "parent", _OPTIONAL_STR, required=False),
        content_checksum=_get(origin, data, "content_checksum", _OPTIONAL_STR,
                              required=False),
        timestamp=_count(origin, data, "timestamp", maximum=MAX_TIMESTAMP),
        packages=packages,
        object_count=_count(origin, data, "object_count"),
        object_bytes=_count(origin, data, "object_bytes"),
        deltas=deltas,
        source=Source(**{k: _get(origin, source, k, _OPTIONAL_STR, "source.", False)
                         for k in Source.__dataclass_fields__}),
        oci=_oci(origin, _get(origin, data, "oci", (dict, type(None)), required=False)),
        schema_version=version,
        source_date_epoch=_count(origin, data, "source_date_epoch", required=False,
                                 nullable=True, maximum=MAX_TIMESTAMP),
        stage_seconds=_stage_seconds(origin, _get(origin, data, "stage_seconds",
                                                  (dict, type(None)), required=False)),
    )


def _stage_seconds(origin: str, stages: dict[str, Any] | None) -> dict[str, float] | None:
    """Stage name -> wall seconds: a finite number >= 0 each."""
    if stages is None:
        return None
    result: dict[str, float] = {}
    for name, value in stages.items():
        where = f"stage_seconds.{name}"
        _expect(origin, where, value, (int, float))
        if not math.isfinite(value) or value < 0:
            raise ManifestError(f"{origin}: {where}: expected a number >= 0, got {value!r}")
        result[name] = float(value)
    return result


def _package(origin: str, entry: Any, index: int) -> Package:
    where = f"packages[{index}]."
    _expect(origin, where[:-1], entry, dict)
    _get(origin, entry, "nevra", str, where, required=False)  # derived; ignored on read
    return Package(
        name=_get(origin, entry, "name", str, where),
        epoch=_count(origin, entry, "epoch", where, required=False, nullable=True),
        version=_get(origin, entry, "version", str, where),
        release=_get(origin, entry, "release", str, where),
        arch=_get(origin, entry, "arch", str, where),
        payloadhash=_get(origin, entry, "payloadhash", _OPTIONAL_STR, where, False),
        size=_count(origin, entry, "size", where, required=False, nullable=True),
        buildtime=_count(origin, entry, "buildtime", where, required=False, nullable=True,
                         maximum=MAX_TIMESTAMP),
    )


def _delta(origin: str, entry: Any, index: int, commit: str) -> Delta:
    where = f"deltas[{index}]."
    _expect(origin, where[:-1], entry, dict)
    return Delta(
        from_commit=_get(origin, entry, "from", _OPTIONAL_STR, where, required=False),
        to_commit=_get(origin, entry, "to", str, where, required=False, default=commit),
        bytes=_count(origin, entry, "bytes", where),
    )


def _oci(origin: str, oci: dict[str, Any] | None) -> OciInfo | None:
    if oci is None:
        return None
    return OciInfo(
        archive=_get(origin, oci, "archive", str, "oci."),
        archive_size=_count(origin, oci, "archive_size", "oci."),
        manifest_digest=_get(origin, oci, "manifest_digest", str, "oci."),
        config_digest=_get(origin, oci, "config_digest", str, "oci."),
        content_layer_digest=_get(origin, oci, "content_layer_digest", str, "oci."),
    )
