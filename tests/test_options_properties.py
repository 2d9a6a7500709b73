# SPDX-License-Identifier: GPL-2.0-or-later
"""Property tests for the hub's option validation (koji_hostimage/koji/options.py).

Arbitrary opts give either a valid copy or OptionsError whose every line names the
option at fault, never another exception; valid opts never carry a control character.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from koji_hostimage.koji import options

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Good values, so that valid opts are generated often, with hostile tails added.
GOOD = {
    "arches": [["x86_64"], ["x86_64", "aarch64"]],
    "failable_arches": [["aarch64"]],
    "scratch": [True, False],
    "skip_tag": [True],
    "name": ["host", "fedora-coreos"],
    "version": ["42.1", "1"],
    "release": ["1", "2.fc42"],
    "repo": [["https://repo.example.com/os/$arch/"], []],
    "use_buildroot_repo": [True],
    "base_image": ["docker://quay.io/fedora/fedora-minimal:42"],
    "delta_from": ["none", 0, 3, ["host-42.1-1"]],
    "engine": ["dnf", "rpm-ostree"],
    "sign_key": ["0xDEADBEEF", "0123456789abcdef"],
}
TAILS = st.sampled_from(["", "", "\n", "\r\n", "\x00", "\x00../../x", "\t", "\x7f", " ",
                         "\u2028"])
json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=True) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)


def _with_tail(value: Any, tail: str) -> Any:
    if isinstance(value, str):
        return value + tail
    if isinstance(value, list) and value and isinstance(value[0], str):
        return [value[0] + tail, *value[1:]]
    return value


@st.composite
def opts_dicts(draw) -> Any:
    keys = draw(st.lists(st.sampled_from(options.OPTION_NAMES), max_size=6, unique=True))
    opts: dict[Any, Any] = {}
    for key in keys:
        if draw(st.integers(0, 4)) == 0:
            opts[key] = draw(json_values)
        else:
            opts[key] = _with_tail(draw(st.sampled_from(GOOD[key])), draw(TAILS))
    if draw(st.integers(0, 9)) == 0:
        opts[draw(st.text(max_size=10) | st.integers())] = draw(json_values)
    return opts


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)


def _check(opts: Any) -> None:
    try:
        checked = options.validate_opts(opts)
    except options.OptionsError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert "\n" not in problem
            assert problem.startswith(("option '", "unknown option(s) ", "opts: expected")), \
                problem
        return
    assert isinstance(checked, dict)
    for text in _strings(checked):
        assert not CONTROL.search(text), checked
    delta_from = checked.get("delta_from")
    assert not isinstance(delta_from, float)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(opts_dicts())
def test_opts_are_valid_or_an_options_error(opts):
    _check(opts)


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_anything_at_all_is_valid_or_an_options_error(opts):
    _check(opts)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40) | st.sampled_from(["host.yaml", "os/host.yaml", "./host.yaml"])
       .flatmap(lambda good: TAILS.map(lambda tail: good + tail)))
def test_treefile_paths_accepted_are_relative_files_without_controls(treefile):
    problem = options.treefile_path_error(treefile)
    if problem is not None:
        assert problem.startswith("treefile: expected") and "\n" not in problem.replace(
            repr(treefile), "")
        return
    assert treefile and not CONTROL.search(treefile) and not treefile.startswith("/")
    assert not treefile.endswith("/") and "\\" not in treefile
    parts = [p for p in treefile.split("/") if p not in ("", ".")]
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else 1
        assert depth >= 0, treefile
    assert depth >= 1


@pytest.mark.parametrize("treefile", ["host.yaml", "os/host.yaml", "os/../host.yaml"])
def test_ordinary_treefile_paths_pass(treefile):
    assert options.treefile_path_error(treefile) is None
