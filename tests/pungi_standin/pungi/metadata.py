# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi.metadata: only write_compose_info, called by run_compose."""

from __future__ import annotations

import json


def write_compose_info(compose):
    with open(compose.paths.compose.metadata("composeinfo.json"), "w") as f:
        json.dump({"compose_id": compose.compose_id}, f)
