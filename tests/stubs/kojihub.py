# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for ``kojihub`` (the Koji hub library), used only by tests/test_hub_plugin.py.

kojihub needs a PostgreSQL database and mod_wsgi and is not installable here, so this
module offers the handful of kojihub functions the hostimage hub plugin calls, with the
same names, signatures, return shapes and error types as koji-project/koji's
kojihub/kojihub.py (checked against koji 1.36), backed by in-memory records:

- ``make_task(method, arglist, **opts)``: records the call, returns a new task id;
- ``get_build_target(info, event=None, strict=False)``: target dicts as kojihub returns
  them (id, name, build_tag, build_tag_name, dest_tag, dest_tag_name);
- ``get_tag(tagInfo, strict=False, event=None, blocked=False)``: tag dicts with ``arches``
  as a space-separated string (or None);
- ``convert_value(...)``: kojihub's own casting helper, raising koji.ParameterError.

``StandInSession`` plays ``koji.context.context.session`` with kojihub/auth.py's
permission semantics (``assertPerm`` passes for admins; the ActionNotAllowed message).
Everything else about koji (koji.ParameterError, koji.parse_arches, koji.tasks, the
plugin loader) is the real, installed koji library.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import koji


@dataclass
class MadeTask:
    """One make_task call as the hub plugin issued it."""

    task_id: int
    method: str
    arglist: list[Any]
    opts: dict[str, Any]


@dataclass
class HubState:
    """The stand-in hub's database: targets, tags, and the tasks made so far."""

    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    tags: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: list[MadeTask] = field(default_factory=list)
    next_ids: Any = field(default_factory=lambda: itertools.count(1001))

    def add_target(self, name: str, build_tag: str, dest_tag: str, arches: str | None) -> None:
        """Create a target with its build tag (holding ``arches``) and destination tag."""
        build_tag_info = self._add_tag(build_tag, arches)
        dest_tag_info = self._add_tag(dest_tag, None)
        self.targets[name] = {
            "id": len(self.targets) + 1,
            "name": name,
            "build_tag": build_tag_info["id"],
            "build_tag_name": build_tag,
            "dest_tag": dest_tag_info["id"],
            "dest_tag_name": dest_tag,
        }

    def _add_tag(self, name: str, arches: str | None) -> dict[str, Any]:
        info = {
            "id": len(self.tags) + 1,
            "name": name,
            "arches": arches,
            "locked": False,
            "perm": None,
            "perm_id": None,
            "maven_support": False,
            "maven_include_all": False,
            "extra": {},
        }
        self.tags[info["id"]] = info
        return info


STATE = HubState()


def reset() -> HubState:
    """Start from an empty stand-in hub; returns the new state."""
    global STATE
    STATE = HubState()
    return STATE


def make_task(method, arglist, **opts):
    """Record the task; real make_task also applies channel/priority policy and inserts."""
    convert_value(method, cast=str, check_only=True)
    if "priority" in opts:
        opts["priority"] = convert_value(opts["priority"], cast=int)
    if "channel" in opts and not isinstance(opts["channel"], (str, int)):
        raise koji.GenericError(f"No such channel: {opts['channel']}")
    task_id = next(STATE.next_ids)
    STATE.tasks.append(MadeTask(task_id, method, list(arglist), dict(opts)))
    return task_id


def get_build_target(info, event=None, strict=False):
    if isinstance(info, str):
        found = STATE.targets.get(info)
    else:
        found = next((t for t in STATE.targets.values() if t["id"] == info), None)
    if found is None and strict:
        raise koji.GenericError(f"No such build target: {info}")
    return dict(found) if found else None


def get_tag(tagInfo, strict=False, event=None, blocked=False):  # noqa: N803 (kojihub's name)
    if isinstance(tagInfo, str):
        found = next((t for t in STATE.tags.values() if t["name"] == tagInfo), None)
    else:
        found = STATE.tags.get(tagInfo)
    if found is None and strict:
        raise koji.GenericError(f"No such tagInfo: '{tagInfo}'")
    return dict(found) if found else None


def convert_value(
    value,
    cast=None,
    message=None,
    exc_type=koji.ParameterError,
    none_allowed=False,
    check_only=False,
):
    """kojihub.convert_value: cast (or only check) ``value``, raising ``exc_type``."""
    if value is None:
        if not none_allowed:
            raise exc_type(message or f"Invalid type, expected type {cast}")
        return value
    if check_only:
        if not isinstance(value, cast):
            raise exc_type(
                message or f"Invalid type for value '{value}': {type(value)}, expected type {cast}"
            )
        return value
    try:
        return cast(value)
    except (ValueError, TypeError):
        raise exc_type(
            message or f"Invalid type for value '{value}': {type(value)}, expected type {cast}"
        ) from None


class StandInSession:
    """STAND-IN for kojihub's auth Session as ``context.session`` (permissions only)."""

    def __init__(self, user: str = "alice", perms: tuple[str, ...] = (), logged_in=True):
        self.user_data = {"name": user}
        self.user_id = 7
        self.perms = {perm: True for perm in perms}
        self.logged_in = logged_in
        self.checked: list[str] = []

    def hasPerm(self, name):  # noqa: N802 (kojihub's name)
        if not self.logged_in:
            return False
        return name in self.perms

    def assertPerm(self, name):  # noqa: N802 (kojihub's name)
        self.checked.append(name)
        if not self.hasPerm(name) and not self.hasPerm("admin"):
            msg = f"{name} permission required"
            if self.logged_in:
                msg += f" (logged in as {self.user_data['name']})"
            else:
                msg += " (user not logged in)"
            raise koji.ActionNotAllowed(msg)
