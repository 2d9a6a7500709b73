# SPDX-License-Identifier: GPL-2.0-or-later
"""The compose-engine interface: treefile + RPM repos -> an OSTree commit in a work repo.

Two engines implement it (DESIGN section 3), each in a module of its own:
- ``rpm-ostree`` (rpmostree.py): production, runs `rpm-ostree compose tree`.
- ``dnf`` (dnf.py): portable, `dnf --installroot` + `ostree commit`.
engines.py picks one by name; it, not this module, imports the engines, so the engines
can build on this interface without an import cycle.

Both write a compose.json of the same shape (rpm-ostree's ``--write-composejson-to``).
"""

from __future__ import annotations

import abc
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from koji_hostimage.runner import CommandRunner, HostRunner

if TYPE_CHECKING:
    from koji_hostimage.treefile.load import Treefile

# platform.machine() names that differ from the RPM basearch Koji uses.
_MACHINE_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "i386": "i686", "i586": "i686"}


def host_arch() -> str:
    """This machine's arch as RPM and Koji name it (the default arch to compose for)."""
    machine = platform.machine()
    return _MACHINE_ARCH.get(machine, machine)


@dataclass
class ComposeRequest:
    treefile: Treefile
    repo: Path  # work repo (bare-user); created when missing
    workdir: Path  # scratch space: install root, compose.json, logs
    version: str | None = None  # --add-metadata-string=version=...
    parent: str | None = None  # commit to record as parent (rpm-ostree --parent)
    extra_repos: list[str] = field(default_factory=list)  # baseurls added to the treefile's
    force_nocache: bool = False
    log_path: Path | None = None
    # SOURCE_DATE_EPOCH for reproducible builds: the commit's timestamp, and the engines'
    # tools (rpm-ostree, dnf/rpm) get it in their environment; None: now
    source_date_epoch: int | None = None


@dataclass
class ComposeResult:
    changed: bool  # False: nothing changed, rpm-ostree wrote no compose.json
    ref: str
    commit: str | None  # new commit; when unchanged, the ref's current commit (if any)
    engine: str
    compose_json: dict[str, Any] = field(default_factory=dict)
    compose_json_path: Path | None = None


class ComposeEngine(abc.ABC):
    name: ClassVar[str]

    def __init__(self, runner: CommandRunner | None = None):
        self.runner: CommandRunner = runner or HostRunner()

    @abc.abstractmethod
    def compose(self, request: ComposeRequest) -> ComposeResult:
        """Compose ``request.treefile`` into ``request.repo``."""
