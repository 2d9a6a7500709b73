# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi (not installable here): the subset the hostimage phase uses."""


def get_full_version() -> str:
    return "4.3-standin"
