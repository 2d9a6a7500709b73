# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi.phases: the phase classes and PHASES_NAMES, pungi's phase list."""

from .base import PhaseBase
from .image_checksum import ImageChecksumPhase  # noqa: F401
from .osbuild import OSBuildPhase  # noqa: F401
from .weaver import WeaverPhase  # noqa: F401

# pungi computes this from the phase classes it imports (phases_metadata).
PHASES_NAMES = sorted(
    {
        cls.name
        for cls in list(globals().values())
        if isinstance(cls, type) and issubclass(cls, PhaseBase) and cls is not PhaseBase
    }
)
