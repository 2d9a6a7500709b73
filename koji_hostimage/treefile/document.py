# SPDX-License-Identifier: GPL-2.0-or-later
"""Read one treefile document (YAML 1.2 or JSON) into plain data, within hard limits.

rpm-ostree reads treefiles with serde_yaml / serde_json (``utils::parse_stream`` called
from ``treefile_parse_stream`` in ``rust/src/treefile.rs``; the format comes from the
file name, ``InputFormat::detect_from_filename``). serde_yaml follows YAML 1.2, so we
read YAML with the YAML 1.2 *core schema*, not PyYAML's YAML 1.1 rules:

- ``yes``/``no``/``on``/``off`` stay strings; only ``true``/``false`` (any case form of
  the core schema) are booleans;
- ``0755`` is the decimal integer 755 (octal needs ``0o755``, hex ``0x1ed``);
- ``2024-01-01`` is a string (serde has no timestamp type), ``1_000`` is a string, and
  ``<<`` is an ordinary key (no YAML 1.1 merge keys).

Kickstart treefiles (``.ks``, which rpm-ostree turns into a treefile with
``TreeComposeConfig::from_kickstart``) are refused with that reason.

Hostile input gets a one-line ``TreefileError`` rather than a traceback or an exhausted
machine: files over ``MAX_TREEFILE_BYTES``, nesting deeper than ``MAX_DEPTH`` and more
than ``MAX_NODES`` nodes once aliases are expanded (a "billion laughs" is refused while
it is composed, before any of it is expanded) are refused; so are recursive aliases and
values that are not plain data (``!!binary``, ``!!timestamp``, non-string keys).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from koji_hostimage.errors import TreefileError

MAX_TREEFILE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 200_000
SUFFIXES = (".yaml", ".yml", ".json")


class _LimitError(yaml.YAMLError):
    def __init__(self, problem: str, mark: Any = None):
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader with the YAML 1.2 core schema, unique keys and size limits."""

    yaml_implicit_resolvers: dict = {}  # replaced below: YAML 1.2 core schema only

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._weights: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        mark = self.peek_event().start_mark
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _LimitError(f"nesting deeper than {MAX_DEPTH} levels", mark)
        try:
            is_alias = self.check_event(yaml.AliasEvent)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if is_alias:
            if id(node) not in self._weights:
                raise _LimitError("a recursive alias (an anchor used inside itself)", mark)
            return node
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        weight = 1 + sum(self._weights.get(id(child), 1) for child in children)
        if weight > MAX_NODES:
            raise _LimitError(
                f"more than {MAX_NODES} nodes with aliases expanded (an alias bomb?)", mark
            )
        self._weights[id(node)] = weight
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # SafeLoader reports unhashable keys itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml12_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        return sign * int(digits, 10)

    def construct_as_string(self, node: yaml.ScalarNode) -> str:
        return str(self.construct_scalar(node))


# The YAML 1.2 core schema's tag resolution (yaml.org/spec/1.2.2, section 10.3.2).
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"),
)
Yaml12Loader.add_constructor("tag:yaml.org,2002:int", Yaml12Loader.construct_yaml12_int)
Yaml12Loader.add_constructor("tag:yaml.org,2002:timestamp", Yaml12Loader.construct_as_string)


def read_document(path: Path) -> dict[str, Any]:
    """The top-level mapping of treefile ``path`` as plain JSON-shaped data."""
    suffix = path.suffix.lower()
    if suffix == ".ks":
        raise TreefileError(
            path, None, "a .yaml, .yml or .json treefile",
            "a kickstart (.ks) file: rpm-ostree's kickstart treefiles are not supported; "
            "write the %packages as a YAML treefile's packages / exclude-packages",
        )
    if suffix not in SUFFIXES:
        raise TreefileError(path, None, "a .yaml, .yml or .json treefile", f"suffix {suffix!r}")
    text = _read_text(path)
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TreefileError(
                path, None, "valid JSON", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        except (RecursionError, ValueError) as exc:
            raise TreefileError(path, None, "valid JSON", _one_line(exc)) from None
    else:
        try:
            data = yaml.load(text, Loader=Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise TreefileError(path, None, "valid YAML", _yaml_problem(exc)) from None
        except (RecursionError, ValueError, TypeError, OverflowError) as exc:
            raise TreefileError(path, None, "valid YAML", _one_line(exc)) from None
    if not isinstance(data, dict):
        raise TreefileError(path, None, "a mapping at the top level", type_name(data))
    check_plain(path, data, "", 0)
    return data


def _read_text(path: Path) -> str:
    try:
        if not path.is_file():
            raise TreefileError(path, None, "an existing treefile", "no such file")
        with path.open("rb") as handle:
            raw = handle.read(MAX_TREEFILE_BYTES + 1)
    except OSError as exc:
        raise TreefileError(path, None, "a readable file", exc.strerror or str(exc)) from None
    if len(raw) > MAX_TREEFILE_BYTES:
        raise TreefileError(path, None, f"a treefile of at most {MAX_TREEFILE_BYTES} bytes",
                            "a larger file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TreefileError(path, None, "a UTF-8 file", str(exc)) from None


def check_plain(path: Path, value: Any, where: str, depth: int) -> None:
    """Refuse anything but JSON-shaped data (string keys; no bytes, dates, sets)."""
    if depth > MAX_DEPTH:
        raise TreefileError(path, where or None, f"nesting of at most {MAX_DEPTH} levels",
                            "deeper nesting")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TreefileError(path, where or None, "string keys",
                                    f"{type_name(key)} {key!r}")
            check_plain(path, item, f"{where}.{key}" if where else key, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_plain(path, item, f"{where}[{index}]", depth + 1)
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        raise TreefileError(path, where or None, "plain data (strings, numbers, booleans, "
                            "lists, mappings)", type_name(value))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    problem = _one_line(problem)
    if mark is not None:
        return f"{problem} at line {mark.line + 1} column {mark.column + 1}"
    return problem


def _one_line(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 200 else text[:197] + "..."


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def describe(value: Any) -> str:
    if isinstance(value, (dict, list)) or value is None:
        return type_name(value)
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type_name(value)} {text}"
