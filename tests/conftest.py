# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared pytest fixtures (append yours with small edits; keep each one documented).

Session-scoped example content is built once per test run with real rpmbuild and
createrepo_c (about a second each):

- ``example_content``: v1 of the example host OS (koji_hostimage.example.content).
- ``example_content_v2``: the update: ``greeter`` 1.0 -> 1.1 and ``host-release`` 1 -> 2
  (koji_hostimage.example.content.UPDATE_OVERRIDES), in its own directory with its own repo.

Both are ``ExampleContent`` records: ``.treefile`` (host.yaml with example.repo beside
it), ``.repo_dir``, ``.nevras``. Treat them as read-only; build your own variant with
``build_example_content(tmp_path, ...)`` when a test needs to change something.

- ``composed_v1``: ``example_content`` composed by the dnf engine into a work repo
  (``ComposedRepo``: ``.repo``, ``.ref``, ``.commit``, ``.result``, ``.content``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gpgtools import GpgKey, make_gpg_key, remove_gpg_key

from koji_hostimage.compose.base import ComposeRequest, ComposeResult
from koji_hostimage.example.content import UPDATE_OVERRIDES, ExampleContent, build_example_content


@pytest.fixture(scope="session")
def example_content(tmp_path_factory: pytest.TempPathFactory) -> ExampleContent:
    """v1 of the example content: RPMs, repo, host.yaml and example.repo."""
    return build_example_content(tmp_path_factory.mktemp("example-v1"))


@pytest.fixture(scope="session")
def example_content_v2(tmp_path_factory: pytest.TempPathFactory) -> ExampleContent:
    """The update of ``example_content``: greeter 1.1 and host-release 2."""
    return build_example_content(
        tmp_path_factory.mktemp("example-v2"), version_overrides=UPDATE_OVERRIDES
    )


@dataclass
class ComposedRepo:
    """A work repo (bare-user) holding one dnf-engine commit of ``content``."""

    repo: Path
    ref: str
    commit: str
    result: ComposeResult
    content: ExampleContent


@pytest.fixture(scope="session")
def composed_v1(
    tmp_path_factory: pytest.TempPathFactory, example_content: ExampleContent
) -> ComposedRepo:
    """``example_content`` composed with the dnf engine (about a second), arch x86_64.

    Read-only: to build on it (v2, deltas ...), ``ostree pull-local`` it into your own repo.
    """
    from koji_hostimage.compose.dnf import DnfEngine
    from koji_hostimage.treefile.load import load_treefile

    base = tmp_path_factory.mktemp("composed-v1")
    treefile = load_treefile(example_content.treefile, "x86_64")
    request = ComposeRequest(treefile=treefile, repo=base / "repo", workdir=base / "work")
    result = DnfEngine().compose(request)
    assert result.changed and result.commit
    return ComposedRepo(base / "repo", result.ref, result.commit, result, example_content)


@pytest.fixture(scope="session")
def gpg_key() -> Iterator[GpgKey]:
    """A throwaway GPG signing key (its own GNUPGHOME), shared by the signing tests."""
    key = make_gpg_key()
    yield key
    remove_gpg_key(key)
