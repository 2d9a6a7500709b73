# SPDX-License-Identifier: GPL-2.0-or-later
"""`koji-hostimage report` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse

from ..errors import HostImageError

HELP = "report (not implemented yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise HostImageError("report is not implemented yet")
