# SPDX-License-Identifier: GPL-2.0-or-later
"""Property tests: any bytes or text as a treefile give a Treefile or a TreefileError,
nothing else, quickly (issue 13 item 2)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from koji_hostimage.errors import TreefileError
from koji_hostimage.treefile.keys import KEY_TYPES
from koji_hostimage.treefile.load import Treefile, load_treefile

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=12,
)


def _load(name: str, content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content)
        start = time.monotonic()
        try:
            result = load_treefile(path, "x86_64")
        except TreefileError as exc:
            assert "\n" not in str(exc).strip() or "Traceback" not in str(exc)
        else:
            assert isinstance(result, Treefile)
        assert time.monotonic() - start < 2


@SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(content: bytes) -> None:
    _load("t.yaml", content)


@SETTINGS
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=500)
       | st.text(alphabet="{}[]&*!|>-:?,'\"#%@` \n\tabyn01~.", max_size=300))
def test_arbitrary_text(content: str) -> None:
    _load("t.yaml", content.encode("utf-8", "surrogatepass"))
    _load("t.json", content.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(KEY_TYPES) + ["packages-s390x"]), json_values,
                       max_size=6))
def test_known_keys_with_arbitrary_values(data: dict) -> None:
    data.setdefault("ref", "r")
    data.setdefault("packages", ["p"])
    _load("t.json", json.dumps(data).encode())
