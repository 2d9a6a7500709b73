# SPDX-License-Identifier: GPL-2.0-or-later
"""rpm-ostree treefiles: load, resolve includes, merge, validate, substitute variables.

The semantics follow rpm-ostree's own loader (coreos/rpm-ostree ``rust/src/treefile.rs``):

- ``treefile_parse_recurse``: a file's ``variables`` are folded into those seen so far
  (the earlier ones win); then its ``conditional-include`` conditions are evaluated
  against them (conditions.py), inline treefiles of the matching entries merged at once;
  then its ``include`` (string or list), ``arch-include[basearch]`` and the files of the
  matching ``conditional-include`` entries are loaded relative to the including file and
  merged into it, in that order. A file may be read only once ("Include loop
  detected"); a file at depth ``INCLUDE_MAXDEPTH`` = 50 (the top-level one is depth 0)
  may not include another ("Reached maximum include depth").
- ``treefile_merge``: for "basic" (scalar) fields the includer wins (``merge_basic_field``);
  vector fields are concatenated, the included file's items first (``merge_vec_field``);
  map fields are merged like ``dict.update`` with the includer winning
  (``merge_map_field``); ``packages`` is a set (``merge_hashset_field`` over a BTreeSet),
  so it ends up sorted and without duplicates. ``treefile_merge_externals``: the
  includer's postprocess-script and check files win, add-files append, finalize.d
  scripts are merged by name.
- ``treefile_parse_stream`` / ``take_archful_pkgs``: each file's ``packages-$ARCH`` (any
  ARCH) is checked and the one of basearch folded into its ``packages``; items are split
  on whitespace unless single-quoted (``split_whitespace_unless_quoted``; an unterminated
  quote is an error); unknown keys of YAML files are refused (keys.py).
- ``treefile_parse``: ``finalize.d/`` beside each treefile: its regular files with the
  user-executable bit, by name.
- ``substitute_vars``: ``${var}`` expanded once the whole tree is merged, in the fields
  rpm-ostree lists only (conditions.py).

Every file a treefile names is confined to a source root (the SCM checkout in Koji; by
default the top-level treefile's directory): the top-level file, every include,
``postprocess-script``, ``add-files`` sources, ``check-passwd`` / ``check-groups`` of
``type: file`` and ``finalize.d`` scripts must resolve, symlinks followed, inside it.
rpm-ostree itself joins each name onto the naming file's directory (``Path::join`` in
``treefile_parse_recurse``, ``with_file_name`` in ``treefile_parse``,
``load_passwd_file``), so an absolute name or ``../`` reads anything on the builder; we
refuse those before opening them, so builder files cannot end up in a published image.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koji_hostimage.errors import TreefileError

from .conditions import VarValue, check_variables, conditions_match, substitute_vars
from .document import describe, read_document
from .keys import BOOT_LOCATIONS, check_keys, check_types, is_arch_packages

log = logging.getLogger(__name__)
_read_document = read_document  # one name to patch in tests: every document read

INCLUDE_MAXDEPTH = 50  # rpm-ostree's INCLUDE_MAXDEPTH
FINALIZE_D = "finalize.d"  # rpm-ostree's FINALIZE_D
_ARCH_RE = re.compile(r"^[A-Za-z0-9_]+$")

# Fields treefile_merge() treats as vectors (concatenated, included items first).
VEC_FIELDS = frozenset(
    {
        "repos", "lockfile-repos", "exclude-packages", "ostree-layers",
        "ostree-override-layers", "install-langs", "initramfs-args", "units",
        "etc-group-members", "postprocess", "add-files", "remove-files",
        "remove-from-packages", "repo-packages", "cliwrap-binaries", "ex-override-replace",
    }
)
# Fields treefile_merge() treats as sets (union, sorted).
SET_FIELDS = frozenset(
    {"packages", "bootstrap-packages", "ignore-removed-users", "ignore-removed-groups",
     "override-remove"}
)
# Fields treefile_merge() treats as maps (dict.update, includer wins).
MAP_FIELDS = frozenset({"add-commit-metadata", "variables", "metadata", "repovars",
                        "packages-local", "packages-local-fileoverride",
                        "override-replace-local"})

# rpm-ostree's CheckPasswd / CheckGroups: with ``type: file`` they name a file
# (``CheckFile.filename``) that ``treefile_parse`` opens via ``load_passwd_file``.
CHECK_FILE_KEYS = ("check-passwd", "check-groups")


@dataclass
class Treefile:
    path: Path  # the top-level treefile
    basearch: str
    data: dict[str, Any]  # fully resolved (includes merged, arch keys folded, vars expanded)
    files: list[Path] = field(default_factory=list)  # every file read, top-level first
    # External files by the key that names them: "postprocess-script", "check-passwd",
    # "check-groups" -> absolute path; "add-files" -> list of absolute source paths, in the
    # order of data["add-files"]; "finalize.d" -> {script name: absolute path}.
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
    def variables(self) -> dict[str, VarValue]:
        return dict(self.data.get("variables", {}))

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def source_root(self) -> Path:
        return self.root if self.root is not None else self.directory.resolve()

    @property
    def postprocess_script(self) -> Path | None:
        return self.externals.get("postprocess-script")

    @property
    def finalize_d(self) -> dict[str, Path]:
        return dict(self.externals.get(FINALIZE_D, {}))


# ---------------------------------------------------------------------------------------
# Loading


@dataclass
class _Parsed:
    """One file's content plus the external files it names (absolute paths)."""

    data: dict[str, Any]
    postprocess_script: Path | None = None
    add_files: list[Path] = field(default_factory=list)
    checks: dict[str, Path] = field(default_factory=dict)  # check-passwd/-groups files
    finalize_d: dict[str, Path] = field(default_factory=dict)


@dataclass
class _Walk:
    """State shared by one load: the root, files read, devices seen, variables."""

    basearch: str
    root: Path
    files: list[Path] = field(default_factory=list)
    seen: dict[tuple[int, int], Path] = field(default_factory=dict)
    variables: dict[str, VarValue] = field(default_factory=dict)


def load_treefile(path: Path, basearch: str, root: Path | None = None,
                  variables: dict[str, VarValue] | None = None) -> Treefile:
    """Load ``path`` for ``basearch``: includes merged, arch keys folded, vars expanded.

    Every file it names must resolve inside ``root`` (default: the directory of ``path``),
    ``path`` itself included; see the module docstring. ``variables`` are initial values
    (rpm-ostree's ``Treefile::new_boxed`` takes them too); the treefiles' own do not
    override them.
    """
    path = Path(path).absolute()
    if not isinstance(basearch, str) or not _ARCH_RE.match(basearch):
        raise TreefileError(path, None, "a basearch of letters, digits and _", repr(basearch))
    source_root = _source_root(path, root)
    confine(source_root, path, None, path, path)
    walk = _Walk(basearch=basearch, root=source_root, variables=dict(variables or {}))
    if not path.is_file():
        raise TreefileError(path, None, "an existing treefile", "no such file")
    parsed = _parse_recursive(path, walk, depth=0)
    data = parsed.data
    _validate_merged(path, data)
    data["packages"] = sorted(set(data["packages"]))  # a set in rpm-ostree (BTreeSet)
    data["variables"] = dict(sorted(walk.variables.items()))
    substitute_vars(path, data, walk.variables)
    files = walk.files
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
    if parsed.finalize_d:
        externals[FINALIZE_D] = dict(sorted(parsed.finalize_d.items()))
        files.extend(externals[FINALIZE_D].values())
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
        resolved = target.resolve(strict=False)
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loop, NUL byte
        why = "a symlink loop" if isinstance(exc, RuntimeError) or getattr(
            exc, "errno", None) == 40 else str(exc)
        raise TreefileError(referrer, key, f"a path inside {root}", f"{str(name)!r}: {why}"
                            ) from None
    if not resolved.is_relative_to(root):
        raise TreefileError(referrer, key, f"a path inside {root}",
                            f"{str(name)!r} (resolves to {resolved})")


def _devino(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise TreefileError(path, None, "an existing treefile", "no such file") from None
    except OSError as exc:
        raise TreefileError(path, None, "a readable treefile", exc.strerror or str(exc)
                            ) from None
    return (info.st_dev, info.st_ino)


def _check_include(includer: Path, key: str, target: Path, chain: list[Path],
                   walk: _Walk) -> None:
    """``treefile_parse``'s "Include loop detected": no file is read twice (by device and
    inode); a cycle is reported as one."""
    if not target.is_file():
        raise TreefileError(includer, key, "an existing treefile", f"{target} (no such file)")
    devino = _devino(target)
    if devino not in walk.seen:
        return
    chain_ids = [_devino(p) for p in chain]
    if devino in chain_ids:
        loop = " -> ".join(str(p) for p in [*chain[chain_ids.index(devino):], target])
        raise TreefileError(includer, key, "no include cycle", f"cycle {loop}")
    raise TreefileError(includer, key, "each file included only once",
                        f"{target} was already included")


def _parse_recursive(path: Path, walk: _Walk, depth: int,
                     chain: tuple[Path, ...] = ()) -> _Parsed:
    """rpm-ostree's ``treefile_parse_recurse``; see the module docstring."""
    parsed = _parse_file(path, walk)
    data = parsed.data
    includes = [("include", name) for name in _include_list(path, data.pop("include", None),
                                                            "include")]
    # fold in this file's variables: the ones seen so far win (BTreeMap::append)
    own = check_variables(path, data.pop("variables", None))
    own["basearch"] = walk.basearch
    if "releasever" in data:
        own["releasever"] = data["releasever"]
    walk.variables = {**own, **walk.variables}
    arch_includes = data.pop("arch-include", None) or {}
    for arch, value in arch_includes.items():
        names = _include_list(path, value, f"arch-include.{arch}")
        if arch == walk.basearch:
            includes += [(f"arch-include.{arch}", name) for name in names]
    for index, entry in enumerate(data.pop("conditional-include", None) or []):
        key = f"conditional-include[{index}]"
        if not (isinstance(entry, dict) and set(entry) == {"if", "include"}):
            raise TreefileError(path, key, "a mapping with exactly the keys if and include",
                                describe(entry))
        if not conditions_match(path, f"{key}.if", entry["if"], walk.variables):
            continue
        target = entry["include"]
        if isinstance(target, dict):  # IncludeFilesOrInlined::Inlined
            _merge(parsed, _inline(path, f"{key}.include", target, walk))
        else:
            includes += [(f"{key}.include", name)
                         for name in _include_list(path, target, f"{key}.include")]
    for key, name in includes:
        if depth == INCLUDE_MAXDEPTH:
            raise TreefileError(path, key, f"at most {INCLUDE_MAXDEPTH} levels of includes",
                                f"{name!r} at depth {depth + 1}")
        target = (path.parent / name).absolute()  # Path::join: an absolute name wins
        confine(walk.root, path, key, name, target)
        _check_include(path, key, target, [*chain, path], walk)
        included = _parse_recursive(target, walk, depth + 1, (*chain, path))
        _merge(parsed, included)
    return parsed


def _inline(path: Path, key: str, data: dict[str, Any], walk: _Walk) -> _Parsed:
    """An inline treefile of a conditional-include: checked like a file's content."""
    data = dict(data)
    check_keys(path, data, is_json=path.suffix.lower() == ".json", where=f"{key}.")
    check_types(path, data, where=f"{key}.")
    for nested in ("include", "arch-include", "conditional-include", "variables"):
        if nested in data:
            raise TreefileError(path, f"{key}.{nested}", "no includes or variables in an "
                                "inline treefile (rpm-ostree does not process them there)",
                                describe(data[nested]))
    _validate_file(path, data)
    _fold_arch_packages(path, data, walk.basearch)
    parsed = _Parsed(data=data)
    _externals(path, parsed, walk.root)
    return parsed


def _parse_file(path: Path, walk: _Walk) -> _Parsed:
    """rpm-ostree's ``treefile_parse``: one file, its arch packages and external files."""
    walk.seen[_devino(path)] = path
    walk.files.append(path)
    data = _read_document(path)
    check_keys(path, data, is_json=path.suffix.lower() == ".json")
    check_types(path, data)
    if "basearch" in data and data["basearch"] != walk.basearch:
        raise TreefileError(path, "basearch", f"{walk.basearch} (cross-composes are not "
                            "supported)", repr(data["basearch"]))
    _validate_file(path, data)
    _fold_arch_packages(path, data, walk.basearch)
    parsed = _Parsed(data=data)
    _externals(path, parsed, walk.root)
    parsed.finalize_d = _finalize_d(path, walk.root)
    return parsed


def _externals(path: Path, parsed: _Parsed, root: Path) -> None:
    data = parsed.data
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


def _finalize_d(path: Path, root: Path) -> dict[str, Path]:
    """``treefile_parse``: regular files with the user-x bit in ``finalize.d/`` beside it."""
    directory = path.parent / FINALIZE_D
    if not directory.is_dir():
        return {}
    confine(root, path, FINALIZE_D, FINALIZE_D, directory)
    scripts: dict[str, Path] = {}
    for entry in sorted(directory.iterdir()):
        info = entry.lstat()  # DirEntry::metadata: symlinks are not followed
        if stat.S_ISREG(info.st_mode) and info.st_mode & stat.S_IXUSR:
            scripts[entry.name] = entry.absolute()
    return scripts


def _names_check_file(value: Any) -> bool:
    """``check-passwd`` / ``check-groups`` of rpm-ostree's ``type: file`` variant."""
    return isinstance(value, dict) and value.get("type") == "file"


def _external_file(treefile: Path, key: str, name: str, expected: str, root: Path) -> Path:
    """``name`` relative to ``treefile``'s directory, as an absolute path to an existing file.

    rpm-ostree's ``treefile_parse`` opens ``filename.with_file_name(name)`` (and
    ``load_passwd_file`` ``basedir.join(name)``): an absolute ``name`` replaces the
    directory. The result must resolve inside ``root``, checked before anything is opened.
    """
    if "\0" in name:
        raise TreefileError(treefile, key, expected, f"{name!r} (a NUL byte)")
    target = (treefile.parent / name).absolute()
    confine(root, treefile, key, name, target)
    if not target.is_file():
        raise TreefileError(treefile, key, expected, f"{target} (no such file)")
    return target


def _include_list(path: Path, value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) and value and "\0" not in value:
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) and v and "\0" not in v
                                       for v in value):
        return list(value)
    raise TreefileError(
        path, key, "a file name or a list of file names", describe(value)
    )


def _fold_arch_packages(path: Path, data: dict[str, Any], basearch: str) -> None:
    """rpm-ostree's ``take_archful_pkgs``: packages-$basearch joins packages, others go."""
    for key in [k for k in data if is_arch_packages(k)]:
        value = data.pop(key)
        if key[len("packages-"):] == basearch:
            data["packages"] = list(data.get("packages") or []) + list(value)
    for key in ("packages", "bootstrap-packages"):
        if key in data:
            data[key] = split_packages(path, key, data[key])
    if "bootstrap-packages" in data:  # canonicalized into packages by treefile_parse_stream
        data["packages"] = list(data.get("packages") or []) + data.pop("bootstrap-packages")


def split_packages(path: Path, key: str, items: list[str]) -> list[str]:
    """``whitespace_split_packages`` / ``split_whitespace_unless_quoted``."""
    out: list[str] = []
    for item in items:
        quoted = False
        start = 0
        for index, char in enumerate(item):
            if char != "'":
                continue
            if quoted:
                out.append(item[start:index])
            else:
                out.extend(item[start:index].split())
            quoted = not quoted
            start = index + 1
        if quoted:
            raise TreefileError(path, key, "package entries with matched single quotes",
                                f"missing terminating quote: {item!r}")
        out.extend(item[start:].split())
    return out


# ---------------------------------------------------------------------------------------
# Validation


def _validate_file(path: Path, data: dict[str, Any]) -> None:
    """Checks beyond the types of keys.py, per file, so errors name the file at fault."""
    if "boot-location" in data and data["boot-location"] not in BOOT_LOCATIONS:
        raise TreefileError(path, "boot-location", f"one of {', '.join(BOOT_LOCATIONS)}",
                            describe(data["boot-location"]))
    if "edition" in data:
        data["edition"] = str(data["edition"])
        if data["edition"] not in ("2014", "2024"):
            raise TreefileError(path, "edition", "2014 or 2024", describe(data["edition"]))
    if isinstance(data.get("conditional-include"), list) is False and \
            "conditional-include" in data:
        raise TreefileError(path, "conditional-include", "a list",
                            describe(data["conditional-include"]))
    if "arch-include" in data:
        for arch in data["arch-include"]:
            if not _ARCH_RE.match(arch):
                raise TreefileError(path, f"arch-include.{arch}", "an arch name", repr(arch))
    for key in CHECK_FILE_KEYS:
        value = data.get(key)
        if _names_check_file(value) and not (
            isinstance(value.get("filename"), str) and value["filename"]
        ):
            raise TreefileError(
                path, f"{key}.filename", "a non-empty string", describe(value.get("filename"))
            )
    if "add-files" in data:
        value = data["add-files"]
        if not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) and s for s in p)
            for p in value
        ):
            raise TreefileError(
                path, "add-files", "a list of [source, destination] string pairs", describe(value)
            )
    for key in ("add-commit-metadata", "metadata"):
        for name in data.get(key, {}):
            if not name:
                raise TreefileError(path, key, "non-empty keys", repr(name))


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


# ---------------------------------------------------------------------------------------
# Merging


def _merge(dest: _Parsed, src: _Parsed) -> None:
    """rpm-ostree's ``treefile_merge`` + ``treefile_merge_externals``: ``dest`` includes
    ``src``."""
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
    dest.finalize_d.update(src.finalize_d)


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def variables(basearch: str, data: dict[str, Any]) -> dict[str, str]:
    """The dnf variables of the .repo files: $basearch, $releasever (and ``repovars``)."""
    values = {"basearch": basearch}
    if "releasever" in data:
        values["releasever"] = str(data["releasever"])
    repovars = data.get("repovars")
    if isinstance(repovars, dict):
        values.update({str(k): str(v) for k, v in repovars.items()})
    return values


def relative_to(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()
