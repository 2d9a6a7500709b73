# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi.checks: make_schema (a small part of pungi's) and validate.

validate() works as pungi's does: JSON Schema draft 4 with pungi's extra string types
("url", "regex"), defaults filled in, unknown top-level keys reported as warnings.
"""

from __future__ import annotations

import re

import jsonschema

from pungi.phases import PHASES_NAMES

UNKNOWN = "WARNING: Unrecognized config option: {0}."


def check(conf):
    return True


def check_umask(logger):
    pass


def check_skip_phases(logger, skip_phases, just_phases):
    return True


def make_schema():
    return {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "title": "Pungi Configuration",
        "definitions": {
            "list_of_strings": {"type": "array", "items": {"type": "string"}},
            "strings": _one_or_list({"type": "string"}),
            "optional_string": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "type": "object",
        "properties": {
            "release_name": {"type": "string"},
            "release_short": {"type": "string"},
            "release_version": {"type": "string"},
            "variants_file": {"type": "string"},
            "koji_profile": {"type": "string"},
            "global_target": {"type": "string"},
            "global_release": {"$ref": "#/definitions/optional_string"},
            "global_version": {"type": "string"},
            "link_type": {
                "type": "string",
                "enum": ["hardlink", "copy", "hardlink-or-copy", "symlink", "abspath-symlink"],
                "default": "hardlink-or-copy",
            },
            "translate_paths": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "string"}},
                "default": [],
            },
            "media_checksums": {"$ref": "#/definitions/list_of_strings", "default": ["sha256"]},
            "skip_phases": {
                "type": "array",
                "items": {"type": "string", "enum": PHASES_NAMES},
                "default": [],
            },
            "osbuild": {"type": "object"},
        },
        "required": ["release_name", "release_short", "release_version", "variants_file"],
        "additionalProperties": False,
    }


def _one_or_list(value):
    return {"anyOf": [value, {"type": "array", "items": value}]}


def _is_string(checker, instance):
    return isinstance(instance, str)


def _is_regex(checker, instance):
    if not isinstance(instance, str):
        return False
    try:
        re.compile(instance)
    except re.error:
        return False
    return True


def _fill_defaults(properties_validator):
    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in props.items():
                if "default" in subschema:
                    instance.setdefault(name, subschema["default"])
        yield from properties_validator(validator, props, instance, schema)

    return properties


def validate(config, offline=False):
    """Return (errors, warnings) for ``config``; fills in defaults like pungi."""
    base = jsonschema.Draft4Validator
    validator_class = jsonschema.validators.extend(
        base,
        validators={"properties": _fill_defaults(base.VALIDATORS["properties"])},
        type_checker=base.TYPE_CHECKER.redefine_many({"url": _is_string, "regex": _is_regex}),
    )
    schema = make_schema()
    errors, warnings = [], []
    for error in validator_class(schema).iter_errors(config):
        if not error.path and error.validator == "additionalProperties":
            for key in sorted(set(error.instance) - set(schema["properties"])):
                warnings.append(UNKNOWN.format(key))
        else:
            path = ".".join(str(part) for part in error.path)
            errors.append(f"Failed validation in {path}: {error.message}")
            for suberror in error.context or []:
                errors.append(f"    Possible reason: {suberror.message}")
    return errors, warnings
