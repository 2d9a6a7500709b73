# SPDX-License-Identifier: GPL-2.0-or-later
"""Exceptions shared by the whole pipeline.

Every error a user can cause names what it is about (a file, a key, a command) so the
message alone is enough to fix the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class HostImageError(Exception):
    """Base class for every error koji-hostimage raises on purpose."""


class TreefileError(HostImageError):
    """A treefile (or a file it includes) is malformed.

    The message always has the shape ``FILE: KEY: expected ..., got ...``.
    """

    def __init__(self, path: Path | str, key: str | None, expected: str, got: str | None = None):
        self.path = str(path)
        self.key = key
        self.expected = expected
        self.got = got
        where = f"{self.path}: {key}" if key else self.path
        message = f"{where}: expected {expected}"
        if got is not None:
            message += f", got {got}"
        super().__init__(message)


class CommandError(HostImageError):
    """An external program failed; carries its argv, exit code and output tail."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str = "", what: str = ""):
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        label = what or (Path(self.argv[0]).name if self.argv else "command")
        tail = tail_lines(output)
        message = f"{label} failed (exit {returncode}): {' '.join(self.argv)}"
        if tail:
            message += "\n" + tail
        super().__init__(message)


class OSTreeError(CommandError):
    """The ostree CLI failed; the message carries ostree's own words."""


class ComposeError(HostImageError):
    """A compose engine could not produce a commit."""


class ArchiveError(HostImageError):
    """An OCI archive is malformed or not one of ours."""


class KojiBuildError(HostImageError):
    """The Koji side of a build cannot go on (arches, options, previous builds, config)."""


class ManifestError(HostImageError):
    """A hostimage.json manifest is malformed or of an unsupported schema version."""


def tail_lines(text: str, count: int = 20) -> str:
    """Return the last ``count`` non-empty lines of ``text`` (error messages quote these)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:])
