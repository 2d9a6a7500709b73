# SPDX-License-Identifier: GPL-2.0-or-later
"""Koji hub plugin: the ``hostImageBuild`` API call that starts a host-image build.

Installed as ``hostimage.py`` in the hub's PluginPath and enabled with
``Plugins = hostimage`` in hub.conf (docs/koji-admin.md). Configuration:
/etc/koji-hub/plugins/hostimage.conf (conf/hub/hostimage.conf documents every option).

Hubs are kept lean: this module imports only koji, kojihub, jsonschema and the
dependency-free koji_hostimage.koji.options. The real kojihub API it relies on (checked against
koji-project/koji):
- ``kojihub.make_task(method, arglist, **opts)`` with ``channel`` and ``priority``: the
  caller enforces priority limits, make_task then applies the channel/priority policies;
- ``kojihub.get_build_target(info, strict=True)`` and ``kojihub.get_tag(info, strict=True)``;
- ``kojihub.convert_value(value, cast=int)``, raising koji.ParameterError;
- ``context.session.assertPerm(name)`` (admins always pass) and ``hasPerm('admin')``;
- ``koji.parse_arches``, ``koji.daemon.SCM.is_scm_url``, ``koji.read_config_files``;
- ``koji.tasks.LEGACY_SIGNATURES``, read by kojihub's policy_data_from_task_args.
The priority rule is kojihub's own for ``build`` (and the kiwi plugin's): ``priority`` is
relative to koji.PRIO_DEFAULT and a negative value (more urgent) needs ``admin``.
"""

from __future__ import annotations

import configparser
import logging
from dataclasses import dataclass
from typing import Any

import jsonschema  # noqa: F401  (a missing jsonschema fails at plugin load, not per call)
import koji
import koji.daemon
import koji.tasks
import kojihub
from koji.context import context
from koji.plugin import export

from koji_hostimage.koji import options as hostimage_options

logger = logging.getLogger("koji.plugin.hostimage")

CONFIG_FILE = "/etc/koji-hub/plugins/hostimage.conf"
CONFIG_SECTION = "hostimage"


# Lets hub policies see the tasks' target, scratch flag and source.
koji.tasks.LEGACY_SIGNATURES.update(hostimage_options.policy_signatures())


@dataclass(frozen=True)
class HubConfig:
    """The [hostimage] section of hostimage.conf; defaults apply without the file."""

    permission: str = "image"
    channel: str = "image"
    check_tag_arches: bool = True


_config: HubConfig | None = None


def load_config(path: str) -> HubConfig:
    """Read ``path`` (a missing file means all defaults); unknown keys are an error."""
    parser = koji.read_config_files([(path, False)], raw=True)
    if not parser.has_section(CONFIG_SECTION):
        return HubConfig()
    known = {"permission", "channel", "check_tag_arches"}
    unknown = sorted(set(parser.options(CONFIG_SECTION)) - known)
    if unknown:
        raise koji.ConfigurationError(
            f"{path}: [{CONFIG_SECTION}] {', '.join(unknown)}: expected only"
            f" {', '.join(sorted(known))}"
        )
    section = parser[CONFIG_SECTION]
    defaults = HubConfig()
    try:
        check_tag_arches = section.getboolean("check_tag_arches", defaults.check_tag_arches)
    except ValueError:
        raise koji.ConfigurationError(
            f"{path}: [{CONFIG_SECTION}] check_tag_arches: expected true or false,"
            f" got {section.get('check_tag_arches')!r}"
        ) from None
    return HubConfig(
        permission=_config_name(path, section, "permission", defaults.permission),
        channel=_config_name(path, section, "channel", defaults.channel),
        check_tag_arches=check_tag_arches,
    )


def _config_name(path: str, section: configparser.SectionProxy, key: str, default: str) -> str:
    value = section.get(key, default).strip()
    if not value or any(char.isspace() for char in value):
        raise koji.ConfigurationError(
            f"{path}: [{CONFIG_SECTION}] {key}: expected a single name, got {value!r}"
        )
    return value


def get_config() -> HubConfig:
    """The plugin's configuration, read once per hub process."""
    global _config
    if _config is None:
        _config = load_config(CONFIG_FILE)
        logger.info("hostimage hub plugin configuration: %s", _config)
    return _config


@export
def hostImageBuild(target, scm_url, treefile, opts=None, priority=None):
    """Start a host-image build of TREEFILE from SCM_URL for the build target TARGET.

    opts: a dict of build options (see koji_hostimage.koji.options.OPTIONS_SCHEMA).
    priority: relative to the default task priority; a negative value needs admin.
    Returns the id of the hostImageBuild task.
    """
    config = get_config()
    context.session.assertPerm(config.permission)
    _check_text("target", target)
    _check_scm_url(scm_url)
    _check_treefile(treefile)
    checked_opts = _checked_opts(opts)
    target_info = kojihub.get_build_target(target, strict=True)
    if config.check_tag_arches:
        _check_tag_arches(checked_opts, target_info)
    task_opts: dict[str, Any] = {"channel": config.channel}
    task_opts.update(_priority_opts(priority))
    arglist = [target_info["name"], scm_url, treefile, checked_opts]
    task_id = kojihub.make_task(hostimage_options.PARENT_TASK_METHOD, arglist, **task_opts)
    logger.info("hostImageBuild task %s for target %s", task_id, target_info["name"])
    return task_id


def _check_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise koji.ParameterError(
            f"hostImageBuild: {name}: expected a non-empty string, got {value!r}"
        )


def _check_scm_url(scm_url: Any) -> None:
    _check_text("scm_url", scm_url)
    # The same scheme list kojid's SCM class accepts; the builder still checks the URL
    # against its allowed_scms before checking anything out.
    if not koji.daemon.SCM.is_scm_url(scm_url):
        schemes = sorted(s for group in koji.daemon.SCM.types.values() for s in group)
        raise koji.ParameterError(
            f"hostImageBuild: scm_url: expected a URL starting with one of"
            f" {' '.join(schemes)}, got {scm_url!r}"
        )


def _check_treefile(treefile: Any) -> None:
    """The treefile is a path inside the SCM checkout: relative, no way out of it."""
    _check_text("treefile", treefile)
    problem = hostimage_options.treefile_path_error(treefile)
    if problem:
        raise koji.ParameterError(f"hostImageBuild: {problem}")


def _checked_opts(opts: Any) -> dict[str, Any]:
    """Validate opts against OPTIONS_SCHEMA; every problem named in one ParameterError."""
    candidate = {} if opts is None else opts
    problems = hostimage_options.option_errors(candidate)
    if problems:
        raise koji.ParameterError("hostImageBuild: invalid opts: " + "; ".join(problems))
    checked = dict(candidate)
    for key in ("arches", "failable_arches"):
        if key in checked:
            checked[key] = koji.parse_arches(checked[key], to_list=True, strict=True)
    return checked


def _check_tag_arches(opts: dict[str, Any], target_info: dict[str, Any]) -> None:
    """Refuse arches the build tag cannot build now, not after a builder picked it up."""
    build_tag = kojihub.get_tag(target_info["build_tag"], strict=True)
    tag_arches = koji.parse_arches(build_tag.get("arches") or "", to_list=True)
    if not tag_arches:
        raise koji.ParameterError(
            f"hostImageBuild: build tag {build_tag['name']} of target"
            f" {target_info['name']} has no arches: expected a build tag with arches"
        )
    requested = opts.get("arches") or tag_arches
    for key, arches, allowed in (
        ("arches", opts.get("arches") or [], tag_arches),
        ("failable_arches", opts.get("failable_arches") or [], requested),
    ):
        missing = [arch for arch in arches if arch not in allowed]
        if missing:
            raise koji.ParameterError(
                f"hostImageBuild: option {key!r}: expected arches of build tag"
                f" {build_tag['name']} ({' '.join(allowed)}), got {' '.join(missing)}"
            )


def _priority_opts(priority: Any) -> dict[str, int]:
    """make_task options for ``priority``, following kojihub's rule for build()."""
    if not priority:
        return {}
    if isinstance(priority, bool):
        raise koji.ParameterError(
            f"hostImageBuild: priority: expected an integer, got {priority!r}"
        )
    priority = kojihub.convert_value(priority, cast=int)
    if priority < 0 and not context.session.hasPerm("admin"):
        raise koji.ActionNotAllowed("only admins may create high-priority tasks")
    return {"priority": koji.PRIO_DEFAULT + priority}
