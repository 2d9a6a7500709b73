# SPDX-License-Identifier: GPL-2.0-or-later
"""The whole build: treefile -> commit -> export repo -> OCI archive + hostimage.json.

(SKELETON: the request/result records are the contract the builder plugin and the CLI
code against; ``build_host_image`` is being written.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .manifest import HostImageManifest, Source
from .runner import CommandRunner

# The container's Cmd when a base image is given. Configurable (kojid config, --server-cmd):
# any static server that serves /srv/repo on 8080 will do; a base image with Python has this.
DEFAULT_SERVER_CMD = ["python3", "-m", "http.server", "--directory", "/srv/repo", "8080"]


@dataclass
class BuildRequest:
    treefile: Path
    output_dir: Path  # receives <nvr>.<arch>.oci.tar, hostimage.json, compose.json, logs
    arch: str  # Koji arch name (x86_64, aarch64, ppc64le, s390x)
    name: str | None = None  # default: the treefile's file name without suffix
    version: str | None = None  # default: automatic-version-prefix or a date stamp
    release: str = "1"
    engine: str = "auto"
    extra_repos: list[str] = field(default_factory=list)  # baseurls ($arch substituted)
    previous: list[Path] = field(default_factory=list)  # earlier archives/repos: deltas
    delta_from_scratch: bool = False
    base_image: Path | None = None  # OCI archive whose layers go first
    sign_key: str | None = None  # GPG key id; signs commit and summary
    gpg_homedir: Path | None = None
    server_cmd: list[str] = field(default_factory=lambda: list(DEFAULT_SERVER_CMD))
    source: Source = field(default_factory=Source)
    workdir: Path | None = None  # scratch; default: a temporary dir under output_dir
    work_repo: Path | None = None  # bare-user repo kept between builds (cache); optional
    runner: CommandRunner | None = None  # where the compose runs (a buildroot in Koji)
    force_nocache: bool = False


@dataclass
class BuildResult:
    changed: bool  # False: the compose found nothing to change; no archive written
    manifest: HostImageManifest | None
    archive: Path | None
    manifest_path: Path | None
    compose_json_path: Path | None
    log_path: Path | None


def build_host_image(request: BuildRequest) -> BuildResult:
    raise NotImplementedError
