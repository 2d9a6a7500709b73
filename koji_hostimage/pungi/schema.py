# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``hostimage`` phase's config schema, as it would be merged into pungi's checks.py.

Upstream, the entries of ``schema_properties()`` would sit in the "properties" of
``pungi.checks.make_schema()`` beside the osbuild and kiwibuild blocks. Until then,
``extend_schema`` adds them to the dict ``make_schema()`` returns (``entry.py`` wraps
it), so pungi's own ``checks.validate`` checks them, fills defaults and reports unknown
keys like any other option.

The block is a mapping from variant uid regexes to one block or a list of blocks (the
shape of ``osbuild`` and ``kiwibuild``, read with ``util.get_variant_data``), not
pungi's per-variant-and-arch ``_variant_arch_mapping``: one block is one Koji task for
all its arches, which it lists itself.

Types follow pungi's validator: ``"url"`` is a string pungi may resolve (a git URL's
``#HEAD`` or ``#origin/branch`` becomes the commit id, as for ``ksurl``), ``"regex"`` a
string that must compile.

For stock ``pungi-config-validate``, ``override_schema()`` is the same options as a file
for its ``--schema-override`` (pungi 4.3.6 ``pungi/scripts/config_validate.py``
``make_final_schema``: ``pungi.checks.make_schema()``, then each file merged in with
``pungi.checks.update_schema``, which replaces leaf values and merges dicts key by key).
The repo ships it as ``conf/pungi/hostimage-schema.json``; ``python -m
koji_hostimage.pungi.schema`` prints it.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any, TextIO

PHASE_NAME = "hostimage"
ENGINES = ["rpm-ostree", "dnf"]

# Definitions the block refers to; pungi's make_schema() has all of them already.
_DEFINITIONS: dict[str, Any] = {
    "list_of_strings": {"type": "array", "items": {"type": "string"}},
    "strings": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "optional_string": {"anyOf": [{"type": "string"}, {"type": "null"}]},
}


def _one_or_list(value: dict[str, Any]) -> dict[str, Any]:
    """One ``value`` or a list of them (pungi.checks._one_or_list)."""
    return {"anyOf": [value, {"type": "array", "items": value}]}


def image_block_schema() -> dict[str, Any]:
    """One hostimage config block: what to build and how to record it."""
    return {
        "type": "object",
        "properties": {
            # What to build.
            "scm_url": {"type": "url"},
            "treefile": {"type": "string"},
            "target": {"type": "string"},
            "arches": {"$ref": "#/definitions/list_of_strings"},
            "failable": {"$ref": "#/definitions/list_of_strings"},
            "version": {"type": "string"},
            "release": {"$ref": "#/definitions/optional_string"},
            "repo": {"$ref": "#/definitions/strings"},
            # Read the build tag's repo too; by default the repos above replace it.
            "use_buildroot_repo": {"type": "boolean"},
            # How the compose records it.
            "subvariant": {"type": "string"},
            # Passed to hostImageBuild as opts under the same name.
            "name": {"type": "string"},
            "scratch": {"type": "boolean"},
            "skip_tag": {"type": "boolean"},
            "base_image": {"type": "string"},
            "delta_from": {
                "anyOf": [
                    {"type": "string", "enum": ["none"]},
                    {"type": "integer", "minimum": 0},
                    {"$ref": "#/definitions/list_of_strings"},
                ]
            },
            "engine": {"type": "string", "enum": list(ENGINES)},
            "sign_key": {"type": "string"},
        },
        "required": ["scm_url", "treefile"],
        "additionalProperties": False,
    }


def schema_properties() -> dict[str, Any]:
    """The top-level options: the phase block and its phase-level defaults."""
    return {
        "hostimage_target": {"type": "string"},
        "hostimage_release": {"$ref": "#/definitions/optional_string"},
        "hostimage_version": {"type": "string"},
        # The default of the blocks' use_buildroot_repo (pungi fills it in when unset).
        "hostimage_use_buildroot_repo": {"type": "boolean", "default": False},
        PHASE_NAME: {
            "type": "object",
            "patternProperties": {
                # Warning: this pattern is a variant uid regex, but the format does not
                # let us validate it: no regular expression describes all of them.
                ".+": _one_or_list(image_block_schema()),
            },
            "additionalProperties": False,
        },
    }


def extend_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the hostimage options to a pungi config schema (in place) and return it.

    Also lets ``skip_phases = ["hostimage"]`` validate: pungi builds that option's enum
    from its phase list, which may have been computed before the phase was registered.
    """
    definitions = schema.setdefault("definitions", {})
    for name, definition in _DEFINITIONS.items():
        definitions.setdefault(name, copy.deepcopy(definition))
    schema.setdefault("properties", {}).update(schema_properties())
    skip_phases = schema["properties"].get("skip_phases", {}).get("items", {})
    enum = skip_phases.get("enum")
    if enum is not None and PHASE_NAME not in enum:
        skip_phases["enum"] = list(enum) + [PHASE_NAME]
    return schema


def override_schema() -> dict[str, Any]:
    """The file for ``pungi-config-validate --schema-override``: the hostimage options.

    Only "properties": ``pungi.checks.update_schema`` merges it leaf by leaf, so
    anything else would overwrite pungi's own values. The blocks' ``$ref``s name
    definitions pungi's ``make_schema()`` has (``list_of_strings``, ``strings``,
    ``optional_string``, all in pungi 4.3.6). ``skip_phases`` is left alone: its enum is
    a list, which the merge would replace with one that misses pungi's own phases.
    """
    return {"properties": schema_properties()}


def dump_override_schema(stream: TextIO) -> None:
    """Write ``override_schema()`` as ``pungi-config-validate --dump-schema`` writes a
    schema (``json.dump`` with ``sort_keys=True, indent=4``, then a newline)."""
    json.dump(override_schema(), stream, sort_keys=True, indent=4)
    stream.write("\n")


if __name__ == "__main__":
    dump_override_schema(sys.stdout)
