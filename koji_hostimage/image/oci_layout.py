# SPDX-License-Identifier: GPL-2.0-or-later
"""The OCI image layout's vocabulary, shared by the archive writer and the reader.

Media types (OCI and their Docker twins), the ``oci-layout`` file, the ref-name
annotation, Koji -> OCI architecture names, the image labels of DESIGN section 4 (and the
ones that must never be set), the leading bytes of compressed layers and the sha256 digest
of a blob. ``oci_writer`` writes archives and ``oci_reader`` reads them; both import these
from here.
"""

from __future__ import annotations

import hashlib
import re
import time

from koji_hostimage.errors import HostImageError

LABEL_PREFIX = "io.koji-hostimage."
LABEL_OSTREE_REF = LABEL_PREFIX + "ostree.ref"
# Labels that mark an ostree-native (bootable) container image. Ours is a repo served by a
# web server, so setting them would make bootc / rpm-ostree treat it as something it is not.
FORBIDDEN_LABELS = ("ostree.bootable", "containers.bootc")

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
# Docker media types of base-image layers map to their OCI twins (same bytes).
LAYER_MEDIA_MAP = {DOCKER_LAYER_GZIP: MEDIA_LAYER_GZIP, DOCKER_LAYER: MEDIA_LAYER}
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'

# Koji arch -> OCI (GOARCH) architecture.
KOJI_TO_OCI_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}

# Leading bytes of compressed layers whose media type claims a plain tar.
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class OciSpecError(HostImageError):
    """The image description given to the writer is not usable (arch, labels...)."""


# ---------------------------------------------------------------------------- labels, arch


def koji_arch_to_oci(arch: str) -> str:
    """The OCI architecture (GOARCH, image-spec config.md) for a Koji/RPM arch name;
    OciSpecError for anything else. Covers every arch Koji builds for: 32-bit x86
    (i386/i586/i686) is ``386``, 32-bit ARM (armhfp, armv7hl, armv7l) is ``arm``, loongarch64
    is ``loong64``; big-endian ppc64, s390x and riscv64 keep their names."""
    extra = {"i386": "386", "i586": "386", "i686": "386", "armhfp": "arm",
             "armv7hl": "arm", "armv7l": "arm", "ppc64": "ppc64", "ppc64le": "ppc64le",
             "s390x": "s390x", "riscv64": "riscv64", "loongarch64": "loong64",
             "mips64el": "mips64le"}
    known = {**extra, **KOJI_TO_OCI_ARCH}
    try:
        return known[arch]
    except KeyError:
        raise OciSpecError(
            f"unknown Koji arch {arch!r}: expected one of {', '.join(sorted(known))}"
        ) from None


_REPO_INVALID = re.compile(r"[^a-z0-9._-]+")
_TAG_INVALID = re.compile(r"[^A-Za-z0-9_.-]+")


def image_ref_name(name: str, version: str, release: str) -> str:
    """The ``org.opencontainers.image.ref.name`` of a build: ``NAME:VERSION-RELEASE``.

    ``podman load`` names an oci-archive after this annotation and adds ``localhost/``,
    so the image loads as ``localhost/NAME:VERSION-RELEASE`` (a ref.name without ``:``
    would load as ``localhost/REF:latest``). The OCI layout spec allows ``:`` in it. The
    name is lower-cased and the parts are reduced to what a container reference takes
    (repository ``[a-z0-9._-]``, tag ``[A-Za-z0-9_.-]``, at most 128 characters), so the
    load never fails on a name Koji accepts.
    """
    repository = _REPO_INVALID.sub("-", name.lower()).strip("._-") or "hostimage"
    tag = _TAG_INVALID.sub("_", f"{version}-{release}").lstrip(".-")[:128] or "latest"
    return f"{repository}:{tag}"


def rfc3339(epoch: int) -> str:
    """``2026-01-01T00:00:00Z`` for an epoch timestamp (UTC, whole seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def image_labels(
    commit: str,
    version: str,
    ref: str,
    created: int,
    source_url: str | None = None,
    revision: str | None = None,
) -> dict[str, str]:
    """The image labels of DESIGN section 4. Source labels are left out when unknown."""
    labels = {
        "com.coreos.ostree-commit": commit,
        "version": version,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.created": rfc3339(created),
        LABEL_OSTREE_REF: ref,
    }
    if revision:
        labels["org.opencontainers.image.revision"] = revision
    if source_url:
        labels["org.opencontainers.image.source"] = source_url
    return labels


def check_labels(labels: dict[str, str]) -> None:
    for key in FORBIDDEN_LABELS:
        if key in labels:
            raise OciSpecError(
                f"labels: {key}: must not be set (it marks an ostree-native bootable image; "
                "this archive is an OSTree repo served over HTTP)"
            )
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise OciSpecError(f"labels: {key!r}: expected a string value, got {value!r}")


# ---------------------------------------------------------------------------- digests


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
