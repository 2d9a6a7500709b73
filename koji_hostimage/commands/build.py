# SPDX-License-Identifier: GPL-2.0-or-later
"""`koji-hostimage build` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse

from ..errors import HostImageError

HELP = "build (not implemented yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise HostImageError("build is not implemented yet")
