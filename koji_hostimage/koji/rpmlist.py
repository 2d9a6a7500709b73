# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``rpmlist`` of an image build, and the check that kojihub will take it.

kojihub's ``importImageInternal`` (koji-project/koji kojihub/kojihub.py) records every
rpm of ``rpmlist`` as a component of the image archive: an entry with a ``location`` is
added with ``add_external_rpm`` (which needs name, version, release, epoch, arch,
payloadhash, size and buildtime, and refuses a payloadhash other than the one it has
for that NVRA), any other must be an rpm Koji has (``get_rpm(..., strict=True)``: "No
such rpm"). That import happens only after the whole compose and upload, so the builder
checks the same right after the compose (``mark_external_rpms``, ``unknown_rpms``,
``check_rpms_known``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import koji

from koji_hostimage.errors import KojiBuildError
from koji_hostimage.manifest import HostImageManifest


def rpmlist_from_manifest(manifest: HostImageManifest) -> list[dict[str, Any]]:
    """The image's packages as kojihub wants them for the image_listing.

    The fields are those of kojid's ``BuildRoot.getPackageList`` (builder/kojid), read
    from the composed tree's own rpmdb: payloadhash is the header's SIGMD5 in hex, as
    ``koji.hex_string`` gives it. Internal RPMs are matched by NVRA (kojihub ``get_rpm``);
    external ones are added with ``add_external_rpm``, which needs every field with its
    type and refuses ("hash changed for external rpm") a payloadhash that differs from
    the one it recorded for the same NVRA before.
    """
    return [
        {
            "name": pkg.name,
            "epoch": pkg.epoch,
            "version": pkg.version,
            "release": pkg.release,
            "arch": pkg.arch,
            "payloadhash": pkg.payloadhash or "",
            "size": pkg.size or 0,
            "buildtime": pkg.buildtime or 0,
        }
        for pkg in sorted(manifest.packages)
    ]


def nvra(rpm_info: Mapping[str, Any]) -> str:
    """``name-version-release.arch``: how kojid keys rpms (markExternalRPMs, pkgorigins)."""
    return "{name}-{version}-{release}.{arch}".format(**rpm_info)


# kojid's BuildRoot.markExternalRPMs raises these for an rpm the build tag's repo did not
# have (builder/kojid: "No origin for %s", "Unknown origin for %s: %s").
_NO_ORIGIN = re.compile(r"^(?:No origin for|Unknown origin for) (\S+?)(?::|$)")


def mark_external_rpms(
    mark: Callable[[list[dict[str, Any]]], None], rpmlist: list[dict[str, Any]]
) -> list[str]:
    """Run kojid's ``markExternalRPMs`` over ``rpmlist``; return the NVRAs it found no
    origin for, instead of stopping at the first. Those stay internal (no ``location``):
    kojihub imports them when it has them (``get_rpm``), which ``unknown_rpms`` checks.

    ``mark`` walks the list in order, gives each external rpm its ``location`` and raises
    at the first rpm that is in neither the build tag's repo nor its external repos (when
    the tag has external repos at all). So on such an error the rpm is noted and the walk
    goes on after it: the list of every unknown rpm costs one call per unknown rpm.
    """
    unknown: list[str] = []
    remaining = list(rpmlist)
    while remaining:
        try:
            mark(remaining)
            break
        except koji.GenericError as exc:
            match = _NO_ORIGIN.match(str(exc))
            keys = [nvra(info) for info in remaining]
            if match is None or match.group(1) not in keys:
                raise
            unknown.append(match.group(1))
            remaining = remaining[keys.index(match.group(1)) + 1 :]
    return unknown


def unknown_rpms(
    rpmlist: Sequence[Mapping[str, Any]],
    lookup: Callable[[list[dict[str, Any]]], list[Mapping[str, Any] | None]],
) -> tuple[list[str], list[str]]:
    """The internal rpms (no ``location``) kojihub's import would refuse, as two NVRA
    lists: Koji has no such rpm (``get_rpm(..., strict=True)``: "No such rpm"), and Koji
    has one with another payloadhash (kojid's ``mapInternalRPMs`` refuses that too).

    ``lookup`` answers ``getRPM`` for a list of ``{name, version, release, arch}`` (a
    multicall in kojid).
    """
    internal = [info for info in rpmlist if not info.get("location")]
    queries = [{key: info[key] for key in ("name", "version", "release", "arch")}
               for info in internal]
    missing, mismatched = [], []
    for info, found in zip(internal, lookup(queries), strict=True):
        if not found:
            missing.append(nvra(info))
        elif (not found.get("external_repo_id") and info.get("payloadhash")
              and found.get("payloadhash") != info["payloadhash"]):
            mismatched.append(nvra(info))
    return missing, mismatched


def check_rpms_known(missing: Sequence[str], mismatched: Sequence[str], build_tag: str) -> None:
    """Fail before anything is uploaded when kojihub would refuse the image's rpmlist at
    import (after the whole compose and upload)."""
    problems = []
    unknown = sorted(missing)
    if unknown:
        problems.append(
            f"{len(unknown)} package(s) Koji does not know: {', '.join(unknown)}. An image"
            " build may only contain RPMs built in or imported into Koji, or RPMs from the"
            f" external repos of build tag {build_tag}: import them (koji import), add"
            " their repo as an external repo of the tag, remove them from the treefile,"
            " or build with --scratch"
        )
    if mismatched:
        problems.append(
            f"{len(mismatched)} package(s) differ from the RPM Koji has under the same"
            f" name (another payloadhash): {', '.join(sorted(mismatched))}. Build from the"
            " RPMs Koji has (drop the repo that carries the rebuilt copies)"
        )
    if problems:
        raise KojiBuildError("; ".join(problems))
