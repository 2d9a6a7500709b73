# SPDX-License-Identifier: GPL-2.0-or-later
"""Treefile ``variables``, ``conditional-include`` conditions and ``${var}`` substitution.

Mirrors coreos/rpm-ostree ``rust/src/treefile.rs``:

- ``VarValue``: a variable is a boolean, an unsigned integer or a string;
  ``treefile_parse_stream`` adds ``basearch`` and ``releasever`` to each file's
  variables and refuses a file that defines either itself ("cannot define reserved
  variable").
- ``IncludeCondition`` (its ``Deserialize`` impl): one condition is
  ``VAR OP VALUE`` with VAR of ``[[:alnum:]_]+``, OP one of ``== != > >= < <=`` and VALUE
  ``true``, ``false``, digits or a double-quoted string. There is no ``in``.
  ``IncludeCondition::evaluate``: an undefined variable, a value of another type than the
  variable's, and an ordering operator on non-numbers are errors; a list of conditions
  is their AND, every one evaluated (so errors surface even after a false one).
- ``substitute_vars``: ``${var}`` is expanded in ``ref``, the string values of
  ``metadata`` and ``add-commit-metadata``, ``automatic-version-prefix``,
  ``mutate-os-release``, ``platform-module`` and ``rojig`` name/summary/description, and
  nowhere else (not in packages or postprocess). envsubst leaves an unknown ``${name}``
  as it is; we refuse it, naming it (it would otherwise end up in a ref or a version).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from koji_hostimage.errors import TreefileError

from .document import describe

VarValue = bool | int | str

RESERVED_VARIABLES = ("basearch", "releasever")
_CONDITION = re.compile(
    r'^\s*(?P<var>[A-Za-z0-9_]+)\s*(?P<op>\S+)\s*'
    r'(?:(?P<true>true)|(?P<false>false)|(?P<number>[0-9]+)|"(?P<string>.*)")\s*$'
)
OPERATORS = ("==", "!=", ">", ">=", "<", "<=")
_VAR_REF = re.compile(r"\$\{([^}]*)\}")
#: The fields ``substitute_vars`` expands (the map ones: their string values only).
SUBSTITUTED_STRINGS = ("ref", "automatic-version-prefix", "mutate-os-release",
                       "platform-module")
SUBSTITUTED_MAPS = ("metadata", "add-commit-metadata")


@dataclass(frozen=True)
class Condition:
    variable: str
    op: str
    value: VarValue


def show(value: VarValue) -> str:
    """``VarValue``'s Display: true/false, digits, the bare string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_variables(path: Path, value: Any) -> dict[str, VarValue]:
    """A file's ``variables`` mapping: names to booleans, unsigned integers or strings."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TreefileError(path, "variables", "a mapping of names to values", describe(value))
    for name, item in value.items():
        if name in RESERVED_VARIABLES:
            raise TreefileError(path, f"variables.{name}", "no reserved variable "
                                "(basearch and releasever are set by rpm-ostree)", repr(name))
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise TreefileError(path, f"variables.{name}", "a name of letters, digits and _",
                                repr(name))
        ok = isinstance(item, (bool, str)) or (isinstance(item, int) and item >= 0)
        if not ok:
            raise TreefileError(path, f"variables.{name}",
                                "a boolean, a non-negative integer or a string", describe(item))
        if isinstance(item, str) and any(ch in item for ch in "${}"):
            # envsubst::validate_vars refuses these characters in values.
            raise TreefileError(path, f"variables.{name}", "a value without $, { or }",
                                repr(item))
    return dict(value)


def parse_condition(path: Path, key: str, text: Any) -> Condition:
    if not isinstance(text, str):
        raise TreefileError(path, key, 'a condition such as basearch == "x86_64"',
                            describe(text))
    match = _CONDITION.match(text)
    if match is None:
        raise TreefileError(path, key, 'a condition VAR OP VALUE (VALUE: true, false, digits '
                            'or "string")', f"invalid condition {text!r}")
    op = match["op"]
    if op not in OPERATORS:
        raise TreefileError(path, key, f"one of {', '.join(OPERATORS)}", repr(op))
    value: VarValue
    if match["true"] is not None:
        value = True
    elif match["false"] is not None:
        value = False
    elif match["number"] is not None:
        value = int(match["number"])
    else:
        value = match["string"]
    return Condition(match["var"], op, value)


def _same_type(a: VarValue, b: VarValue) -> bool:
    kinds = (bool, int, str)
    return next(k for k in kinds if isinstance(a, k)) is next(k for k in kinds if isinstance(b, k))


def evaluate(path: Path, key: str, condition: Condition, variables: dict[str, VarValue]) -> bool:
    """``IncludeCondition::evaluate``."""
    if condition.variable not in variables:
        raise TreefileError(path, key, "a condition on a defined variable",
                            f"undefined variable {condition.variable!r}")
    have = variables[condition.variable]
    want = condition.value
    if not _same_type(have, want):
        raise TreefileError(path, key, f"a value of the same type as {condition.variable} "
                            f"({show(have)!r})", show(want))
    if condition.op == "==":
        return have == want
    if condition.op == "!=":
        return have != want
    if isinstance(have, bool) or not isinstance(have, int):
        raise TreefileError(path, key, f"{condition.op} only between numbers",
                            f"{show(have)!r} {condition.op} {show(want)!r}")
    assert isinstance(want, int)
    return {">": have > want, ">=": have >= want, "<": have < want, "<=": have <= want}[
        condition.op]


def conditions_match(path: Path, key: str, value: Any, variables: dict[str, VarValue]) -> bool:
    """``if:``: one condition, or a list (all must hold; every one is evaluated)."""
    if isinstance(value, list):
        results = [evaluate(path, f"{key}[{i}]", parse_condition(path, f"{key}[{i}]", c),
                            variables) for i, c in enumerate(value)]
        return all(results)
    return evaluate(path, key, parse_condition(path, key, value), variables)


def _expand(path: Path, key: str, text: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            known = ", ".join(sorted(values))
            raise TreefileError(path, key, f"variables that are defined ({known})",
                                f"undefined variable {name!r} in {text!r}")
        return values[name]

    return _VAR_REF.sub(one, text)


def substitute_vars(path: Path, data: dict[str, Any], variables: dict[str, VarValue]) -> None:
    """``TreeComposeConfig::substitute_vars``: in place, in the fields it lists only."""
    values = {name: show(value) for name, value in variables.items()}
    for key in SUBSTITUTED_STRINGS:
        if isinstance(data.get(key), str):
            data[key] = _expand(path, key, data[key], values)
    for key in SUBSTITUTED_MAPS:
        mapping = data.get(key)
        if isinstance(mapping, dict):
            data[key] = {
                name: _expand(path, f"{key}.{name}", item, values) if isinstance(item, str)
                else item
                for name, item in mapping.items()
            }
    rojig = data.get("rojig")
    if isinstance(rojig, dict):
        for name in ("name", "summary", "description"):
            if isinstance(rojig.get(name), str):
                rojig[name] = _expand(path, f"rojig.{name}", rojig[name], values)
