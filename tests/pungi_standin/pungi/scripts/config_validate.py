# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi.scripts.config_validate (``pungi-config-validate``, pungi 4.3.6).

The schema half is pungi's: the options (``--schema-override FILE``, repeatable;
``--dump-schema``; ``--offline``; ``-e VAR=VALUE``), the ``.pungi-config-validate.json``
defaults beside the config, ``make_final_schema`` (``pungi.checks.make_schema()``, then
each override file ``json.load``-ed and merged in with ``pungi.checks.update_schema``),
``pungi.checks.validate(conf, offline=..., schema=...)``, and every error and warning
printed followed by exit status 1 (unknown options are warnings, and fatal here).

Left out: the second half of pungi's ``run``, which parses the variants XML and calls
``validate()`` on a fixed list of pungi's own phases (init, pkgset, gather, ... image
checksum, test); the hostimage phase is not in that list, and these stand-ins have none
of those phases.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pungi_utils import config_utils

import pungi.checks
import pungi.util


def make_final_schema(schema_overrides):
    schema = pungi.checks.make_schema()
    for schema_override in schema_overrides:
        with open(schema_override) as f:
            schema = pungi.checks.update_schema(schema, json.load(f))
    return schema


def run(config, topdir, has_old, offline, defined_variables, schema_overrides):
    try:
        defaults_file = os.path.join(os.path.dirname(config), ".pungi-config-validate.json")
        with open(defaults_file) as f:
            defined_variables.update(json.load(f))
    except OSError:
        pass
    conf = pungi.util.load_config(config, defined_variables)
    config_utils.remove_unknown(conf, defined_variables)
    schema = make_final_schema(schema_overrides)

    errors, warnings = pungi.checks.validate(conf, offline=offline, schema=schema)
    if errors or warnings:
        for error in errors + warnings:
            print(error)
        sys.exit(1)
    return []


def dump_schema(schema_overrides):
    schema = make_final_schema(schema_overrides)
    json.dump(schema, sys.stdout, sort_keys=True, indent=4)
    print("")


def main(args=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--dump-schema", action="store_true")
    parser.add_argument("config", metavar="CONFIG")
    parser.add_argument("--old-composes", action="store_true")
    parser.add_argument("--offline", action="store_true")
    parser.add_argument(
        "-e",
        "--define",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        type=config_utils.validate_definition,
    )
    parser.add_argument("--schema-override", action="append", default=[])
    opts = parser.parse_args(args)
    defines = config_utils.extract_defines(opts.define)

    if opts.dump_schema:
        dump_schema(opts.schema_override)
        sys.exit(0)

    # pungi passes a temporary directory for the phases' ValidationCompose: not needed here.
    errors = run(
        opts.config, None, opts.old_composes, opts.offline, defines, opts.schema_override
    )
    for msg in errors:
        print(msg)
    return bool(errors)


def cli_main():
    if main():
        sys.exit(1)
