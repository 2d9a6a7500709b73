# SPDX-License-Identifier: GPL-2.0-or-later
"""The compose engines by name: the one place that knows every engine.

It lives apart from the interface (base.py) because it imports the engines, and the
engines import the interface: keeping both in one module was an import cycle.
"""

from __future__ import annotations

import shutil

from koji_hostimage.errors import HostImageError
from koji_hostimage.runner import CommandRunner

from .base import ComposeEngine
from .dnf import DnfEngine
from .rpmostree import RpmOstreeEngine

ENGINES: dict[str, type[ComposeEngine]] = {
    RpmOstreeEngine.name: RpmOstreeEngine,
    DnfEngine.name: DnfEngine,
}
ENGINE_NAMES = ("auto", *ENGINES)


def get_engine(name: str, runner: CommandRunner | None = None) -> ComposeEngine:
    """Return the engine called ``name`` (one of ENGINE_NAMES); ``auto`` takes rpm-ostree
    where it is installed, else dnf."""
    if name == "auto":
        name = RpmOstreeEngine.name if shutil.which("rpm-ostree") else DnfEngine.name
    try:
        engine = ENGINES[name]
    except KeyError:
        raise HostImageError(
            f"unknown compose engine {name!r}: expected one of {', '.join(ENGINE_NAMES)}"
        ) from None
    return engine(runner)
