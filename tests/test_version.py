# SPDX-License-Identifier: GPL-2.0-or-later
"""automatic-version-prefix numbering, checked against coreos/rpm-ostree's own cases
(rust/src/utils.rs ``test_next_version`` exercises src/libpriv/rpmostree-util.cxx
``util_next_version``)."""

from __future__ import annotations

import datetime as dt

import pytest

from koji_hostimage.treefile.version import VersionError, automatic_version, next_version

NOW = dt.datetime(2026, 12, 2, 15, 30, tzinfo=dt.UTC)
TODAY = "20261202"


@pytest.mark.parametrize(("prefix", "last", "expected"), [
    ("10", "", "10"), ("10", "xyz", "10"), ("10", "9", "10"), ("10", "11", "10"),
    ("10", "10", "10.1"), ("10.1", "10.1", "10.1.1"), ("10", "10.0", "10.1"),
    ("10", "10.1", "10.2"), ("10", "10.1.5", "10.2"), ("10.1", "10.1.5", "10.1.6"),
    ("10.1", "10.1.1.5", "10.1.2"), ("10", "10001", "10"), ("10", "101.1", "10"),
    ("10", "10x.1", "10"), ("10.1", "10", "10.1"), ("10.1", "10.", "10.1"),
    ("10.1", "10.2", "10.1"), ("10.1", "10.1x", "10.1"), ("10.1", "10.1.x", "10.1.1"),
    ("10.1", "10.1.2x", "10.1.3"), ("10", None, "10"),
])
def test_plain_prefixes(prefix, last, expected):
    assert next_version(prefix, last, NOW) == expected


@pytest.mark.parametrize(("prefix", "last", "expected"), [
    ("10.<date:%Y%m%d>", "10.20001010", f"10.{TODAY}.0"),
    ("10.<date:%Y%m%d>", "10.20001010.5", f"10.{TODAY}.0"),  # a new day restarts
    ("10.<date:%Y%m%d>", f"10.{TODAY}.1", f"10.{TODAY}.2"),  # the same day counts up
    ("10.<date:%Y%m%d>", "", f"10.{TODAY}.0"),
    ("10.<date:%Y%m%d>.0", f"10.{TODAY}", f"10.{TODAY}.0.0"),
    ("10.<date:%Y%m%d>", f"10.{TODAY}.x", f"10.{TODAY}.1"),
    ("10.<date:%Y%m%d>.1", f"10.{TODAY}.1.2x", f"10.{TODAY}.1.3"),
    ("10.<date: %Y%m%d>", "10.20001010", f"10. {TODAY}.0"),
    ("10.<date:%Y%m%d>abc", "10.20001010abc", f"10.{TODAY}abc.0"),
    ("10.<date:%Y%m%d>", f"10.{TODAY}", f"10.{TODAY}.0"),
    ("10.<date:%Y%m%d>", "10", f"10.{TODAY}.0"),
    ("10.<date:>", "10.20001010", "10..0"),
    ("10.<wrongtag: >", "10.20001010", "10.<wrongtag: >"),
])
def test_date_tags(prefix, last, expected):
    assert next_version(prefix, last, NOW) == expected


def test_a_suffix_other_than_a_dot():
    assert next_version("10", "10", NOW, suffix="-") == "10-1"
    assert next_version("10.1", "10.1-5", NOW, suffix="-") == "10.1-6"
    with pytest.raises(VersionError, match="automatic-version-suffix: expected exactly one"):
        next_version("10", "10", NOW, suffix="--")


def test_automatic_version_reads_the_treefile_keys():
    assert automatic_version({}, "1") is None
    data = {"automatic-version-prefix": "42.<date:%Y%m%d>", "automatic-version-suffix": "-"}
    assert automatic_version(data, f"42.{TODAY}-3", NOW) == f"42.{TODAY}-4"
