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
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: not valid JSON: {exc}") from exc
        return _parse(data, str(path))


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "version": str,
    "release": str,
    "arch": str,
    "ref": str,
    "commit": str,
    "timestamp": int,
    "inputhash": str,
    "engine": str,
    "packages": list,
    "object_count": int,
    "object_bytes": int,
}


def _expect(origin: str, key: str, value: Any, kind: type | tuple[type, ...]) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ManifestError(f"{origin}: {key}: expected {names}, got {type(value).__name__}")


def _parse(data: Any, origin: str) -> HostImageManifest:
    if not isinstance(data, dict):
        raise ManifestError(f"{origin}: expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ManifestError(f"{origin}: schema_version: expected an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ManifestError(
            f"{origin}: schema_version: {version} is newer than this tool understands "
            f"(up to {SCHEMA_VERSION}); upgrade koji-hostimage"
        )
    for key, kind in _REQUIRED.items():
        if key not in data:
            raise ManifestError(f"{origin}: {key}: missing (required)")
        _expect(origin, key, data[key], kind)
    packages = []
    for index, entry in enumerate(data["packages"]):
        where = f"packages[{index}]"
        _expect(origin, where, entry, dict)
        try:
            packages.append(
                Package(
                    name=entry["name"],
                    epoch=entry.get("epoch"),
                    version=entry["version"],
                    release=entry["release"],
                    arch=entry["arch"],
                    payloadhash=entry.get("payloadhash"),
                    size=entry.get("size"),
                    buildtime=entry.get("buildtime"),
                )
            )
        except KeyError as exc:
            raise ManifestError(f"{origin}: {where}.{exc.args[0]}: missing (required)") from None
    deltas = []
    for index, entry in enumerate(data.get("deltas") or []):
        _expect(origin, f"deltas[{index}]", entry, dict)
        to_commit = entry.get("to", data["commit"])
        deltas.append(Delta(entry.get("from"), to_commit, entry.get("bytes", 0)))
    source = data.get("source") or {}
    _expect(origin, "source", source, dict)
    oci = data.get("oci")
    oci_info = None
    if oci is not None:
        _expect(origin, "oci", oci, dict)
        try:
            oci_info = OciInfo(**{k: oci[k] for k in OciInfo.__dataclass_fields__})
        except KeyError as exc:
            raise ManifestError(f"{origin}: oci.{exc.args[0]}: missing (required)") from None
    return HostImageManifest(
        name=data["name"],
        version=data["version"],
        release=data["release"],
        arch=data["arch"],
        ref=data["ref"],
        commit=data["commit"],
        parent=data.get("parent"),
        content_checksum=data.get("content_checksum"),
        timestamp=data["timestamp"],
        inputhash=data["inputhash"],
        engine=data["engine"],
        packages=packages,
        object_count=data["object_count"],
        object_bytes=data["object_bytes"],
        deltas=deltas,
        source=Source(**{k: source.get(k) for k in Source.__dataclass_fields__}),
        oci=oci_info,
        schema_version=version,
    )

