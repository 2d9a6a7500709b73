# SPDX-License-Identifier: GPL-2.0-or-later
"""The treefile keys rpm-ostree knows, their types, and the defaults it applies.

The list mirrors the serde structs of coreos/rpm-ostree ``rust/src/treefile.rs``
(``TreeComposeConfig``, ``BaseComposeConfigFields``, ``DeriveConfigFields`` and the
snake_case ``LegacyTreeComposeConfigFields``, all ``rename_all = "kebab-case"``) plus
``packages-$ARCH``, which ``take_archful_pkgs`` accepts for any arch.
``treefile_parse_stream`` refuses any other key of a YAML treefile ("Unknown fields");
JSON treefiles' unknown keys are ignored there, and here (logged and dropped).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from koji_hostimage.errors import TreefileError

from .document import describe

log = logging.getLogger(__name__)

STR, BOOL, INT, STR_OR_INT, STR_LIST, MAP, LIST, INCLUDE, ANY = (
    "a string", "a boolean (true or false)", "a non-negative integer",
    "a string or an integer", "a list of strings", "a mapping", "a list",
    "a file name or a list of file names", "a value",
)

#: Every key rpm-ostree's treefile.rs deserializes, with the shape it takes.
KEY_TYPES: dict[str, str] = {
    # TreeComposeConfig
    "packages": STR_LIST, "repo-packages": LIST, "cliwrap": BOOL, "cliwrap-binaries": STR_LIST,
    # DeriveConfigFields
    "base-refspec": STR, "container-image-reference": STR, "packages-local": MAP,
    "packages-local-fileoverride": MAP, "override-remove": STR_LIST,
    "ex-override-replace": LIST, "override-replace-local": MAP, "initramfs": MAP,
    "custom": MAP, "override-commit": STR, "unconfigured-state": STR,
    # BaseComposeConfigFields
    "edition": STR_OR_INT, "ref": STR, "metadata": MAP, "basearch": STR, "variables": MAP,
    "repovars": MAP, "rojig": MAP, "repos": STR_LIST, "lockfile-repos": STR_LIST,
    "selinux": BOOL, "ignore-devices": BOOL, "selinux-label-version": INT, "sysusers": STR,
    "ima": BOOL, "gpg-key": STR, "include": INCLUDE, "arch-include": MAP,
    "conditional-include": LIST, "bootstrap-packages": STR_LIST, "ostree-layers": STR_LIST,
    "ostree-override-layers": STR_LIST, "exclude-packages": STR_LIST,
    "platform-module": STR, "container": BOOL, "recommends": BOOL, "documentation": BOOL,
    "install-langs": STR_LIST, "initramfs-args": STR_LIST, "no-initramfs": BOOL,
    "readonly-executables": BOOL, "boot-location": STR, "tmp-is-dir": BOOL,
    "opt-usrlocal": STR, "units": STR_LIST, "default-target": STR, "machineid-compat": BOOL,
    "releasever": STR_OR_INT, "automatic-version-prefix": STR,
    "automatic-version-suffix": STR, "mutate-os-release": STR,
    "etc-group-members": STR_LIST, "preserve-passwd": BOOL, "check-passwd": MAP,
    "check-groups": MAP, "ignore-removed-users": STR_LIST, "ignore-removed-groups": STR_LIST,
    "postprocess-script": STR, "postprocess": STR_LIST, "add-files": LIST,
    "remove-files": STR_LIST, "remove-from-packages": LIST, "add-commit-metadata": MAP,
    "repo-metadata": STR, "advisories-metadata": STR, "rpmdb": STR, "rpmdb-normalize": BOOL,
    "container-cmd": STR_LIST,
}
#: LegacyTreeComposeConfigFields: old snake_case names, migrated by
#: ``migrate_legacy_fields`` ("Cannot use new and legacy forms of ...").
LEGACY_KEYS = {
    "gpg_key": "gpg-key", "boot_location": "boot-location",
    "default_target": "default-target", "automatic_version_prefix": "automatic-version-prefix",
}
#: String keys that may not be empty.
NON_EMPTY = frozenset({"ref", "postprocess-script", "default-target",
                       "automatic-version-prefix"})
KNOWN_KEYS = frozenset(KEY_TYPES) | frozenset(LEGACY_KEYS)

# rpm-ostree's BootLocation enum (serde kebab-case): New, Modules, KernelInstall.
BOOT_LOCATIONS = ("new", "modules", "kernel-install")


def is_arch_packages(key: str) -> bool:
    return key.startswith("packages-") and len(key) > len("packages-")


def nearest_key(key: str, known: Iterable[str] = KNOWN_KEYS) -> str | None:
    match = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return match[0] if match else None


def check_keys(path: Path, data: dict[str, Any], is_json: bool, where: str = "") -> None:
    """Refuse (YAML) or drop (JSON) unknown keys; migrate the legacy snake_case names."""
    for key in list(data):
        if key in KEY_TYPES or is_arch_packages(key):
            continue
        if key in LEGACY_KEYS:
            new = LEGACY_KEYS[key]
            if new in data:
                raise TreefileError(path, key, f"either {new} or the legacy {key}", "both")
            data[new] = data.pop(key)
            continue
        if is_json:
            log.warning("%s: ignoring unknown key %r (as rpm-ostree does for JSON)", path, key)
            del data[key]
            continue
        near = nearest_key(key)
        hint = f" (did you mean {near!r}?)" if near else ""
        raise TreefileError(path, f"{where}{key}", "a treefile key rpm-ostree knows",
                            f"unknown key {key!r}{hint}")


def check_types(path: Path, data: dict[str, Any], where: str = "") -> None:
    """Each known key holds the shape rpm-ostree's serde types accept."""
    for key, value in data.items():
        kind = STR_LIST if is_arch_packages(key) else KEY_TYPES.get(key, ANY)
        name = f"{where}{key}"
        if kind == STR and key in NON_EMPTY and not (isinstance(value, str) and value.strip()):
            raise TreefileError(path, name, "a non-empty string", describe(value))
        if kind == STR_LIST and isinstance(value, list):
            for index, item in enumerate(value):
                if not isinstance(item, str) or not item.strip():
                    raise TreefileError(path, f"{name}[{index}]", "a non-empty string",
                                        describe(item))
        if key == "arch-include" and not isinstance(value, dict):
            raise TreefileError(path, name, "a mapping of basearch to file(s)", describe(value))
        if not _fits(kind, value):
            raise TreefileError(path, name, kind, describe(value))


def _fits(kind: str, value: Any) -> bool:
    if kind == STR:
        return isinstance(value, str)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if kind == STR_OR_INT:
        return isinstance(value, str) or _fits(INT, value)
    if kind == STR_LIST:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == MAP:
        return isinstance(value, dict)
    if kind == LIST:
        return isinstance(value, list)
    if kind == INCLUDE:
        return (isinstance(value, str) and bool(value)) or (
            isinstance(value, list) and all(isinstance(v, str) and v for v in value))
    return True


def effective(data: dict[str, Any], key: str) -> Any:
    """A key's value with rpm-ostree's defaults when the treefile does not set it.

    Mirrors ``treefile_parse_stream`` (``container: true`` implies boot-location modules,
    selinux false, tmp-is-dir true, preserve-passwd false; ``edition: 2024`` changes the
    boot-location and tmp-is-dir defaults) and the getters of ``Treefile``
    (``get_recommends``, ``get_selinux``, ``get_documentation`` default to true;
    ``BootLocation`` defaults to ``New``).
    """
    if key in data:
        return data[key]
    container = data.get("container") is True
    edition_2024 = str(data.get("edition", "2014")) >= "2024"
    if key == "boot-location":
        return "modules" if container or edition_2024 else "new"
    if key == "tmp-is-dir":
        return container or edition_2024
    if key == "selinux":
        return not container
    if key == "preserve-passwd":
        return not container
    if key in ("recommends", "documentation", "machineid-compat"):
        return True
    return None
