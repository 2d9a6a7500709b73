# SPDX-License-Identifier: GPL-2.0-or-later
"""The next commit version from ``automatic-version-prefix``, as rpm-ostree computes it.

Mirrors coreos/rpm-ostree src/libpriv/rpmostree-util.cxx ``util_next_version`` (with
``handle_date_tag`` and ``increment_version``), which ``rpm-ostree compose tree`` calls
with the treefile's ``automatic-version-prefix``, ``automatic-version-suffix`` (one
character, default ".") and the version of the ref's previous commit
(src/app/rpmostree-compose-builtin-tree.cxx):

- ``<date:FORMAT>`` in the prefix is replaced by the UTC time formatted with FORMAT (GLib's
  ``g_date_time_format``, strftime-like); other ``<tag:...>`` are left as they are;
- with a date tag, numbering starts at 0: ``10.<date:%Y%m%d>`` gives ``10.20261202.0``,
  then ``.1``, ``.2`` the same day, and ``.0`` again the next day;
- without one: ``10``, then ``10.1``, ``10.2``; a previous version that does not start
  with the prefix (and the suffix) starts again.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from koji_hostimage.errors import HostImageError

# rpmostree-util.cxx VERSION_TAG_REGEX: "<([a-zA-Z]+):(.*)?>" (greedy, as there).
_TAG = re.compile(r"<([a-zA-Z]+):(.*)?>")
DEFAULT_SUFFIX = "."


class VersionError(HostImageError):
    """An automatic-version-prefix or -suffix rpm-ostree would refuse."""


def expand_prefix(prefix: str, now: dt.datetime) -> tuple[str, bool]:
    """``prefix`` with its date tags rendered, and whether it had one."""
    date_given = False

    def render(match: re.Match[str]) -> str:
        nonlocal date_given
        if match.group(1) != "date":
            return match.group(0)  # rpm-ostree: "ignoring unknown tag"
        date_given = True
        return now.strftime(match.group(2) or "")

    return _TAG.sub(render, prefix), date_given


def increment_version(
    prefix: str, last_version: str | None, suffix: str, increment_start: str | None
) -> str:
    """rpmostree-util.cxx ``increment_version``; see the module docstring."""
    incremented = f"{prefix}{suffix}{increment_start}"
    if not last_version or not last_version.startswith(prefix):
        return incremented if increment_start is not None else prefix
    if last_version == prefix:
        return incremented if increment_start is not None else f"{prefix}{suffix}1"
    rest = last_version[len(prefix):]
    if not rest.startswith(suffix):
        return incremented if increment_start is not None else prefix
    digits = re.match(r"\d*", rest[1:]).group()  # g_ascii_strtoull: 0 when none
    return f"{prefix}{suffix}{int(digits or 0) + 1}"


def next_version(
    prefix: str, last_version: str | None, now: dt.datetime | None = None,
    suffix: str = DEFAULT_SUFFIX,
) -> str:
    """rpmostree-util.cxx ``util_next_version``: the version after ``last_version``."""
    if len(suffix) != 1:
        raise VersionError(
            f"automatic-version-suffix: expected exactly one character, got {suffix!r}"
        )
    expanded, date_given = expand_prefix(prefix, now or dt.datetime.now(dt.UTC))
    return increment_version(expanded, last_version, suffix, "0" if date_given else None)


def automatic_version(
    treefile_data: Mapping[str, Any], last_version: str | None, now: dt.datetime | None = None
) -> str | None:
    """The version rpm-ostree would stamp for this treefile after ``last_version``, or
    None when the treefile has no ``automatic-version-prefix``."""
    prefix = treefile_data.get("automatic-version-prefix")
    if not prefix:
        return None
    suffix = treefile_data.get("automatic-version-suffix") or DEFAULT_SUFFIX
    return next_version(str(prefix), last_version, now, str(suffix))
