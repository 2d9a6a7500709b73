# SPDX-License-Identifier: GPL-2.0-or-later
"""The package layout keeps its promises (docs/architecture.md).

Read with the standard library's ``ast``, never by importing: every ``import`` inside
koji_hostimage (at module level, in functions, under ``if TYPE_CHECKING``) is an edge of
the import graph, and importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``.
The checks: no import cycle, each package imports only the packages the architecture
allows it, package ``__init__`` files import nothing, no library module over 600 lines,
the Koji plugins stay thin. Each check is also run on a small package made here that
breaks it, so it is shown to fail when it should.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "koji_hostimage"
MAX_MODULE_LINES = 600
MAX_PLUGIN_LINES = 400

# The shared modules at the top of the package: every stage may use them.
SHARED = frozenset({"errors", "fsutil", "runner", "manifest", "pkgdiff", "progress"})
# What each part may import, besides itself (docs/architecture.md, "What may import what").
# The stages in the order the data flows: treefile -> compose -> image -> serve.
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "fsutil": frozenset(),
    "runner": frozenset({"errors"}),
    "manifest": frozenset({"errors", "fsutil"}),
    "pkgdiff": frozenset({"manifest"}),
    "progress": frozenset(),
    "ostree": SHARED,
    "treefile": SHARED,
    "compose": SHARED | {"ostree", "treefile"},
    "image": SHARED | {"ostree"},
    "serve": SHARED | {"image"},
    "pipeline": SHARED | {"ostree", "treefile", "compose", "image"},
    "report": SHARED | {"image"},
    "koji": SHARED | {"image", "pipeline", "treefile"},
    "pungi": SHARED,
    "example": SHARED | {"ostree", "treefile", "compose", "image", "serve", "pipeline"},
    "commands": SHARED
    | {"ostree", "treefile", "compose", "image", "serve", "pipeline", "report"},
}


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` (under ``root``) by dotted name; packages by their
    own name (``a.b`` for ``a/b/__init__.py``)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The modules of the package that importing module ``name`` runs."""
    known = set(known)
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets.add(module)
            # `from a import b` imports the module a.b when there is one
            targets.update(f"{module}.{alias.name}" for alias in node.names)
    edges = set()
    for target in targets:
        parts = target.split(".")
        # importing a.b.c runs a, a.b and a.b.c
        edges.update(
            ".".join(parts[:end]) for end in range(1, len(parts) + 1)
            if ".".join(parts[:end]) in known
        )
    edges.discard(name)
    return edges


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    modules = module_files(root, package)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def part_of(module: str, package: str) -> str | None:
    """The part (top-level module or subpackage) ``module`` belongs to; None for the
    package's own __init__."""
    rest = module[len(package) + 1 :]
    return rest.split(".")[0] if rest else None


def layering_violations(
    graph: Mapping[str, set[str]], package: str, allowed: Mapping[str, frozenset[str]]
) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        part = part_of(module, package)
        if part is None:
            continue
        if part not in allowed:
            problems.append(f"{module}: part {part!r} is not in the architecture")
            continue
        for target in sorted(targets):
            other = part_of(target, package)
            if other not in (None, part) and other not in allowed[part]:
                problems.append(f"{module} imports {target}: {part} may not import {other}")
    return problems


def importing_inits(root: Path, package: str) -> list[str]:
    """Subpackage __init__ files that import something (they are kept empty, so that one
    module of a package can be imported without the rest of it)."""
    found = []
    for name, path in module_files(root, package).items():
        if path.name == "__init__.py" and name != package:
            tree = ast.parse(path.read_text())
            if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree)):
                found.append(name)
    return found


def long_files(paths: Iterable[Path], limit: int) -> list[str]:
    return [
        f"{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}:"
        f" {count} lines (at most {limit})"
        for path in paths
        if (count := len(path.read_text().splitlines())) > limit
    ]


# ------------------------------------------------------------------ the real package


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(REPO_ROOT, PACKAGE)


def test_the_graph_sees_every_kind_of_import(graph):
    # absolute, relative, deferred (inside a function) and the parent packages they run
    assert "koji_hostimage.compose.base" in graph["koji_hostimage.compose.engines"]
    assert "koji_hostimage.compose" in graph["koji_hostimage.compose.engines"]
    assert "koji_hostimage.errors" in graph["koji_hostimage.compose.engines"]
    assert "koji_hostimage.image.oci_writer" in graph["koji_hostimage.pipeline"]


def test_no_import_cycle_in_the_package(graph):
    assert import_cycles(graph) == []


def test_each_part_imports_only_what_the_architecture_allows(graph):
    assert layering_violations(graph, PACKAGE, ALLOWED) == []
    parts = {part_of(name, PACKAGE) for name in graph} - {None}
    assert parts == set(ALLOWED)  # a new part gets its line in ALLOWED and the docs


def test_subpackage_inits_import_nothing():
    assert importing_inits(REPO_ROOT, PACKAGE) == []


def test_no_library_module_over_600_lines():
    assert long_files(module_files(REPO_ROOT, PACKAGE).values(), MAX_MODULE_LINES) == []


def test_koji_plugins_stay_thin():
    plugins = sorted((REPO_ROOT / "plugins").glob("*/hostimage.py"))
    assert [p.parent.name for p in plugins] == ["builder", "cli", "hub"]
    assert long_files(plugins, MAX_PLUGIN_LINES) == []


# ------------------------------------------------------- the checks catch a bad layout


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checks_catch_a_package_that_breaks_them(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/errors.py": "",
        "pkg/stage/__init__.py": "from . import low\n",
        "pkg/stage/low.py": "def f():\n    from pkg.stage.high import g\n",
        "pkg/stage/high.py": "from .low import f\nfrom pkg import errors\n",
        "pkg/other/__init__.py": "",
        "pkg/other/user.py": "from ..stage import high\n",
        "pkg/big.py": "x = 1\n" * 601,
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.stage.low"] == {"pkg", "pkg.stage", "pkg.stage.high"}
    # low -> high (deferred) -> low, and each runs pkg.stage, whose __init__ imports low
    assert import_cycles(graph) == [["pkg.stage", "pkg.stage.high", "pkg.stage.low"]]
    allowed = {"errors": frozenset(), "big": frozenset(), "stage": frozenset({"errors"}),
               "other": frozenset()}
    assert layering_violations(graph, "pkg", allowed) == [
        "pkg.other.user imports pkg.stage: other may not import stage",
        "pkg.other.user imports pkg.stage.high: other may not import stage",
    ]
    assert importing_inits(tmp_path, "pkg") == ["pkg.stage"]
    assert long_files(module_files(tmp_path, "pkg").values(), 600) == [
        f"{tmp_path / 'pkg' / 'big.py'}: 601 lines (at most 600)"
    ]
