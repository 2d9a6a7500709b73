# SPDX-License-Identifier: GPL-2.0-or-later
"""rpm-ostree treefiles: load, resolve includes, merge, validate, substitute variables.

The semantics follow rpm-ostree's own loader (coreos/rpm-ostree ``rust/src/treefile.rs``):

- ``treefile_parse_recurse``: a file's ``include`` (string or list) and then its
  ``arch-include[basearch]`` are loaded relative to the including file and merged into it,
  one after the other; a file may be read only once (rpm-ostree refuses any repeat with
  "Include loop detected"), and the depth is capped at ``INCLUDE_MAXDEPTH`` = 50.
- ``treefile_merge``: for "basic" (scalar) fields the includer wins (``merge_basic_field``);
  vector fields are concatenated, the included file's items first (``merge_vec_field``);
  map fields are merged like ``dict.update`` with the includer winning
  (``merge_map_field``); ``packages`` is a set (``merge_hashset_field`` over a BTreeSet),
  so it ends up sorted and without duplicates.
- ``treefile_parse_stream`` / ``take_archful_pkgs``: each file's ``packages-$basearch``
  is folded into its ``packages`` before merging; items are split on whitespace
  (``whitespace_split_packages``).
- ``substitute_vars``: ``${basearch}`` and ``${releasever}`` are expanded once the whole
  tree is merged (we expand them in every string value; unknown ``${vars}`` stay as they are).

Unknown keys pass through untouched (rpm-ostree knows more keys than we do).

Every file a treefile names is confined to a source root (the SCM checkout in Koji; by
default the top-level treefile's directory): the top-level file, ``include``,
``arch-include``, ``postprocess-script``, ``add-files`` sources and ``check-passwd`` /
``check-groups`` of ``type: file`` must resolve, symlinks followed, inside it. rpm-ostree
itself joins each name onto the naming file's directory (``Path::join`` in
``treefile_parse_recurse``, ``with_file_name`` in ``treefile_parse``, ``load_passwd_file``),
so an absolute name or ``../`` reads anything on the builder; we refuse those before
opening them, so builder files cannot end up in a published image.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from koji_hostimage.errors import TreefileError

log = logging.getLogger(__name__)

KNOWN_ARCHES = ("x86_64", "aarch64", "ppc64le", "s390x", "i686", "armhfp")
INCLUDE_MAXDEPTH = 50  # rpm-ostree's INCLUDE_MAXDEPTH

# rpm-ostree's BootLocation enum (serde kebab-case): New, Modules, KernelInstall.
BOOT_LOCATIONS = ("new", "modules", "kernel-install")

# Fields treefile_merge() treats as vectors (concatenated, included items first).
VEC_FIELDS = frozenset(
    {
        "repos",
        "lockfile-repos",
        "exclude-packages",
        "ostree-layers",
        "ostree-override-layers",
        "install-langs",
        "initramfs-args",
        "units",
        "etc-group-members",
        "postprocess",
        "add-files",
        "remove-files",
        "remove-from-packages",
        "repo-packages",
        "cliwrap-binaries",
    }
)
# Fields treefile_merge() treats as sets (union, sorted).
SET_FIELDS = frozenset(
    {"packages", "bootstrap-packages", "ignore-removed-users", "ignore-removed-groups"}
)
# Fields treefile_merge() treats as maps (dict.update, includer wins).
MAP_FIELDS = frozenset({"add-commit-metadata", "variables", "metadata", "repovars"})

_STRING_LIST_KEYS = ("packages", "repos", "exclude-packages", "units")
_STRING_KEYS = ("automatic-version-prefix", "default-target", "postprocess-script")
# rpm-ostree's CheckPasswd / CheckGroups: with ``type: file`` they name a file
# (``CheckFile.filename``) that ``treefile_parse`` opens via ``load_passwd_file``.
CHECK_FILE_KEYS = ("check-passwd", "check-groups")

_VAR_RE = re.compile(r"\$\{(basearch|releasever)\}")


@dataclass
class Treefile:
    path: Path  # the top-level treefile
    basearch: str
    data: dict[str, Any]  # fully resolved (includes merged, arch keys folded, vars expanded)
    files: list[Path] = field(default_factory=list)  # every file read, top-level first
    # External files by the key that names them: "postprocess-script", "check-passwd",
    # "check-groups" -> absolute path; "add-files" -> list of absolute source paths, in the
    # order of data["add-files"].
    externals: dict[str, Any] = field(default_factory=dict)
    # Every file read must resolve inside this directory (resolved); None: the directory.
    root: Path | None = None

    @property
    def ref(self) -> str:
        return self.data["ref"]

    @property
    def packages(self) -> list[str]:
        return list(self.data.get("packages", []))

    @property
    def repos(self) -> list[str]:
        return list(self.data.get("repos", []))

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def source_root(self) -> Path:
        return self.root if self.root is not None else self.directory.resolve()

    @property
    def postprocess_script(self) -> Path | None:
        return self.externals.get("postprocess-script")


# ---------------------------------------------------------------------------------------
# Loading


@dataclass
class _Parsed:
    """One file's content plus the external files it names (absolute paths)."""

    data: dict[str, Any]
    postprocess_script: Path | None = None
    add_files: list[Path] = field(default_factory=list)
    checks: dict[str, Path] = field(default_factory=dict)  # check-passwd/-groups files


def load_treefile(path: Path, basearch: str, root: Path | None = None) -> Treefile:
    """Load ``path`` for ``basearch``: includes merged, arch keys folded, vars expanded.

    Every file it names must resolve inside ``root`` (default: the directory of ``path``),
    ``path`` itself included; see the module docstring.
    """
    path = Path(path).absolute()
    if basearch not in KNOWN_ARCHES:
        raise TreefileError(path, None, f"a basearch among {', '.join(KNOWN_ARCHES)}", basearch)
    source_root = _source_root(path, root)
    confine(source_root, path, None, path, path)
    files: list[Path] = []
    parsed = _parse_recursive(
        path, basearch, source_root, chain=[], seen={path.resolve()}, files=files
    )
    data = parsed.data
    _validate_merged(path, data)
    data["packages"] = sorted(set(data["packages"]))  # a set in rpm-ostree (BTreeSet)
    data = _substitute(data, variables(basearch, data))
    externals: dict[str, Any] = {}
    if parsed.postprocess_script is not None:
        externals["postprocess-script"] = parsed.postprocess_script
        files.append(parsed.postprocess_script)
        # Record the script relative to the top-level directory: the resolved data is hashed
        # and must not depend on where the SCM checkout happens to live.
        data["postprocess-script"] = relative_to(parsed.postprocess_script, path.parent)
    if parsed.add_files:
        externals["add-files"] = list(parsed.add_files)
        files.extend(parsed.add_files)
        data["add-files"] = [
            [relative_to(src, path.parent), pair[1]]
            for src, pair in zip(parsed.add_files, data["add-files"], strict=True)
        ]
    for key in CHECK_FILE_KEYS:
        source = parsed.checks.get(key)
        if source is not None and _names_check_file(data.get(key)):
            externals[key] = source
            files.append(source)
            data[key] = {**data[key], "filename": relative_to(source, path.parent)}
    log.debug("loaded treefile %s for %s from %d file(s)", path, basearch, len(files))
    return Treefile(path=path, basearch=basearch, data=data, files=files, externals=externals,
                    root=source_root)


def _source_root(path: Path, root: Path | None) -> Path:
    if root is None:
        return path.parent.resolve()
    resolved = Path(root).resolve()
    if not resolved.is_dir():
        raise TreefileError(root, None, "an existing directory as the source root",
                            f"{resolved} (no such directory)")
    return resolved


def confine(root: Path, referrer: Path, key: str | None, name: str | Path, target: Path) -> None:
    """Refuse ``target`` unless it resolves, symlinks followed, inside ``root``.

    ``referrer`` is the file naming it under ``key``, as ``name``. Nothing is opened here;
    callers check before they read. rpm-ostree has no such check (its ``utils::open_file``
    opens whatever ``Path::join`` gives), so this is ours.
    """
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loop, NUL byte
        raise TreefileError(referrer, key, f"a path inside {root}", f"{str(name)!r}: {exc}"
                            ) from None
    if not resolved.is_relative_to(root):
        raise TreefileError(referrer, key, f"a path inside {root}",
                            f"{str(name)!r} (resolves to {resolved})")


def _parse_recursive(
    path: Path, basearch: str, root: Path, chain: list[Path], seen: set[Path],
    files: list[Path]
) -> _Parsed:
    """rpm-ostree's ``treefile_parse_recurse``: includes first, then arch-include."""
    parsed = _parse_file(path, basearch, root)
    files.append(path)
    includes = [
        ("include", name)
        for name in _include_list(path, parsed.data.pop("include", None), "include")
    ]
    includes += [
        (f"arch-include.{basearch}", name)
        for name in _arch_includes(path, parsed.data.pop("arch-include", None), basearch)
    ]
    here = [*chain, path]
    for key, name in includes:
        target = (path.parent / name).absolute()  # Path::join: an absolute name wins
        confine(root, path, key, name, target)
        _check_include(path, key, target, here, seen)
        if len(here) >= INCLUDE_MAXDEPTH:
            raise TreefileError(
                path, key, f"at most {INCLUDE_MAXDEPTH} levels of includes", f"{len(here)} levels"
            )
        seen.add(target.resolve())
        included = _parse_recursive(target, basearch, root, here, seen, files)
        _merge(parsed, included)
    return parsed


def _check_include(
    includer: Path, key: str, target: Path, chain: list[Path], seen: set[Path]
) -> None:
    resolved = target.resolve()
    chain_resolved = [p.resolve() for p in chain]
    if resolved in chain_resolved:
        start = chain_resolved.index(resolved)
        loop = " -> ".join(str(p) for p in [*chain[start:], target])
        raise TreefileError(includer, key, "no include cycle", f"cycle {loop}")
    if resolved in seen:
        # rpm-ostree refuses any file included twice ("Include loop detected").
        raise TreefileError(
            includer, key, "each file included only once", f"{target} was already included"
        )
    if not target.is_file():
        raise TreefileError(includer, key, "an existing treefile", f"{target} (no such file)")


def _parse_file(path: Path, basearch: str, root: Path) -> _Parsed:
    """rpm-ostree's ``treefile_parse``: one file, its arch packages and external files."""
    data = _read_document(path)
    _validate_file(path, data)
    _fold_arch_packages(path, data, basearch)
    parsed = _Parsed(data=data)
    script = data.get("postprocess-script")
    if script is not None:
        parsed.postprocess_script = _external_file(
            path, "postprocess-script", script, "an existing file relative to the treefile", root
        )
    parsed.add_files = [
        _external_file(
            path, "add-files", src, "source files that exist relative to the treefile", root
        )
        for src, _dest in data.get("add-files", [])
    ]
    for key in CHECK_FILE_KEYS:
        if _names_check_file(data.get(key)):
            parsed.checks[key] = _external_file(
                path, key, data[key]["filename"], "an existing file relative to the treefile",
                root,
            )
    return parsed


def _names_check_file(value: Any) -> bool:
    """``check-passwd`` / ``check-groups`` of rpm-ostree's ``type: file`` variant."""
    return isinstance(value, dict) and value.get("type") == "file"


def _external_file(treefile: Path, key: str, name: str, expected: str, root: Path) -> Path:
    """``name`` relative to ``treefile``'s directory, as an absolute path to an existing file.

    rpm-ostree's ``treefile_parse`` opens ``filename.with_file_name(name)`` (and
    ``load_passwd_file`` ``basedir.join(name)``): an absolute ``name`` replaces the
    directory. The result must resolve inside ``root``, checked before anything is opened.
    """
    target = (treefile.parent / name).absolute()
    confine(root, treefile, key, name, target)
    if not target.is_file():
        raise TreefileError(treefile, key, expected, f"{target} (no such file)")
    return target


def _read_document(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise TreefileError(path, None, "a .yaml, .yml or .json treefile", f"suffix {suffix!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TreefileError(path, None, "an existing treefile", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TreefileError(path, None, "a readable UTF-8 file", str(exc)) from None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TreefileError(
                path, None, "valid JSON", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
    else:
        try:
            data = yaml.load(text, Loader=_TreefileLoader)  # a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise TreefileError(path, None, "valid YAML", _yaml_problem(exc)) from None
    if not isinstance(data, dict):
        raise TreefileError(path, None, "a mapping at the top level", _type_name(data))
    for key in data:
        if not isinstance(key, str):
            raise TreefileError(path, str(key), "string keys", _type_name(key))
    return data


class _TreefileLoader(yaml.SafeLoader):
    """YAML as serde_yaml reads it for rpm-ostree: dates stay strings, keys are unique."""

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


# serde_yaml has no timestamp type: "2024-01-01" is a string, not a datetime.date.
_TreefileLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"{problem} at line {mark.line + 1} column {mark.column + 1}"
    return problem


def _include_list(path: Path, value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise TreefileError(
        path, key, "a file name or a non-empty list of file names", _describe(value)
    )


def _arch_includes(path: Path, value: Any, basearch: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise TreefileError(
            path, "arch-include", "a mapping of basearch to file(s)", _describe(value)
        )
    for arch in value:
        if arch not in KNOWN_ARCHES:
            raise TreefileError(
                path,
                f"arch-include.{arch}",
                f"a basearch among {', '.join(KNOWN_ARCHES)}",
                repr(arch),
            )
    return _include_list(path, value.get(basearch), f"arch-include.{basearch}")


def _fold_arch_packages(path: Path, data: dict[str, Any], basearch: str) -> None:
    """rpm-ostree's ``take_archful_pkgs``: packages-$basearch joins packages, others go."""
    for key in [k for k in data if k.startswith("packages-")]:
        arch = key[len("packages-") :]
        if arch not in KNOWN_ARCHES:
            raise TreefileError(
                path,
                key,
                f"packages-ARCH with ARCH among {', '.join(KNOWN_ARCHES)}",
                f"unknown arch {arch!r}",
            )
        value = data.pop(key)
        _expect_string_list(path, key, value)
        if arch == basearch:
            data["packages"] = list(data.get("packages") or []) + list(value)
    if "packages" in data:
        data["packages"] = _split_packages(data["packages"])


def _split_packages(items: list[str]) -> list[str]:
    # whitespace_split_packages: "foo bar" is two packages (quoted items stay whole).
    out: list[str] = []
    for item in items:
        parts = re.findall(r"'([^']*)'|(\S+)", item)
        out.extend(quoted or bare for quoted, bare in parts)
    return out


# ---------------------------------------------------------------------------------------
# Validation


def _validate_file(path: Path, data: dict[str, Any]) -> None:
    """Type checks on the keys we know, per file, so errors name the file at fault."""
    if "ref" in data and not (isinstance(data["ref"], str) and data["ref"].strip()):
        raise TreefileError(path, "ref", "a non-empty string", _describe(data["ref"]))
    for key in _STRING_LIST_KEYS:
        if key in data:
            _expect_string_list(path, key, data[key])
    if "releasever" in data:
        value = data["releasever"]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise TreefileError(path, "releasever", "a string or an integer", _describe(value))
    for key in _STRING_KEYS:
        if key in data and not (isinstance(data[key], str) and data[key]):
            raise TreefileError(path, key, "a non-empty string", _describe(data[key]))
    if "add-commit-metadata" in data and not isinstance(data["add-commit-metadata"], dict):
        raise TreefileError(
            path, "add-commit-metadata", "a mapping", _describe(data["add-commit-metadata"])
        )
    if "documentation" in data and not isinstance(data["documentation"], bool):
        raise TreefileError(
            path, "documentation", "a boolean (true or false)", _describe(data["documentation"])
        )
    if "boot-location" in data and data["boot-location"] not in BOOT_LOCATIONS:
        raise TreefileError(
            path,
            "boot-location",
            f"one of {', '.join(BOOT_LOCATIONS)}",
            _describe(data["boot-location"]),
        )
    for index, item in enumerate(data.get("conditional-include") or []):
        # We do not resolve conditional-include; rpm-ostree would, reading the names it
        # lists relative to our flattened copy (treefile_parse_recurse), unconfined.
        named = item.get("include") if isinstance(item, dict) else None
        if isinstance(named, (str, list)):
            raise TreefileError(
                path, f"conditional-include[{index}].include",
                "an inline treefile (files named here would not be confined to the source "
                "root; use include or arch-include)", _describe(named),
            )
    for key in CHECK_FILE_KEYS:
        value = data.get(key)
        if _names_check_file(value) and not (
            isinstance(value.get("filename"), str) and value["filename"]
        ):
            raise TreefileError(
                path, f"{key}.filename", "a non-empty string", _describe(value.get("filename"))
            )
    if "add-files" in data:
        value = data["add-files"]
        if not isinstance(value, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) and s for s in p)
            for p in value
        ):
            raise TreefileError(
                path, "add-files", "a list of [source, destination] string pairs", _describe(value)
            )


def _validate_merged(path: Path, data: dict[str, Any]) -> None:
    if "ref" not in data:
        raise TreefileError(path, "ref", "a non-empty string (required)", "nothing")
    if not data.get("packages"):
        raise TreefileError(
            path,
            "packages",
            "a non-empty list of package names (required)",
            "an empty list" if "packages" in data else "nothing",
        )


def _expect_string_list(path: Path, key: str, value: Any) -> None:
    if not isinstance(value, list):
        raise TreefileError(path, key, "a list of strings", _describe(value))
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise TreefileError(path, f"{key}[{index}]", "a non-empty string", _describe(item))


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _describe(value: Any) -> str:
    if isinstance(value, (dict, list)) or value is None:
        return _type_name(value)
    return f"{_type_name(value)} {value!r}"


# ---------------------------------------------------------------------------------------
# Merging and substitution


def _merge(dest: _Parsed, src: _Parsed) -> None:
    """rpm-ostree's ``treefile_merge``: ``dest`` includes ``src``."""
    for key, value in src.data.items():
        mine = dest.data.get(key)
        if key not in dest.data:
            dest.data[key] = value
        elif key in SET_FIELDS and _is_string_list(value) and _is_string_list(mine):
            dest.data[key] = sorted(set(value) | set(mine))
        elif key in VEC_FIELDS and isinstance(value, list) and isinstance(mine, list):
            dest.data[key] = list(value) + list(mine)
        elif key in MAP_FIELDS and isinstance(value, dict) and isinstance(mine, dict):
            dest.data[key] = {**value, **mine}
        # else: a basic field set on both sides: the includer (dest) wins.
    if dest.postprocess_script is None:
        dest.postprocess_script = src.postprocess_script
    dest.add_files = src.add_files + dest.add_files
    # treefile_merge_externals: passwd/group are basic values, the includer's wins.
    for key, source in src.checks.items():
        dest.checks.setdefault(key, source)


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def variables(basearch: str, data: dict[str, Any]) -> dict[str, str]:
    variables = {"basearch": basearch}
    if "releasever" in data:
        variables["releasever"] = str(data["releasever"])
    return variables


def _substitute(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _VAR_RE.sub(lambda m: variables.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables) for k, v in value.items()}
    return value


def relative_to(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()
