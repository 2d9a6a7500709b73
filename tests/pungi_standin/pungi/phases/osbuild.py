# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi.phases.osbuild: only its presence (the image weaver's marker)."""

from __future__ import annotations

from .base import ConfigGuardedPhase


class OSBuildPhase(ConfigGuardedPhase):
    name = "osbuild"

    def run(self):
        raise NotImplementedError("stand-in: osbuild is never configured in these tests")
