# SPDX-License-Identifier: GPL-2.0-or-later
"""rpm-ostree treefiles: load, resolve includes, validate, hash. (SKELETON: being written.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RepoSource:
    """One RPM repository the compose reads from."""

    name: str
    baseurl: str


@dataclass
class Treefile:
    path: Path  # the top-level treefile
    basearch: str
    data: dict[str, Any]  # fully resolved (includes merged, arch keys folded, vars expanded)
    files: list[Path] = field(default_factory=list)  # every file read, top-level first

    @property
    def ref(self) -> str:
        return self.data["ref"]

    @property
    def packages(self) -> list[str]:
        return list(self.data.get("packages", []))

    @property
    def repos(self) -> list[str]:
        return list(self.data.get("repos", []))


def load_treefile(path: Path, basearch: str) -> Treefile:
    raise NotImplementedError


def resolve_repos(treefile: Treefile, extra_repos: Sequence[str] = ()) -> list[RepoSource]:
    raise NotImplementedError


def input_hash(treefile: Treefile, repos: Sequence[RepoSource]) -> str:
    raise NotImplementedError
