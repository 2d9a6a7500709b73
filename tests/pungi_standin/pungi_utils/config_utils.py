# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi_utils.config_utils (pungi 4.3.6): what pungi-config-validate uses."""

from __future__ import annotations

import argparse
import re

from pungi.checks import make_schema


def validate_definition(value):
    """``-e VAR=VALUE``: a Python variable name, '=', then anything."""
    if not re.match(r"^[a-z_]\w*=.*$", value):
        raise argparse.ArgumentTypeError(f"definition should be in var=value format: {value!r}")
    return value


def extract_defines(args):
    return dict(var.split("=", 1) for var in args)


def remove_unknown(conf, keys):
    """Drop the defined variables that are not pungi options (pungi's own schema)."""
    schema = make_schema()
    for key in keys:
        if key not in schema["properties"]:
            del conf[key]
