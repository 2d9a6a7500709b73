# SPDX-License-Identifier: GPL-2.0-or-later
"""koji CLI plugin: ``koji hostimage-build TARGET SCM_URL TREEFILE``.

Installed as ``koji_cli_plugins/hostimage.py`` in site-packages (setup.cfg ships it there),
where the stock koji CLI's load_plugins() finds it; ``--plugin-paths`` or ~/.koji/plugins
work as well. The koji CLI machinery it relies on (koji_cli/lib.py, checked against
koji 1.36): ``activate_session``, ``watch_tasks`` (returns 1 when the task fails),
``_running_in_bg``, ``get_usage_str``, ``error``; and ``koji.plugin.export_cli``. The
option handling follows koji's own ``build`` command (``--wait``/``--nowait``,
``--background`` = priority +5, ``--quiet``) and the kiwi CLI plugin.
"""

from __future__ import annotations

from optparse import OptionParser
from typing import Any

import koji
import koji.tasks
from koji.plugin import export_cli
from koji_cli.lib import (
    _running_in_bg,
    activate_session,
    error,
    get_usage_str,
    watch_tasks,
)

from koji_hostimage.koji import options as hostimage_options

# koji's build command runs --background builds at this priority, relative to the default.
BACKGROUND_PRIORITY = 5


def _register_task_params() -> None:
    """Teach this koji command the two task methods' parameters.

    koji.taskLabel (watch-task, list-tasks) parses requests with
    koji.tasks.parse_task_params, which only knows methods in LEGACY_SIGNATURES; and
    `koji taskinfo` prints "Request Parameters" only for methods koji_cli.commands
    ``_do_parseTaskParams`` names. Koji loads CLI plugins before running any command, so
    registering here covers every command of this process.
    """
    for method, signature in hostimage_options.policy_signatures().items():
        koji.tasks.LEGACY_SIGNATURES.setdefault(method, signature)
    try:
        from koji_cli import commands
    except ImportError:  # an older koji_cli layout: labels still work
        return
    original = getattr(commands, "_do_parseTaskParams", None)
    if original is None or getattr(original, "hostimage_wrapped", False):
        return

    def parse_task_params(session, method, task_id, topdir):
        if method in hostimage_options.TASK_METHODS:
            return hostimage_options.task_param_lines(method, session.getTaskRequest(task_id))
        return original(session, method, task_id, topdir)

    parse_task_params.hostimage_wrapped = True
    commands._do_parseTaskParams = parse_task_params


_register_task_params()


@export_cli
def handle_hostimage_build(goptions, session, args):
    "[build] Build an OSTree host image (container archive) from an rpm-ostree treefile"
    parser = _option_parser(goptions)
    (build_opts, args) = parser.parse_args(args)
    if len(args) != 3:
        parser.error(
            "Exactly three arguments (a build target, an SCM URL and the treefile path"
            " inside the checkout) are required"
        )
    target, scm_url, treefile = args
    opts = _task_opts(parser, build_opts)
    priority = _priority(parser, build_opts)

    activate_session(session, goptions)
    kwargs = {} if priority is None else {"priority": priority}
    try:
        task_id = session.hostImageBuild(target, scm_url, treefile, opts, **kwargs)
    except koji.GenericError as exc:
        if _is_unknown_method(exc, hostimage_options.PARENT_TASK_METHOD):
            error(
                "the hub does not have the hostimage plugin installed"
                f" (it answered: {str(exc).strip()}); ask the Koji admins to enable it"
            )
        raise
    if not build_opts.quiet:
        print(f"Created task: {task_id}")
        print(f"Task info: {goptions.weburl}/taskinfo?taskID={task_id}")
    if build_opts.wait or (build_opts.wait is None and not _running_in_bg()):
        session.logout()
        return watch_tasks(
            session,
            [task_id],
            quiet=build_opts.quiet,
            poll_interval=goptions.poll_interval,
            topurl=goptions.topurl,
        )
    return 0


def _option_parser(goptions: Any) -> OptionParser:
    usage = (
        "usage: %prog hostimage-build [options] <target> <scm_url> <treefile>\n"
        "\n"
        "Compose the rpm-ostree treefile <treefile> (a path inside the checkout of\n"
        "<scm_url>) into an OSTree commit and publish it as an OCI archive that serves\n"
        "the repository, built by the hostImageBuild task for the build target <target>."
    )
    parser = OptionParser(usage=get_usage_str(usage))
    parser.add_option(
        "--arch",
        action="append",
        dest="arches",
        default=[],
        metavar="ARCH",
        help="Build only this arch (default: the build tag's arches). May be used"
        " multiple times or take a comma-separated list",
    )
    parser.add_option(
        "--failable-arch",
        action="append",
        dest="failable_arches",
        default=[],
        metavar="ARCH",
        help="Do not fail the build if this arch fails. May be used multiple times",
    )
    parser.add_option("--scratch", action="store_true", help="Perform a scratch build")
    parser.add_option(
        "--skip-tag", action="store_true", help="Do not attempt to tag the image build"
    )
    parser.add_option("--name", help="Override the image name (default: from the treefile)")
    parser.add_option(
        "--version",
        help="Override the version (default: the treefile's automatic-version-prefix, or"
        " the UTC date YYYYMMDD, numbered on from the latest build: YYYYMMDD.0, .1, ...)",
    )
    parser.add_option("--release", help="Override the release (default: the next free one)")
    parser.add_option(
        "--repo",
        action="append",
        dest="repos",
        default=[],
        metavar="URL",
        help="Compose from this package repository URL instead of the build tag's repo"
        " ($arch and $basearch are substituted). May be used multiple times",
    )
    parser.add_option(
        "--use-buildroot-repo",
        action="store_true",
        default=None,
        help="Read the build tag's repo as well as the --repo ones (default: only"
        " without --repo)",
    )
    parser.add_option(
        "--no-buildroot-repo",
        action="store_false",
        dest="use_buildroot_repo",
        help="Never read the build tag's repo, only --repo and the treefile's own repos",
    )
    parser.add_option(
        "--base-image",
        metavar="IMAGE",
        help="Put the repository on top of this container image (with its transport,"
        " e.g. docker://quay.io/fedora/fedora-minimal:42)",
    )
    parser.add_option(
        "--delta-from",
        action="append",
        dest="delta_from",
        default=[],
        metavar="NVR|COUNT|none",
        help="Generate static deltas from these earlier builds (NVRs, may be used multiple"
        " times), from the COUNT latest builds in the destination tag, or none",
    )
    parser.add_option(
        "--engine",
        type="choice",
        choices=list(hostimage_options.ENGINES),
        help=f"Compose engine: {', '.join(hostimage_options.ENGINES)} (default: the builder's)",
    )
    parser.add_option("--sign-key", metavar="KEYID", help="GPG key id to sign the commit with")
    parser.add_option(
        "--priority",
        type="int",
        help="Task priority relative to the default (higher number = lower priority;"
        " negative values need admin)",
    )
    parser.add_option(
        "--background", action="store_true", help="Run the build at a lower priority"
    )
    parser.add_option(
        "--wait", action="store_true", help="Wait on the build, even if running in the background"
    )
    parser.add_option("--nowait", action="store_false", dest="wait", help="Don't wait on build")
    parser.add_option(
        "--noprogress",
        action="store_true",
        help="Do not display progress of the upload (accepted like build's; this command"
        " uploads nothing)",
    )
    parser.add_option(
        "--quiet",
        action="store_true",
        default=goptions.quiet,
        help="Do not print the task information",
    )
    return parser


def _task_opts(parser: OptionParser, build_opts: Any) -> dict[str, Any]:
    """The opts dict for hostImageBuild: only what the user set; checked before the call."""
    opts: dict[str, Any] = {}
    for key, flag in (("arches", "--arch"), ("failable_arches", "--failable-arch")):
        try:
            arches = [
                arch
                for value in getattr(build_opts, key)
                for arch in koji.parse_arches(value, to_list=True)
            ]
        except koji.GenericError as exc:
            parser.error(f"{flag}: {exc}")
        if arches:
            opts[key] = arches
    for key in ("scratch", "skip_tag"):
        if getattr(build_opts, key):
            opts[key] = True
    for key in ("name", "version", "release", "base_image", "engine", "sign_key"):
        value = getattr(build_opts, key)
        if value is not None:
            opts[key] = value
    if build_opts.repos:
        opts["repo"] = list(build_opts.repos)
    if build_opts.use_buildroot_repo is not None:
        opts["use_buildroot_repo"] = build_opts.use_buildroot_repo
    if build_opts.delta_from:
        opts["delta_from"] = _delta_from(parser, build_opts.delta_from)
    problems = hostimage_options.option_errors(opts)
    if problems:
        parser.error("; ".join(problems))
    return opts


def _delta_from(parser: OptionParser, values: list[str]) -> Any:
    """--delta-from: 'none', a count, or NVRs (repeatable); a single kind at a time."""
    if len(values) == 1 and values[0] == "none":
        return "none"
    if len(values) == 1 and values[0].isdigit():
        return int(values[0])
    if any(value == "none" or value.isdigit() for value in values):
        parser.error("--delta-from takes either NVRs, or one count, or 'none'")
    return list(values)


def _priority(parser: OptionParser, build_opts: Any) -> int | None:
    if build_opts.background and build_opts.priority is not None:
        parser.error("--background and --priority cannot be used together")
    if build_opts.background:
        return BACKGROUND_PRIORITY
    return build_opts.priority


def _is_unknown_method(exc: Exception, method: str) -> bool:
    """True when the hub answered that it has no such method (no plugin loaded).

    kojihub's HandlerRegistry.get raises koji.GenericError("Invalid method: NAME"), which
    the client receives as a fault and turns back into koji.GenericError.
    """
    text = str(exc)
    return "Invalid method" in text and method in text
