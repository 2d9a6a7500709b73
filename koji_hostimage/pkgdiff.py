# SPDX-License-Identifier: GPL-2.0-or-later
"""Package-list differences between two builds, with RPM's version ordering.

Shared by `koji-hostimage diff` and `koji-hostimage report`. The comparison follows
rpm's rpmvercmp() (rpmio/rpmvercmp.c in rpm-software-management/rpm): versions are split
into alternating digit and letter segments, separators are ignored, `~` sorts before
everything (pre-releases) and `^` after the base version but before anything longer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from koji_hostimage.manifest import Package

_SEGMENT = re.compile(r"(\d+|[A-Za-z]+|~|\^)")


def rpmvercmp(a: str, b: str) -> int:
    """Compare two version (or release) strings the way rpm does: -1, 0 or 1."""
    if a == b:
        return 0
    left, right = _segments(a), _segments(b)
    for x, y in zip(left, right, strict=False):
        if x != y and "~" in (x, y):
            return -1 if x == "~" else 1
        if x != y and "^" in (x, y):
            # both go on: the side with the caret is the older one
            return -1 if x == "^" else 1
        result = _compare_segment(x, y)
        if result:
            return result
    return _compare_tails(left[len(right):], right[len(left):])


def _segments(version: str) -> list[str]:
    return _SEGMENT.findall(version)


def _compare_segment(x: str, y: str) -> int:
    x_num, y_num = x.isdigit(), y.isdigit()
    if x_num and y_num:
        x, y = x.lstrip("0"), y.lstrip("0")
        if len(x) != len(y):
            return 1 if len(x) > len(y) else -1
    elif x_num != y_num:
        # a numeric segment is newer than an alphabetic one
        return 1 if x_num else -1
    return (x > y) - (x < y)


def _compare_tails(left_rest: list[str], right_rest: list[str]) -> int:
    """One list ran out: the longer one is newer, unless it goes on with `~`."""
    if not left_rest and not right_rest:
        return 0
    if left_rest:
        return -1 if left_rest[0] == "~" else 1
    return 1 if right_rest[0] == "~" else -1


def compare_evr(a: Package, b: Package) -> int:
    """Compare two packages' epoch:version-release."""
    epoch = (a.epoch or 0) - (b.epoch or 0)
    if epoch:
        return 1 if epoch > 0 else -1
    return rpmvercmp(a.version, b.version) or rpmvercmp(a.release, b.release)


@dataclass
class PackageChange:
    name: str
    arch: str
    old: Package
    new: Package


@dataclass
class PackageDiff:
    added: list[Package] = field(default_factory=list)
    removed: list[Package] = field(default_factory=list)
    upgraded: list[PackageChange] = field(default_factory=list)
    downgraded: list[PackageChange] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.upgraded or self.downgraded)

    def to_dict(self) -> dict[str, list]:
        def change(c: PackageChange) -> dict[str, str]:
            return {"name": c.name, "arch": c.arch, "old": c.old.evr, "new": c.new.evr}

        return {
            "added": [p.nevra for p in self.added],
            "removed": [p.nevra for p in self.removed],
            "upgraded": [change(c) for c in self.upgraded],
            "downgraded": [change(c) for c in self.downgraded],
        }


def diff_packages(old: Iterable[Package], new: Iterable[Package]) -> PackageDiff:
    """What changed from ``old`` to ``new``, keyed by (name, arch)."""
    before = {(p.name, p.arch): p for p in old}
    after = {(p.name, p.arch): p for p in new}
    diff = PackageDiff()
    for key in sorted(after.keys() - before.keys()):
        diff.added.append(after[key])
    for key in sorted(before.keys() - after.keys()):
        diff.removed.append(before[key])
    for key in sorted(before.keys() & after.keys()):
        order = compare_evr(after[key], before[key])
        if order > 0:
            diff.upgraded.append(PackageChange(key[0], key[1], before[key], after[key]))
        elif order < 0:
            diff.downgraded.append(PackageChange(key[0], key[1], before[key], after[key]))
    return diff
