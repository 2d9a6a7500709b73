# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for kojid and kojihub (neither is installable here), for the builder plugin.

What is real and what is not:

- REAL: ``koji.tasks.BaseTaskHandler`` / ``MultiPlatformTask`` (wait, subtask, getRepo,
  uploadFile, workdir, run), ``koji.daemon.SCM`` (URL parsing, allowed_scms, a real git
  checkout over HTTP), ``koji.plugin.PluginTracker`` (loads the plugin the way kojid does),
  ``koji.util.RepoWatcher`` (through getRepo), and every command the plugin runs.
- STAND-IN ``StandinBuildRoot``: kojid's ``BuildRoot`` without mock. ``mock(args)`` records
  its argv and runs the command after ``--`` on this host, in a temporary "root"
  directory: ``--cwd`` and every absolute path in the argv whose first component exists
  in that root (e.g. ``/chroot_tmpdir/...``) are mapped to the host path below the root,
  which is what mock's chroot does the other way round. Like kojid's, ``mock`` appends the
  command's output to ``<workdir>/mock_output.log``, polls the child, returns the raw
  wait status, and does NOT stop its child when interrupted.
- STAND-IN ``BaseBuildTask`` / ``BuildImageTask``: kojid's two base classes, re-written
  here on the real koji.tasks classes (``initImageBuild`` does what kojid's does).
- STAND-IN ``StandinHub``: a hub session that records every call in ``calls`` (name,
  args, kwargs), stores uploads under ``upload_root/<task path>/``, and answers the
  queries the plugin makes from small in-memory tables. Subtasks run synchronously
  through ``child_runner`` (canned results or the real child handler).
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import koji
import koji.plugin
import koji.tasks

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "plugins" / "builder"
CHROOT_TMPDIR = "/chroot_tmpdir"  # kojid's default chroot_tmpdir option


# ----------------------------------------------------------------------------- options


def standin_options(base: Path, topurl: str | None = None, allowed_scms: str = "",
                    topdir: str | None = None) -> types.SimpleNamespace:
    """kojid's options object with the settings the plugin and the base classes read."""
    return types.SimpleNamespace(
        topurl=topurl,
        topdir=topdir or str(base / "topdir"),
        workdir=str(base / "work"),
        mockdir=str(base / "mock"),
        chroot_tmpdir=CHROOT_TMPDIR,
        allowed_scms=allowed_scms,
        allowed_scms_use_config=True,
        allowed_scms_use_policy=False,
        allow_password_in_scm_url=False,
        log_timestamps=False,
        literal_task_arches="",
    )


# ----------------------------------------------------------------------------- buildroot


class StandinBuildRoot:
    """kojid's BuildRoot, minus mock: see the module docstring."""

    instances: list[StandinBuildRoot] = []

    def __init__(self, session, options, tag, arch, task_id, repo_id=None,
                 install_group="build", setup_dns=False, bind_opts=None, **_ignored):
        if not repo_id:
            raise koji.BuildrootError("A repo id must be provided")
        self.session = session
        self.options = options
        self.repo_info = session.repoInfo(repo_id, strict=True)
        self.config = session.getBuildConfig(tag, event=self.repo_info["create_event"])
        self.tag_id = self.config["id"]
        self.tag_name = self.config["name"]
        self.br_arch = koji.canonArch(arch)
        self.task_id = task_id
        self.install_group = install_group
        self.setup_dns = setup_dns
        self.bind_opts = bind_opts
        self.id = session.host.newBuildRoot(repo_id, self.br_arch, task_id=task_id)
        self.name = f"{self.tag_name}-{self.id}-{repo_id}"
        self.workdir: str | None = None
        self.mock_calls: list[list[str]] = []
        self.initialized = False
        self.expired = False
        StandinBuildRoot.instances.append(self)

    # kojid's path helpers
    def rootdir(self) -> str:
        return f"{self.options.mockdir}/{self.name}/root"

    def resultdir(self) -> str:
        return f"{self.options.mockdir}/{self.name}/result"

    def tmpdir(self, within: bool = False) -> str:
        base = self.options.chroot_tmpdir
        return base if within else f"{self.rootdir()}{base}"

    def path_without_to_within(self, path: str) -> str:
        root = self.rootdir()
        if os.path.commonprefix([root, path]) != root:
            raise ValueError(f"path {path!r} is not within the BuildRoot at {root!r}")
        return os.path.join("/", os.path.relpath(path, root))

    def init(self) -> None:
        Path(self.tmpdir()).mkdir(parents=True, exist_ok=True)
        Path(self.resultdir()).mkdir(parents=True, exist_ok=True)
        self.initialized = True
        self.session.host.setBuildRootList(self.id, [])

    def expire(self) -> None:
        self.expired = True
        self.session.host.setBuildRootState(self.id, "EXPIRED")

    def markExternalRPMs(self, rpmlist: list[dict[str, Any]]) -> None:  # noqa: N802
        """builder/kojid BuildRoot.markExternalRPMs: nothing without external repos; else
        every rpm must have an origin in the repo's pkgorigins (here: the hub's
        ``repo_origins``, NVRA -> "internal" or an external repo dict), walked in order,
        raising at the first one without ("No origin for %s")."""
        repos = self.session.getExternalRepoList(self.repo_info["tag_id"],
                                                 event=self.repo_info["create_event"])
        if not repos:
            return
        for rpm_info in rpmlist:
            key = "{name}-{version}-{release}.{arch}".format(**rpm_info)
            origin = self.session.repo_origins.get(key)
            if not origin:
                raise koji.BuildError(f"No origin for {key}")
            if origin == "internal":
                continue
            rpm_info["external_repo"] = origin
            rpm_info["location"] = origin["external_repo_id"]

    # mock
    def mock(self, args: list[str]) -> int:
        self.mock_calls.append(list(args))
        args = list(args)
        cwd = None
        if "--cwd" in args:
            index = args.index("--cwd")
            cwd = self._to_host(args[index + 1])
            del args[index:index + 2]
        if args[:2] != ["--chroot", "--"]:
            raise AssertionError(f"stand-in mock only runs '--chroot -- CMD', got {args}")
        command = [self._to_host(arg) for arg in args[2:]]
        log_path = Path(self.workdir) / "mock_output.log" if self.workdir else None
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            # Its own session, like mock: a signal to the task process does not reach it.
            proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            while True:  # kojid polls with WNOHANG; interrupting this leaves the child
                pid, status = os.waitpid(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = 0  # reaped here; keep Popen from waiting again
                    return status
                time.sleep(0.05)
        finally:
            if log_path:
                out.close()

    _PATH_RE = re.compile(r"(^|=|file://)(/[^\s=:,]*)")

    def _to_host(self, text: str) -> str:
        root = self.rootdir()

        def replace(match: re.Match[str]) -> str:
            path = match.group(2)
            first = path.lstrip("/").split("/", 1)[0]
            if first and os.path.exists(os.path.join(root, first)):
                return match.group(1) + root + path
            return match.group(0)

        return self._PATH_RE.sub(replace, text)


# ----------------------------------------------------------------------------- tasks


class BaseBuildTask(koji.tasks.BaseTaskHandler):
    """kojid's BaseBuildTask (its only addition: checkHostArch)."""

    def checkHostArch(self, tag, hostdata, event=None):  # noqa: N802
        tagref = tag.get("id") if isinstance(tag, dict) else tag
        config = self.session.getBuildConfig(tagref, event=event)
        if config and config["arches"]:
            tag_arches = {koji.canonArch(a) for a in config["arches"].split()}
            return bool(tag_arches & set(hostdata["arches"].split()))
        return True


class BuildImageTask(koji.tasks.MultiPlatformTask):
    """kojid's BuildImageTask: initImageBuild checks the package list, then asks the hub."""

    def initImageBuild(self, name, version, release, target_info, opts):  # noqa: N802
        pkg_cfg = self.session.getPackageConfig(target_info["dest_tag_name"], name)
        if not opts.get("skip_tag") and not opts.get("scratch"):
            if pkg_cfg is None:
                raise koji.BuildError(f"package (image) {name} not in list for tag"
                                      f" {target_info['dest_tag_name']}")
            if pkg_cfg["blocked"]:
                raise koji.BuildError(f"package (image) {name} is blocked for tag"
                                      f" {target_info['dest_tag_name']}")
        return self.session.host.initImageBuild(
            self.id, dict(name=name, version=version, release=release, epoch=0))


_plugin = None

def load_plugin():
    """Put the stand-in classes into ``__main__`` (the plugin does ``from __main__ import
    BuildRoot, ...`` as under kojid) and load the plugin with koji's PluginTracker."""
    global _plugin
    if _plugin is None:
        main = sys.modules["__main__"]
        main.BuildRoot = StandinBuildRoot
        main.BaseBuildTask = BaseBuildTask
        main.BuildImageTask = BuildImageTask
        tracker = koji.plugin.PluginTracker(path=str(PLUGIN_DIR), prefix="_standin_kojid_")
        _plugin = tracker.load("hostimage")
    return _plugin


# ----------------------------------------------------------------------------- hub


class _Recorder:
    def __init__(self, hub: StandinHub, prefix: str, impl: Any):
        self._hub, self._prefix, self._impl = hub, prefix, impl

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._impl, name)

        def call(*args, **kwargs):
            self._hub.calls.append((f"{self._prefix}{name}", args, kwargs))
            return method(*args, **kwargs)

        return call


def fault_of(exc: BaseException) -> dict[str, Any]:
    """What the hub stores for a failed task (koji.daemon.TaskManager.runTask's rule:
    a koji.GenericError's message passes through; anything else becomes a traceback)."""
    if isinstance(exc, koji.GenericError):
        return {"faultCode": exc.faultCode, "faultString": str(exc)}
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"faultCode": 1, "faultString": text}


@dataclass
class StandinHub:
    """A recording hub session; see the module docstring."""

    upload_root: Path
    tag_arches: str = "x86_64 aarch64"
    new_chroot: Any = None  # the tag's mock.new_chroot extra; None: not set (mock's nspawn)
    child_runner: Callable[[StandinHub, str, list[Any], int], Any] | None = None
    calls: list[tuple[str, tuple, dict]] = field(default_factory=list)
    tagged: list[dict[str, Any]] = field(default_factory=list)
    archives: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)
    external_repos: list[dict[str, Any]] = field(default_factory=list)
    # NVRA -> "internal" or an external repo dict: the build tag repo's pkgorigins.
    repo_origins: dict[str, Any] = field(default_factory=dict)
    # The hub's rpminfo table (kojihub get_rpm's fields), for getRPM.
    rpms: list[dict[str, Any]] = field(default_factory=list)
    fail_methods: dict[str, Exception] = field(default_factory=dict)
    package_listed: bool = True

    TARGET = {"id": 1, "name": "hostimage-target", "build_tag": 10,
              "build_tag_name": "hostimage-build", "dest_tag": 20,
              "dest_tag_name": "hostimage-dest"}
    REPO = {"id": 100, "tag_id": 10, "tag_name": "hostimage-build", "create_event": 1000,
            "state": koji.REPO_READY, "opts": None, "dist": False}

    def __post_init__(self):
        self.opts: dict[str, Any] = {}
        self.results: dict[int, Any] = {}
        self.waiting: dict[int, list[int]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(5000)
        self._build_ids = itertools.count(700)
        self._broot_ids = itertools.count(42)
        self.host = _Recorder(self, "host.", _HostImpl(self))
        # koji.ClientSession's multicall: false as a flag, a MultiCallSession when called.
        self.multicall = koji.MultiCallHack(weakref.ref(self))
        self.logger = logging.getLogger("koji")  # MultiCallSession logs through it
        self.repo = _Recorder(self, "repo.", _RepoImpl(self))

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        # Only the session API (methods) is recorded, not data such as child_runner.
        if name.startswith("_") or not isinstance(value, types.MethodType) \
                or name in _NOT_RECORDED:
            return value

        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name in self.fail_methods:
                raise self.fail_methods[name]
            return value(*args, **kwargs)

        return call

    # helpers for tests
    def new_task(self, method: str, arch: str = "noarch", parent: int | None = None,
                 request: list[Any] | None = None) -> int:
        task_id = next(self._ids)
        self.tasks[task_id] = {"id": task_id, "method": method, "arch": arch, "owner": 1,
                               "channel_id": 2, "parent": parent, "request": request or [],
                               "state": koji.TASK_STATES["OPEN"]}
        return task_id

    def called(self, prefix: str = "") -> list[str]:
        return [name for name, _, _ in self.calls if name.startswith(prefix)]

    def call_args(self, name: str) -> list[tuple[tuple, dict]]:
        return [(args, kwargs) for n, args, kwargs in self.calls if n == name]

    def task_dir(self, task_id: int) -> Path:
        return self.upload_root / koji.pathinfo.taskrelpath(task_id)

    # session API (recorded)
    def getBuildTarget(self, info, event=None, strict=False):  # noqa: N802
        if info in (self.TARGET["name"], self.TARGET["id"]):
            return dict(self.TARGET)
        if strict:
            raise koji.GenericError(f"No such build target: {info}")
        return None

    def getBuildConfig(self, tag, event=None):  # noqa: N802
        extra = {} if self.new_chroot is None else {"mock.new_chroot": self.new_chroot}
        return {"id": 10, "name": "hostimage-build", "arches": self.tag_arches,
                "extra": extra}

    def getTag(self, tag, strict=False, event=None):  # noqa: N802
        return {"id": 10, "name": "hostimage-build", "arches": self.tag_arches}

    def repoInfo(self, repo_id, strict=False):  # noqa: N802
        return dict(self.REPO)

    def getNextRelease(self, build_info):  # noqa: N802
        """kojihub get_next_release: the latest build of that name and version (here,
        in ``builds``) with its release incremented; "1" when there is none."""
        releases = [int(b["release"]) for b in self.builds.values()
                    if (b["name"], b["version"]) == (build_info["name"], build_info["version"])]
        return str(max(releases) + 1) if releases else "1"

    def getPackageConfig(self, tag, pkg, event=None):  # noqa: N802
        return {"blocked": False, "owner_id": 1} if self.package_listed else None

    def getTaskInfo(self, task_id, request=False, strict=False):  # noqa: N802
        return dict(self.tasks[task_id])

    def getChannel(self, channel_id, strict=False):  # noqa: N802
        return {"id": channel_id, "name": "image"}

    def getTaskResult(self, task_id, raise_fault=True):  # noqa: N802
        result = self.results[task_id]
        if isinstance(result, dict) and "faultCode" in result and raise_fault:
            raise koji.GenericError(result["faultString"])
        return result

    def cancelTaskChildren(self, task_id):  # noqa: N802
        return None

    def listTagged(self, tag, event=None, inherit=False, prefix=None, latest=False,  # noqa: N802
                   package=None, owner=None, type=None):
        return [dict(b) for b in self.tagged if package is None or b["name"] == package]

    def listArchives(self, buildID=None, type=None, **kwargs):  # noqa: N802, N803
        return [dict(a) for a in self.archives.get(buildID, [])]

    def getBuild(self, build_info, strict=False):  # noqa: N802
        if build_info in self.builds:
            return dict(self.builds[build_info])
        if strict:
            raise koji.GenericError(f"No such build: {build_info}")
        return None

    def getRPM(self, rpminfo, strict=False, multi=False):  # noqa: N802
        """kojihub get_rpm for a dict: match name, version, release, arch (and location:
        an external repo's name or id); prefer internal rpms, then the newest external."""
        keys = ("name", "version", "release", "arch")
        found = [dict(r) for r in self.rpms if all(r[k] == rpminfo[k] for k in keys)]
        location = rpminfo.get("location")
        if location is not None:
            found = [r for r in found if location in (r["external_repo_id"],
                                                      r.get("external_repo_name"))]
        if multi:
            return found
        if not found:
            if strict:
                raise koji.GenericError(f"No such rpm: {rpminfo!r}")
            return None
        internal = [r for r in found if not r["external_repo_id"]]
        return internal[0] if internal else max(found, key=lambda r: r["id"])

    def _callMethod(self, name, args, kwargs=None, retry=True):  # noqa: N802
        """Only what koji.MultiCallSession sends: kojihub's multiCall, each call's result
        as a one-item list, a fault as a dict (kojihub/kojixmlrpc.py multiCall)."""
        assert name == "multiCall", name
        results = []
        for call in args[0]:
            call_args, call_kwargs = koji.decode_args(*call["params"])
            try:
                results.append([getattr(self, call["methodName"])(*call_args, **call_kwargs)])
            except koji.GenericError as exc:
                results.append({"faultCode": exc.faultCode, "faultString": str(exc),
                                "traceback": ""})
        return results

    def getExternalRepoList(self, tag_info, event=None):  # noqa: N802
        return list(self.external_repos)

    def tagLastChangeEvent(self, tag_id):  # noqa: N802
        return 900

    def uploadWrapper(self, localfile, path, name=None, callback=None,  # noqa: N802
                      blocksize=None, overwrite=True, volume=None):
        dest = self.upload_root / path / (name or os.path.basename(localfile))
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() and not overwrite:
            raise koji.GenericError(f"upload exists: {dest}")
        shutil.copyfile(localfile, dest)

    def uploadFile(self, path, name, size, chksum, offset, data, volume=None):  # noqa: N802
        """The incremental upload koji.daemon.incremental_upload uses for logs."""
        dest = self.upload_root / path / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        raw = base64.b64decode(data)
        with open(dest, "r+b" if dest.exists() else "wb") as fh:
            fh.seek(offset)
            fh.write(raw)
        return True


    def _forget(self) -> None:
        """ClientSession._forget: called in forked children (SCM checkout, log_output)."""


# Test helpers on the hub, not session calls: not recorded.
_NOT_RECORDED = {"new_task", "called", "call_args", "task_dir"}


class _RepoImpl:
    def __init__(self, hub: StandinHub):
        self.hub = hub

    def request(self, tag, min_event=None, at_event=None, opts=None):
        return {"repo": dict(self.hub.REPO), "request": None}


class _HostImpl:
    def __init__(self, hub: StandinHub):
        self.hub = hub

    def _maybe_fail(self, name: str) -> None:
        if f"host.{name}" in self.hub.fail_methods:
            raise self.hub.fail_methods[f"host.{name}"]

    def initImageBuild(self, task_id, build_info):  # noqa: N802
        self._maybe_fail("initImageBuild")
        data = dict(build_info, id=next(self.hub._build_ids), task_id=task_id)
        data["release"] = data.get("release") or "1"
        return data

    def completeImageBuild(self, task_id, build_id, results):  # noqa: N802
        self._maybe_fail("completeImageBuild")

    def moveImageBuildToScratch(self, task_id, results):  # noqa: N802
        self._maybe_fail("moveImageBuildToScratch")

    def failBuild(self, task_id, build_id):  # noqa: N802
        self._maybe_fail("failBuild")

    def subtask(self, method, arglist, parent, **opts):
        hub = self.hub
        task_id = hub.new_task(method, arch=opts.get("arch", "noarch"), parent=parent,
                               request=list(arglist))
        if method == "tagBuild":
            hub.results[task_id] = None
        elif hub.child_runner is None:
            raise AssertionError(f"no child_runner for subtask {method}")
        else:
            try:
                hub.results[task_id] = hub.child_runner(hub, method, list(arglist), task_id)
            except Exception as exc:
                hub.results[task_id] = fault_of(exc)
        return task_id

    def taskSetWait(self, parent, tasks):  # noqa: N802
        # like the hub: the parent now waits on these (None: on all its children)
        children = [t for t, info in self.hub.tasks.items() if info["parent"] == parent]
        self.hub.waiting[parent] = list(children if tasks is None else tasks)

    def taskWait(self, parent):  # noqa: N802
        return list(self.hub.waiting.get(parent, [])), []  # subtasks ran synchronously

    def taskWaitResults(self, parent, tasks, canfail=None):  # noqa: N802
        canfail = canfail or []
        results = []
        for task_id in tasks:
            result = self.hub.results[task_id]
            if isinstance(result, dict) and "faultCode" in result and task_id not in canfail:
                raise koji.GenericError(result["faultString"])
            results.append([task_id, result])
        return results

    def newBuildRoot(self, repo_id, arch, task_id=None):  # noqa: N802
        return next(self.hub._broot_ids)

    def setBuildRootList(self, brootid, rpmlist, task_id=None):  # noqa: N802
        return None

    def setBuildRootState(self, brootid, state, task_id=None):  # noqa: N802
        return None


# ----------------------------------------------------------------------------- running


def make_handler(cls, hub: StandinHub, options, method: str, params: list[Any],
                 task_id: int | None = None):
    """A handler instance, as kojid's TaskManager creates one for a task."""
    if task_id is None:
        task_id = hub.new_task(method, request=params)
    return cls(task_id, method, params, hub, options)


def run_like_kojid(handler) -> tuple[str, Any]:
    """Run a handler the way kojid's TaskManager.runTask does.

    Returns ("closed", result) or ("failed", fault dict); the fault string follows
    runTask's rule (koji.GenericError: its message; anything else: the traceback).
    """
    try:
        return "closed", handler.run()
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        return "failed", fault_of(exc)
