# SPDX-License-Identifier: GPL-2.0-or-later
"""The package list of a composed tree: from its rpmdb, and as commit metadata.

An OSTree-shaped tree keeps its rpmdb at ``/usr/share/rpm`` (rpm-ostree moves it there;
the dnf engine installs it there directly). ``packages_in_tree`` queries it with
``rpm --root ROOT --dbpath /usr/share/rpm -qa``; ``packages_in_commit`` checks out only
that directory of a commit first.

rpm-ostree also stores the list in the commit metadata as ``rpmostree.rpmdb.pkglist``, of
GVariant type ``a(sssss)``: (name, epoch, version, release, arch), the epoch as a string
("0" when unset) and the list sorted (rpmostree-rpm-util.cxx,
``rpmostree_create_rpmdb_pkglist_variant`` / ``rpmostree_variant_pkgs_from_sack``).
``pkglist_metadata`` encodes it for ``OSTreeRepo.commit``; ``packages_from_pkglist`` reads
it back from ``OSTreeRepo.metadata``. Like libdnf, we do not tell an unset epoch from 0:
both are ``Package.epoch = None``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from koji_hostimage.errors import HostImageError
from koji_hostimage.manifest import Package
from koji_hostimage.ostree.gvariant import GVariantLiteral, quote_gvariant_string
from koji_hostimage.ostree.repo import OSTreeRepo
from koji_hostimage.runner import CommandRunner, HostRunner, run_checked

RPMDB_DIR = "usr/share/rpm"  # relative to the tree root
PKGLIST_KEY = "rpmostree.rpmdb.pkglist"
PKGLIST_TYPE = "a(sssss)"
# kojid's BuildRoot.getPackageList reads these header tags too (koji.get_header_fields:
# SIGMD5 as hex, SIZE, BUILDTIME); kojihub's add_external_rpm needs them.
_QUERY_FORMAT = (
    "%{NAME}\\t%{EPOCH}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}"
    "\\t%{SIGMD5}\\t%{SIZE}\\t%{BUILDTIME}\\n"
)


class RpmdbError(HostImageError):
    """A tree's rpmdb or a commit's package list could not be read."""


def packages_in_tree(root: Path, runner: CommandRunner | None = None) -> list[Package]:
    """Every package in the rpmdb under ``root/usr/share/rpm``, sorted."""
    runner = runner or HostRunner()
    if not (Path(root) / RPMDB_DIR).is_dir():
        raise RpmdbError(f"{root}: no rpmdb at /{RPMDB_DIR}")
    output = run_checked(
        [
            "rpm",
            "--root",
            runner.inner_path(Path(root)),
            "--dbpath",
            f"/{RPMDB_DIR}",
            "-qa",
            "--queryformat",
            _QUERY_FORMAT,
        ],
        what="rpm -qa",
        runner=runner,
    )
    packages = []
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) != 8:
            continue  # rpm warnings share the output stream
        name, epoch, version, release, arch, sigmd5, size, buildtime = fields
        if name == "gpg-pubkey":
            continue  # imported signing keys are pseudo-packages, not content
        packages.append(Package(name, _epoch(epoch), version, release, arch,
                                payloadhash=_optional(sigmd5), size=_number(size),
                                buildtime=_number(buildtime)))
    return sort_packages(packages)


def packages_in_commit(
    repo: OSTreeRepo | Path, commit: str, workdir: Path | None = None
) -> list[Package]:
    """The packages of ``commit``'s rpmdb (checks out only /usr/share/rpm)."""
    repo = repo if isinstance(repo, OSTreeRepo) else OSTreeRepo(Path(repo))
    with tempfile.TemporaryDirectory(prefix="rpmdb-", dir=workdir) as tmp:
        root = Path(tmp) / "root"
        (root / RPMDB_DIR).parent.mkdir(parents=True)
        repo.checkout(commit, root / RPMDB_DIR, subpath=f"/{RPMDB_DIR}")
        return packages_in_tree(root, repo.runner)


def sort_packages(packages: Iterable[Package]) -> list[Package]:
    """Sorted by name, then arch, then EVR text: a stable order for lists and diffs."""
    return sorted(packages, key=lambda p: (p.name, p.arch, p.evr))


def pkglist_metadata(packages: Iterable[Package]) -> GVariantLiteral:
    """The ``rpmostree.rpmdb.pkglist`` value (``a(sssss)``) for ``OSTreeRepo.commit``."""
    entries = [
        "("
        + ", ".join(
            quote_gvariant_string(field)
            for field in (p.name, str(p.epoch or 0), p.version, p.release, p.arch)
        )
        + ")"
        for p in sort_packages(packages)
    ]
    return GVariantLiteral(f"@{PKGLIST_TYPE} [" + ", ".join(entries) + "]")


def packages_from_pkglist(value: Any, origin: str = PKGLIST_KEY) -> list[Package]:
    """Read a parsed ``rpmostree.rpmdb.pkglist`` back into ``Package`` records."""
    if not isinstance(value, list):
        raise RpmdbError(f"{origin}: expected a list of (sssss), got {type(value).__name__}")
    packages = []
    for index, entry in enumerate(value):
        if (
            not isinstance(entry, tuple)
            or len(entry) != 5
            or not all(isinstance(f, str) for f in entry)
        ):
            raise RpmdbError(f"{origin}[{index}]: expected (name, epoch, version, release, "
                             f"arch) strings, got {entry!r}")
        name, epoch, version, release, arch = entry
        packages.append(Package(name, _epoch(epoch), version, release, arch))
    return sort_packages(packages)


def packages_from_commit_metadata(repo: OSTreeRepo, commit: str) -> list[Package] | None:
    """The commit's stored package list, or None when it has none."""
    value = repo.metadata(commit).get(PKGLIST_KEY)
    if value is None:
        return None
    return packages_from_pkglist(value, f"{commit}: {PKGLIST_KEY}")


def _optional(text: str) -> str | None:
    return None if text in ("", "(none)") else text


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _epoch(text: str) -> int | None:
    if text in ("", "(none)"):
        return None
    try:
        return int(text) or None
    except ValueError:
        raise RpmdbError(f"epoch: expected a number, got {text!r}") from None
