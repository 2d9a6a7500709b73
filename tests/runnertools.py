# SPDX-License-Identifier: GPL-2.0-or-later
"""A host runner whose commands see paths under another name, as inside a Koji buildroot.

Tests make ``inner`` a symlink to ``host``, so the mapped paths really work, and then check
from the recorded argvs and environments that no host path reached a command.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from koji_hostimage.runner import CommandResult, HostRunner


class MappedRunner(HostRunner):
    """Maps paths below ``host`` to ``inner``; records every argv and environment.

    ``strict``: a path outside ``host`` is an error (ValueError); otherwise it passes
    through unchanged (files outside the work dir, such as a local repo).
    """

    def __init__(self, host: Path, inner: Path, strict: bool = True):
        super().__init__()
        self.host, self.inner, self.strict = Path(host), Path(inner), strict
        self.argvs: list[list[str]] = []
        self.envs: list[dict[str, str]] = []

    def inner_path(self, host_path: Path) -> str:
        path = Path(host_path)
        if not self.strict and not path.is_relative_to(self.host):
            return str(path)
        return str(self.inner / path.relative_to(self.host))

    def run(
        self,
        argv: Sequence[str],
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> CommandResult:
        self.argvs.append([str(a) for a in argv])
        self.envs.append(dict(env or {}))
        return super().run(argv, cwd=cwd, env=env, log_path=log_path)
