# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi.checks (pungi 4.3.6): make_schema (a small part of pungi's),
validate and update_schema.

validate() works as pungi's does (``pungi/checks.py`` ``validate`` and
``_extend_with_default_and_alias``): JSON Schema draft 4 with pungi's extra string types
("url", "regex") and tuples accepted as arrays, defaults filled in, unknown top-level
keys reported as warnings (with pungi's "Did you mean" suggestion), errors worded as
pungi words them. Left out: resolving git refs of "url" options (the tests run offline),
aliases, deprecations and ``CONFIG_DEPS``. make_schema() holds the options the tests
and ``conf/pungi/hostimage.conf`` use, each shaped as in pungi 4.3.6.
"""

from __future__ import annotations

import re

import jsonschema
from productmd.common import RELEASE_TYPES

from pungi import util
from pungi.phases import PHASES_NAMES

UNKNOWN = "WARNING: Unrecognized config option: {0}."
UNKNOWN_SUGGEST = "WARNING: Unrecognized config option: {0}. Did you mean {1}?"
RUNROOT_TYPES = ["local", "koji", "openssh"]  # pungi.runroot.RUNROOT_TYPES


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
            "string_pairs": {
                "type": "array",
                "items": {
                    "type": "array",
                    "items": [{"type": "string"}, {"type": "string"}],
                    "additionalItems": False,
                },
            },
        },
        "type": "object",
        "properties": {
            "release_name": {"type": "string"},
            "release_short": {"type": "string"},
            "release_version": {"type": "string"},
            "release_type": {"type": "string", "enum": RELEASE_TYPES, "default": "ga"},
            "variants_file": {"type": "string"},
            "koji_profile": {"type": "string"},
            "pkgset_source": {"type": "string", "enum": ["koji", "repos"]},
            "pkgset_koji_tag": {"$ref": "#/definitions/strings"},
            "sigkeys": {
                "type": "array",
                "items": {"$ref": "#/definitions/optional_string"},
                "minItems": 1,
                "default": [None],
            },
            "gather_method": {
                "oneOf": [
                    {"type": "object"},  # per-variant methods: not used here
                    {"type": "string", "enum": ["deps", "nodeps", "hybrid"]},
                ],
            },
            "createrepo_checksum": {
                "type": "string",
                "default": "sha256",
                "enum": ["sha1", "sha256", "sha512"],
            },
            "runroot_method": {"type": "string", "enum": RUNROOT_TYPES},
            "runroot_tag": {"type": "string"},
            "global_target": {"type": "string"},
            "global_release": {"$ref": "#/definitions/optional_string"},
            "global_version": {"type": "string"},
            "link_type": {
                "type": "string",
                "enum": ["hardlink", "copy", "hardlink-or-copy", "symlink", "abspath-symlink"],
                "default": "hardlink-or-copy",
            },
            "translate_paths": {"$ref": "#/definitions/string_pairs", "default": []},
            "media_checksums": {
                "$ref": "#/definitions/list_of_strings",
                "default": ["md5", "sha1", "sha256"],
            },
            "skip_phases": {
                "type": "array",
                "items": {"type": "string", "enum": PHASES_NAMES + ["productimg"]},
                "default": [],
            },
            "osbuild": {"type": "object"},
        },
        "required": [
            "release_name",
            "release_short",
            "release_version",
            "variants_file",
            "pkgset_source",
            "gather_method",
        ],
        "additionalProperties": False,
    }


def update_schema(schema, update_dict):
    """As pungi.checks.update_schema: merge ``update_dict`` into ``schema`` leaf by leaf.

    A dict value is merged key by key into the dict ``schema`` has there (or a new
    one); anything else (strings, booleans, lists) replaces what ``schema`` had.
    """
    for key, value in update_dict.items():
        if isinstance(value, dict):
            schema[key] = update_schema(schema.get(key, {}), value)
        else:
            schema[key] = value
    return schema


def _one_or_list(value):
    return {"anyOf": [value, {"type": "array", "items": value}]}


def _is_array(checker, instance):
    return isinstance(instance, (tuple, list))


def _is_string(checker, instance):
    return isinstance(instance, str)


def _validate_regex_type(validate_type):
    def type_(validator, types, instance, schema):
        if types == "regex":
            try:
                re.compile(instance)
            except re.error as exc:
                yield jsonschema.ValidationError(f"incorrect regular expression: {exc}")
        else:
            yield from validate_type(validator, types, instance, schema)

    return type_


def _fill_defaults(properties_validator):
    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in props.items():
                if "default" in subschema and name not in instance:
                    instance.setdefault(name, subschema["default"])
        yield from properties_validator(validator, props, instance, schema)

    return properties


def _get_suggestion(desired, names):
    """As pungi's: the closest name, at most half of ``desired`` away."""
    closest = None
    closest_match = len(desired) + 1
    for name in names:
        match = util.levenshtein(desired, name)
        if match < closest_match and match < len(desired) // 2:
            closest = name
            closest_match = match
    return closest


def validate(config, offline=False, schema=None):
    """Return (errors, warnings) for ``config``; fills in defaults like pungi."""
    schema = schema or make_schema()
    base = jsonschema.Draft4Validator
    validator_class = jsonschema.validators.extend(
        base,
        validators={
            "properties": _fill_defaults(base.VALIDATORS["properties"]),
            "type": _validate_regex_type(base.VALIDATORS["type"]),
        },
        type_checker=base.TYPE_CHECKER.redefine_many(
            {"array": _is_array, "regex": _is_string, "url": _is_string}
        ),
    )
    errors, warnings = [], []
    for error in validator_class(schema).iter_errors(config):
        if not error.path and error.validator == "additionalProperties":
            allowed_keys = set(error.schema["properties"])
            for key in set(error.instance) - allowed_keys:
                suggestion = _get_suggestion(key, allowed_keys)
                if suggestion:
                    warnings.append(UNKNOWN_SUGGEST.format(key, suggestion))
                else:
                    warnings.append(UNKNOWN.format(key))
        else:
            path = ".".join(str(part) for part in error.path)
            errors.append(f"Failed validation in {path}: {error.message}")
            if error.validator in ("anyOf", "oneOf"):
                for suberror in error.context:
                    errors.append(f"    Possible reason: {suberror.message}")
    return errors, warnings
