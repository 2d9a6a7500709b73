# SPDX-License-Identifier: GPL-2.0-or-later
"""Package diffs, with our rpmvercmp checked against the real rpm's (rpm.vercmp in
rpm's embedded Lua, which calls the C rpmvercmp)."""

from __future__ import annotations

import itertools
import subprocess

import pytest

from koji_hostimage.manifest import Package
from koji_hostimage.pkgdiff import diff_packages, rpmvercmp

VERSIONS = [
    "1.0", "1.0.0", "1.00", "1.0a", "1.0~rc1", "1.0~rc2", "1.0~", "1.0^git1", "1.0^",
    "1.0.1", "1.1", "2", "10", "9", "a", "b", "1.0_1", "2.0.1a", "2.0a1",
    "1.0~rc1^git2", "1.0^git1~pre", "0.9", "1..0", "001", "1e", "1.e",
]


def real_rpm_vercmp(pairs: list[tuple[str, str]]) -> list[int]:
    """Ask rpm itself, in one process, for every pair."""
    script = "".join(f'print(rpm.vercmp("{a}", "{b}") .. " ")\n' for a, b in pairs)
    out = subprocess.run(["rpm", "--eval", "%{lua:\n" + script + "}"],
                         check=True, capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_rpmvercmp_agrees_with_rpm():
    pairs = list(itertools.permutations(VERSIONS, 2))
    expected = real_rpm_vercmp(pairs)
    ours = [rpmvercmp(a, b) for a, b in pairs]
    mismatches = [(a, b, o, e) for (a, b), o, e in zip(pairs, ours, expected, strict=True)
                  if o != e]
    assert not mismatches, mismatches[:10]


def pkg(name: str, version: str, release: str = "1", epoch: int | None = None,
        arch: str = "noarch") -> Package:
    return Package(name=name, epoch=epoch, version=version, release=release, arch=arch)


def test_diff_packages_classifies_every_change():
    old = [pkg("a", "1.0"), pkg("b", "2.0"), pkg("c", "1.0"), pkg("d", "1.0", epoch=1),
           pkg("same", "1")]
    new = [pkg("a", "1.1"), pkg("c", "0.9"), pkg("d", "0.5", epoch=2), pkg("e", "1"),
           pkg("same", "1")]
    diff = diff_packages(old, new)
    assert [p.name for p in diff.added] == ["e"]
    assert [p.name for p in diff.removed] == ["b"]
    assert [(c.name, c.old.evr, c.new.evr) for c in diff.upgraded] == [
        ("a", "1.0-1", "1.1-1"), ("d", "1:1.0-1", "2:0.5-1")]
    assert [(c.name, c.old.evr, c.new.evr) for c in diff.downgraded] == [
        ("c", "1.0-1", "0.9-1")]
    assert not diff.empty
    assert diff_packages(old, old).empty


def test_release_breaks_version_ties():
    diff = diff_packages([pkg("a", "1.0", "2")], [pkg("a", "1.0", "10")])
    assert [c.name for c in diff.upgraded] == ["a"]


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_same_name_other_arch_is_a_different_package(arch):
    diff = diff_packages([pkg("a", "1", arch="noarch")], [pkg("a", "1", arch=arch)])
    assert [p.arch for p in diff.added] == [arch]
    assert [p.arch for p in diff.removed] == ["noarch"]
