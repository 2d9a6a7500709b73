# SPDX-License-Identifier: GPL-2.0-or-later
"""The builder plugin's own settings: /etc/kojid/plugins/hostimage.conf.

conf/kojid/hostimage.conf documents every option. kojid reads plugin configs with
``koji.read_config_files`` (koji-project/koji builder/kojid and plugins/builder/kiwi.py do
the same), so the file is read when a task starts and edits apply to the next task.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import koji

from koji_hostimage.errors import KojiBuildError
from koji_hostimage.pipeline import DEFAULT_SERVER_CMD

from .options import ENGINES, MAX_DELTA_COUNT

log = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = "/etc/kojid/plugins/hostimage.conf"
CONFIG_SECTION = "hostimage"

# The install group of the buildroot: a comps group in the build tag that pulls in the
# compose engine (rpm-ostree, ostree, and for the dnf engine dnf + ostree).
DEFAULT_INSTALL_GROUP = "hostimage-build"
DEFAULT_CHANNEL = "image"
# What serves /srv/repo in an image built without a base image (pipeline.BuildRequest).
SERVERS = ("busybox", "none")


@dataclass
class BuilderConfig:
    """The builder plugin's settings (conf/kojid/hostimage.conf documents each one)."""

    engine: str = "rpm-ostree"
    install_group: str = DEFAULT_INSTALL_GROUP
    channel: str = DEFAULT_CHANNEL
    base_image: str | None = None
    sign_key: str | None = None
    gpg_homedir: Path | None = None
    delta_from: int = 1
    server_cmd: list[str] = field(default_factory=lambda: list(DEFAULT_SERVER_CMD))
    # Without a base image: "busybox" (the server layer: this builder's static busybox,
    # ``busybox`` or else found where distributions put it) or "none" (an image that
    # cannot serve, on purpose).
    server: str = "busybox"
    busybox: Path | None = None
    compose_timeout: float = 4 * 3600.0
    download_timeout: float = 600.0
    cancel_grace: float = 5.0


def load_builder_config(path: str | os.PathLike[str] = DEFAULT_CONFIG_FILE) -> BuilderConfig:
    """Read the plugin config with ``koji.read_config_files``; a missing file means defaults."""
    path = str(path)
    config = BuilderConfig()
    if not os.path.exists(path):
        log.info("%s not found: using the built-in defaults", path)
        return config
    try:
        parser = koji.read_config_files([(path, True)], raw=True)
    except Exception as exc:  # configparser errors carry the line; keep the file name
        raise KojiBuildError(f"{path}: cannot read: {exc}") from exc
    if not parser.has_section(CONFIG_SECTION):
        raise KojiBuildError(f"{path}: expected a [{CONFIG_SECTION}] section, got none")
    section = parser[CONFIG_SECTION]
    known = set(BuilderConfig.__dataclass_fields__)
    unknown = sorted(set(section) - known)
    if unknown:
        raise KojiBuildError(
            f"{path}: [{CONFIG_SECTION}] {', '.join(unknown)}: unknown option(s);"
            f" expected only {', '.join(sorted(known))}"
        )

    def text(key: str) -> str | None:
        value = section.get(key, "").strip()
        return value or None

    def number(key: str, minimum: float, kind: type = float) -> Any:
        raw = section.get(key)
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            raise KojiBuildError(
                f"{path}: [{CONFIG_SECTION}] {key}: expected a {kind.__name__}, got {raw!r}"
            ) from None
        if value < minimum:
            raise KojiBuildError(
                f"{path}: [{CONFIG_SECTION}] {key}: expected at least {minimum}, got {raw!r}"
            )
        return value

    def choice(key: str, choices: Sequence[str], default: str) -> str:
        if key not in section:
            return default
        value = section[key].strip()
        if value not in choices:
            raise KojiBuildError(
                f"{path}: [{CONFIG_SECTION}] {key}: expected one of {', '.join(choices)},"
                f" got {value!r}"
            )
        return value

    config.engine = choice("engine", ENGINES, config.engine)
    config.install_group = text("install_group") or config.install_group
    config.channel = text("channel") or config.channel
    config.base_image = text("base_image")
    config.sign_key = text("sign_key")
    homedir = text("gpg_homedir")
    config.gpg_homedir = Path(homedir) if homedir else None
    if "delta_from" in section:
        config.delta_from = number("delta_from", 0, int)
        if config.delta_from > MAX_DELTA_COUNT:
            raise KojiBuildError(
                f"{path}: [{CONFIG_SECTION}] delta_from: expected at most {MAX_DELTA_COUNT},"
                f" got {config.delta_from}"
            )
    if text("server_cmd"):
        # shlex only splits the configured words into an argv; nothing runs a shell.
        config.server_cmd = shlex.split(section["server_cmd"])
    config.server = choice("server", SERVERS, config.server)
    busybox = text("busybox")
    if busybox:
        if not Path(busybox).is_file():
            raise KojiBuildError(
                f"{path}: [{CONFIG_SECTION}] busybox: {busybox}: not found: expected the path"
                " of a statically linked busybox on this builder (Debian: busybox-static)"
            )
        config.busybox = Path(busybox)
    for key in ("compose_timeout", "download_timeout", "cancel_grace"):
        if key in section:
            setattr(config, key, number(key, 0))
    return config
