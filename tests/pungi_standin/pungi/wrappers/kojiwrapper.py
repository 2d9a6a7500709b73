# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi.wrappers.kojiwrapper.KojiWrapper.

The session (``koji_proxy``) is whatever a test registered in ``HUBS`` for the compose's
``koji_profile``; ``koji_module.pathinfo`` is koji's real PathInfo on the hub's topdir.
watch_task asks the session for the task state instead of running ``koji watch-task``.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import koji

HUBS: dict = {}


class KojiWrapper:
    def __init__(self, compose):
        self.compose = compose
        self.profile = compose.conf["koji_profile"]
        self.koji_proxy = HUBS[self.profile]
        self.koji_module = SimpleNamespace(
            pathinfo=koji.PathInfo(topdir=self.koji_proxy.topdir),
            TASK_STATES=koji.TASK_STATES,
        )

    def login(self):
        self.koji_proxy.login()

    def save_task_id(self, task_id):
        """An empty file named after the task: pungi-koji cancels these when killed."""
        path = os.path.join(self.compose.paths.log.koji_tasks_dir(), str(task_id))
        with open(path, "w"):
            pass

    def watch_task(self, task_id, log_file=None, max_retries=None):
        state = self.koji_proxy.getTaskInfo(task_id)["state"]
        if log_file:
            with open(log_file, "w") as f:
                f.write(f"task {task_id}: {koji.TASK_STATES[state]}\n")
        return 0 if state == koji.TASK_STATES["CLOSED"] else 1
