# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-INS for a Koji hub as the koji CLI sees it; used only by tests/test_cli_plugin.py.

- ``StandInHub``: the hub's answers to the calls the ``hostimage-build`` command,
  koji_cli's ``watch_tasks`` and ``koji taskinfo`` make (hostImageBuild, getTaskInfo,
  getTaskChildren, getTaskResult, getTaskRequest, getHost, getUser, listBuildroots,
  listBuilds, listTaskOutput, logout, getAPIVersion), with scripted task
  states, recording every call. Errors are real koji exceptions, worded as kojihub words
  them (e.g. ``Invalid method: NAME`` from kojixmlrpc's HandlerRegistry.get).
- ``StandInSession``: a StandInHub used in-process in place of koji.ClientSession.
- ``FakeHubServer``: the same StandInHub behind a real XML-RPC endpoint on 127.0.0.1 (a
  random free port), answering faults the way kojixmlrpc does, so the installed ``koji``
  executable with a real koji.ClientSession can talk to it over HTTP.
"""

from __future__ import annotations

import socketserver
import threading
import xmlrpc.client
from dataclasses import dataclass, field
from typing import Any
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

import koji


@dataclass
class ScriptedTask:
    """A task whose state advances one step per getTaskInfo call, then stays."""

    task_id: int
    method: str
    arch: str
    request: list[Any]
    states: list[str]
    parent: int | None = None
    failure: str = ""
    calls: int = 0

    def info(self) -> dict[str, Any]:
        state = self.states[min(self.calls, len(self.states) - 1)]
        self.calls += 1
        return {
            "id": self.task_id,
            "method": self.method,
            "arch": self.arch,
            "request": self.request,
            "state": koji.TASK_STATES[state],
            "host_id": 3 if state == "OPEN" else None,
            "parent": self.parent,
            "owner": 7,
            "priority": koji.PRIO_DEFAULT,
            "label": None,
            "channel_id": 1,
            "waiting": None,
            "awaited": None,
            "weight": 1.0,
            "create_ts": 1764680400.0,
            "start_ts": None,
            "completion_ts": None,
        }


@dataclass
class StandInHub:
    """What the hub answers; ``has_plugin=False`` plays a hub without the hostimage plugin.

    ``parent_states`` and ``child_states`` script the hostImageBuild task and one
    createHostImage child per entry of ``child_arches``.
    """

    has_plugin: bool = True
    parent_states: list[str] = field(default_factory=lambda: ["FREE", "OPEN", "CLOSED"])
    child_arches: list[str] = field(default_factory=lambda: ["x86_64"])
    child_states: list[str] = field(default_factory=lambda: ["OPEN", "CLOSED"])
    failure: str = "compose failed: rpm-ostree exited with 1"
    calls: list[tuple[str, tuple, dict]] = field(default_factory=list)
    tasks: dict[int, ScriptedTask] = field(default_factory=dict)
    next_task_id: int = 4200

    def dispatch(self, method: str, args: tuple, kwargs: dict) -> Any:
        self.calls.append((method, tuple(args), dict(kwargs)))
        handler = getattr(self, "rpc_" + method, None)
        if handler is None or (method == "hostImageBuild" and not self.has_plugin):
            raise koji.GenericError(f"Invalid method: {method}")
        return handler(*args, **kwargs)

    def calls_to(self, method: str) -> list[tuple[tuple, dict]]:
        return [(args, kwargs) for name, args, kwargs in self.calls if name == method]

    # --- the hub API -----------------------------------------------------------------------

    def rpc_getAPIVersion(self):  # noqa: N802 (the hub's names)
        return koji.API_VERSION

    def rpc_hostImageBuild(self, target, scm_url, treefile, opts=None, priority=None):  # noqa: N802
        parent = self._new_task("hostImageBuild", "noarch", [target, scm_url, treefile, opts])
        parent.states = list(self.parent_states)
        parent.failure = self.failure if "FAILED" in self.parent_states else ""
        for arch in self.child_arches:
            child = self._new_task("createHostImage", arch, ["host", "1", "1", arch])
            child.parent = parent.task_id
            child.states = list(self.child_states)
            child.failure = self.failure if "FAILED" in self.child_states else ""
        return parent.task_id

    def rpc_getTaskInfo(self, task_id, request=False):  # noqa: N802
        task = self.tasks.get(task_id)
        return task.info() if task else None

    def rpc_getTaskChildren(self, task_id, request=False, strict=False):  # noqa: N802
        return [
            {"id": t.task_id, "method": t.method, "arch": t.arch}
            for t in self.tasks.values()
            if t.parent == task_id
        ]

    def rpc_getTaskResult(self, task_id, raise_fault=True):  # noqa: N802
        task = self.tasks[task_id]
        if task.failure:
            raise koji.GenericError(task.failure)
        return {"arch": task.arch}

    def rpc_getHost(self, hostInfo, strict=False, event=None):  # noqa: N802, N803
        return {"id": hostInfo, "name": "builder-01.example.com"}

    def rpc_listTaskOutput(self, taskID, stat=False, all_volumes=False, strict=False):  # noqa: N802, N803
        return {f"compose-{self.tasks[taskID].arch}.log": ["DEFAULT"]} if all_volumes else []

    # what `koji taskinfo` (koji_cli.commands._printTaskInfo) asks
    def rpc_getTaskRequest(self, taskId):  # noqa: N802, N803
        return self.tasks[taskId].request

    def rpc_listBuildroots(self, taskID=None, **kwargs):  # noqa: N802, N803
        return []

    def rpc_listBuilds(self, taskID=None, **kwargs):  # noqa: N802, N803
        return []

    def rpc_getUser(self, userInfo=None, strict=False, krb_princs=True, groups=False):  # noqa: N802, N803
        return {"id": userInfo, "name": "alice"}

    def rpc_logout(self, session_id=None):
        return None

    def _new_task(self, method: str, arch: str, request: list[Any]) -> ScriptedTask:
        self.next_task_id += 1
        task = ScriptedTask(self.next_task_id, method, arch, request, ["FREE"])
        self.tasks[task.task_id] = task
        return task


class StandInSession:
    """In-process stand-in for koji.ClientSession, already logged in, backed by a hub."""

    def __init__(self, hub: StandInHub):
        self.hub = hub
        self.logged_in = True
        self.hub_version = (1, 36, 1)

    def logout(self):
        self.hub.dispatch("logout", (), {})

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.hub.dispatch(name, args, kwargs)


class _KojiXMLRPCServer(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    """Decodes koji's keyword-argument encoding and answers faults like kojixmlrpc."""

    daemon_threads = True

    def __init__(self, hub: StandInHub):
        super().__init__(
            ("127.0.0.1", 0), requestHandler=_QuietHandler, allow_none=True, logRequests=False
        )
        self.hub = hub
        self.lock = threading.Lock()

    def _dispatch(self, method, params):
        args, kwargs = koji.decode_args(*params)
        with self.lock:
            try:
                return self.hub.dispatch(method, tuple(args), kwargs)
            except koji.GenericError as exc:
                # kojixmlrpc._log_exception: faultCode from the class, faultString = str(e)
                raise xmlrpc.client.Fault(exc.faultCode, str(exc)) from None


class _QuietHandler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/kojihub",)

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's name)
        pass


class FakeHubServer:
    """A StandInHub served over real XML-RPC/HTTP on 127.0.0.1; use as a context manager."""

    def __init__(self, hub: StandInHub):
        self.hub = hub
        self.server = _KojiXMLRPCServer(hub)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
