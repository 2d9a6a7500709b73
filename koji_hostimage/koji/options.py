# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``opts`` dict of a ``hostImageBuild`` task: its JSON Schema, defaults and checks.

One definition shared by the hub plugin (validates what clients send), the CLI plugin
(validates before calling the hub) and the builder plugin (reads the same key names).

Hubs are kept lean, so this module is pure data plus stdlib code: importing it pulls in
nothing. Only the validating functions need ``jsonschema``, imported when first called
(the hub and the CLI have it; a builder that only reads key names does not need it).

The schema keeps to keywords that mean the same in JSON Schema draft 4 and draft 7
(``enum`` rather than ``const``), so older hub hosts' jsonschema releases validate it the
same way.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

from koji_hostimage.errors import HostImageError

SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"

# Koji arch names (x86_64, aarch64, ppc64le, s390x, i686, riscv64...): letters, digits, '_'.
ARCH_PATTERN = r"^[A-Za-z0-9_]+$"
# Package (image) names: a conservative subset of what Koji accepts (no whitespace, '/').
NAME_PATTERN = r"^[A-Za-z0-9_+][A-Za-z0-9_.+-]*$"
# Version and release: rpm's characters, but no '-' (Koji splits N-V-R on the last two '-').
VERSION_PATTERN = r"^[A-Za-z0-9_.+~^]+$"
NVR_PATTERN = r"^[A-Za-z0-9_+][A-Za-z0-9_.+-]*-[A-Za-z0-9_.+~^]+-[A-Za-z0-9_.+~^]+$"
REPO_URL_PATTERN = r"^(https?|ftp)://[^\s/]+\S*$"
# A registry reference with skopeo's docker:// transport, copied by the builder as given.
# Local transports (oci-archive:, dir:, ...) would read files of the builder host: they are
# for the builder's own config only, so the hub refuses them before a task is queued.
BASE_IMAGE_PATTERN = r"^docker://\S+$"
SIGN_KEY_PATTERN = r"^(0x)?[0-9A-Fa-f]{8,40}$"
# Every pattern above ends in '$', which Python's re (python-jsonschema's `pattern`: a
# re.search) also matches before a trailing newline, where ECMA 262 does not. So every
# string option also carries this "not": a control character anywhere (newline, NUL...)
# refuses it, and the schema means the same to every validator.
CONTROL_CHARACTERS = "[\\x00-\\x1f\\x7f]"
NO_CONTROL_CHARACTERS: dict[str, Any] = {"pattern": CONTROL_CHARACTERS}
ENGINES = ("rpm-ostree", "dnf")
MAX_DELTA_COUNT = 10


def _arch_list(description: str) -> dict[str, Any]:
    return {
        "type": "array",
        "description": description,
        "minItems": 1,
        "uniqueItems": True,
        "items": {
            "type": "string",
            "description": "a Koji arch name such as x86_64 (letters, digits, '_';"
            " not noarch or src)",
            "pattern": ARCH_PATTERN,
            "not": {"anyOf": [{"enum": ["noarch", "src"]}, NO_CONTROL_CHARACTERS]},
        },
    }


# "description" is phrased as what is expected: error messages quote it
# ("option 'version': expected <description>, got ...").
OPTIONS_SCHEMA: dict[str, Any] = {
    "$schema": SCHEMA_DIALECT,
    "$id": "https://koji-hostimage.invalid/schemas/hostimage-build-opts.json",
    "title": "hostImageBuild opts",
    "description": "a dict of hostImageBuild options",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "arches": _arch_list(
            "a non-empty list of distinct Koji arch names such as x86_64 or aarch64"
            " (default: the build tag's arches)"
        ),
        "failable_arches": _arch_list(
            "a non-empty list of distinct Koji arch names, each also built, whose"
            " failure does not fail the build (kiwi calls these optional_arches)"
        ),
        "scratch": {"type": "boolean", "description": "true or false"},
        "skip_tag": {"type": "boolean", "description": "true or false"},
        "name": {
            "type": "string",
            "maxLength": 200,
            "pattern": NAME_PATTERN,
            "not": NO_CONTROL_CHARACTERS,
            "description": "a Koji package name (letters, digits and _.+- ; not starting"
            " with '.' or '-')",
        },
        "version": {
            "type": "string",
            "maxLength": 100,
            "pattern": VERSION_PATTERN,
            "not": NO_CONTROL_CHARACTERS,
            "description": "a version: letters, digits and _.+~^ (no '-')",
        },
        "release": {
            "type": "string",
            "maxLength": 100,
            "pattern": VERSION_PATTERN,
            "not": NO_CONTROL_CHARACTERS,
            "description": "a release: letters, digits and _.+~^ (no '-')",
        },
        "repo": {
            "type": "array",
            "description": "a list of http(s):// or ftp:// repository URLs ($arch and"
            " $basearch are substituted per arch)",
            "items": {
                "type": "string",
                "description": "an http(s):// or ftp:// repository URL",
                "maxLength": 2048,
                "pattern": REPO_URL_PATTERN,
                "not": NO_CONTROL_CHARACTERS,
            },
        },
        "use_buildroot_repo": {
            "type": "boolean",
            "description": "true or false: whether the build tag's repo is read too when"
            " 'repo' lists repos (default: only when 'repo' lists none)",
        },
        "base_image": {
            "type": "string",
            "maxLength": 2048,
            "pattern": BASE_IMAGE_PATTERN,
            "not": NO_CONTROL_CHARACTERS,
            "description": "a registry image reference with skopeo's docker:// transport,"
            " e.g. docker://quay.io/fedora/fedora-minimal:42",
        },
        "delta_from": {
            "description": "'none', a count of earlier builds from 0 to"
            f" {MAX_DELTA_COUNT}, or a non-empty list of build NVRs"
            " (name-version-release)",
            "oneOf": [
                {"type": "string", "enum": ["none"]},
                {"type": "integer", "minimum": 0, "maximum": MAX_DELTA_COUNT},
                {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"type": "string", "maxLength": 400, "pattern": NVR_PATTERN,
                              "not": NO_CONTROL_CHARACTERS},
                },
            ],
        },
        "engine": {
            "type": "string",
            "enum": list(ENGINES),
            "description": "one of " + ", ".join(repr(e) for e in ENGINES),
        },
        "sign_key": {
            "type": "string",
            "pattern": SIGN_KEY_PATTERN,
            "not": NO_CONTROL_CHARACTERS,
            "description": "a GPG key id: 8 to 40 hex digits, optionally with 0x",
        },
    },
}

# What a missing key means. The builder plugin reads opts through with_defaults(), so the
# hub only stores what the user actually asked for. None means "decided elsewhere":
# arches -> the build tag's arches, name -> from the treefile, version -> the next free
# version of automatic-version-prefix or the UTC date (set by the parent task, before
# fan-out), release -> the next free release in Koji, use_buildroot_repo -> only when
# 'repo' is empty (koji's kiwi plugin and koji-image-builder: given repos replace it),
# base_image, delta_from, engine, sign_key -> the builder's hostimage.conf.
OPTION_DEFAULTS: dict[str, Any] = {
    "arches": None,
    "failable_arches": [],
    "scratch": False,
    "skip_tag": False,
    "name": None,
    "version": None,
    "release": None,
    "repo": [],
    "use_buildroot_repo": None,
    "base_image": None,
    "delta_from": None,
    "engine": None,
    "sign_key": None,
}

OPTION_NAMES: tuple[str, ...] = tuple(OPTIONS_SCHEMA["properties"])

# Task methods and their positional arguments, the same on hub and builder. The hub
# registers them in koji.tasks.LEGACY_SIGNATURES (policy_signatures) so policies see
# target and scratch; the child's arguments follow kiwi's createKiwiImage.
PARENT_TASK_METHOD = "hostImageBuild"
CHILD_TASK_METHOD = "createHostImage"
PARENT_TASK_ARGS: tuple[str, ...] = ("target", "scm_url", "treefile", "opts")
CHILD_TASK_ARGS: tuple[str, ...] = (
    "name",
    "version",
    "release",
    "arch",
    "target_info",
    "build_tag",
    "repo_info",
    "scm_url",
    "treefile",
    "opts",
)


TASK_METHODS = (PARENT_TASK_METHOD, CHILD_TASK_METHOD)


def task_param_lines(method: str, request: list[Any]) -> list[str]:
    """What `koji taskinfo` prints under "Request Parameters" for the two methods, in
    koji_cli's own style ("Build Target: ...", options one per line)."""
    names = PARENT_TASK_ARGS if method == PARENT_TASK_METHOD else CHILD_TASK_ARGS
    values = dict(zip(names, request, strict=False))
    labels = {"target": "Build Target", "scm_url": "SCM URL", "treefile": "Treefile",
              "name": "Name", "version": "Version", "release": "Release", "arch": "Arch",
              "build_tag": "Build Tag"}
    lines = []
    for key, label in labels.items():
        if key in values:
            lines.append(f"{label}: {values[key]}")
    if isinstance(values.get("target_info"), dict):
        lines.append(f"Build Target: {values['target_info'].get('name')}")
    if isinstance(values.get("repo_info"), dict):
        lines.append(f"Repo: {values['repo_info'].get('id')}")
    opts = values.get("opts") or {}
    if isinstance(opts, dict):
        for key in sorted(opts):
            lines.append(f"Option {key}: {opts[key]}")
    return lines


def policy_signatures() -> dict[str, list[list[Any]]]:
    """``koji.tasks.LEGACY_SIGNATURES`` entries for both task methods.

    Each is ``[args, varargs, varkw, defaults]`` with opts defaulting to None. kojihub's
    ``policy_data_from_task_args`` (koji-project/koji kojihub/kojihub.py) reads these
    names: 'target' (or 'target_info') gives the policy data's target, opts['scratch'] its
    scratch flag, and a 'src', 'spec_url' or 'url' parameter its source. So scm_url is
    named 'url' here, which lets `source` policy tests match the SCM URL (tasks still pass
    arguments by position, and only the hub parses them: kojid does not).
    """
    return {
        method: [[["url" if name == "scm_url" else name for name in args], None, None, (None,)]]
        for method, args in (
            (PARENT_TASK_METHOD, PARENT_TASK_ARGS),
            (CHILD_TASK_METHOD, CHILD_TASK_ARGS),
        )
    }


class OptionsError(HostImageError):
    """The opts dict of a hostImageBuild call is invalid; one line per problem."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("invalid hostImageBuild opts:\n" + "\n".join(self.problems))


def with_defaults(opts: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return ``opts`` with every known key present (defaults for missing ones)."""
    merged = copy.deepcopy(OPTION_DEFAULTS)
    merged.update(copy.deepcopy(dict(opts or {})))
    return merged


def option_errors(opts: Any) -> list[str]:
    """Every problem with ``opts``, one message each naming the option; [] when valid."""
    import jsonschema  # deferred: see the module docstring

    validator_class = jsonschema.validators.validator_for(OPTIONS_SCHEMA)
    validator = validator_class(OPTIONS_SCHEMA)
    problems = [_describe(error) for error in validator.iter_errors(opts)]
    if not problems:
        problems = _cross_field_errors(opts)
    return sorted(set(problems))


def validate_opts(opts: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``opts`` (None means no options); return a plain copy or raise OptionsError."""
    checked = {} if opts is None else opts
    problems = option_errors(checked)
    if problems:
        raise OptionsError(problems)
    return copy.deepcopy(dict(checked))


def _cross_field_errors(opts: Mapping[str, Any]) -> list[str]:
    """Rules JSON Schema cannot state: between two keys, and Python's types."""
    problems = []
    delta_from = opts.get("delta_from")
    if isinstance(delta_from, float):
        # draft 6+ counts 2.0 as an integer (JSON has one number type); a count is an int
        expected = OPTIONS_SCHEMA["properties"]["delta_from"]["description"]
        problems.append(f"option 'delta_from': expected {expected}, got {_show(delta_from)}")
    arches = opts.get("arches")
    failable = opts.get("failable_arches")
    if arches and failable:
        missing = [arch for arch in failable if arch not in arches]
        if missing:
            problems.append(
                f"option 'failable_arches': expected only arches also listed in 'arches'"
                f" ({', '.join(arches)}), got {', '.join(missing)}"
            )
    return problems


def _describe(error: Any) -> str:
    """Turn one jsonschema ValidationError into 'option X: expected ..., got ...'.

    jsonschema's own messages name neither the option nor what it should be, so this
    reads the error's path (``error.absolute_path``: key, then list index) and the
    "description" of the option's schema.
    """
    path = list(error.absolute_path)
    if not path:
        return _describe_top_level(error)
    key = str(path[0])
    where = f"option {key!r}"
    if len(path) > 1:
        where += " item " + "".join(f"[{part}]" for part in path[1:])
    # The failing subschema's own description when it has one (a list item), else the
    # option's: both say what is expected.
    option_schema = OPTIONS_SCHEMA["properties"].get(key, {})
    expected = error.schema.get("description") or option_schema.get("description", error.message)
    return f"{where}: expected {expected}, got {_show(error.instance)}"


def _describe_top_level(error: Any) -> str:
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(OPTION_NAMES), key=str)
        return (
            f"unknown option(s) {', '.join(repr(key) for key in unknown)}:"
            f" expected only {', '.join(OPTION_NAMES)}"
        )
    return f"opts: expected {OPTIONS_SCHEMA['description']}, got {_show(error.instance)}"


def _show(value: Any) -> str:
    """A short, unambiguous rendering of a bad value for an error message."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def treefile_path_error(treefile: str) -> str | None:
    """Why ``treefile`` is not a path inside the SCM checkout, or None when it is.

    One rule for the hub (refused before a task is queued) and the builder (which also
    follows symlinks on its side): relative, '/'-separated, and not leading out of the
    checkout once normalised ('os/../host.yaml' is fine, 'os/../../host.yaml' is not).
    """
    if not isinstance(treefile, str):
        return f"treefile: expected a relative path (a string), got {_show(treefile)}"
    normal = posixpath.normpath(treefile)
    if (not treefile or posixpath.isabs(treefile) or "\\" in treefile
            or normal in (".", "..") or normal.startswith("../") or treefile.endswith("/")
            or any(ord(char) < 0x20 or ord(char) == 0x7F for char in treefile)):
        return (
            "treefile: expected a relative path inside the SCM checkout, naming a file"
            " (not empty, no leading '/', no way out through '..', no control characters),"
            f" got {treefile!r}"
        )
    return None
