# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi.phases.weaver: run pipelines of phases in parallel threads."""

from __future__ import annotations

from kobo import shortcuts
from kobo.threads import ThreadPool, WorkerThread


class WeaverPhase:
    name = "weaver"

    def __init__(self, compose, phases_schema):
        self.compose = compose
        self.finished = False
        self.pool = ThreadPool(logger=compose._logger)
        if not phases_schema:
            raise ValueError("No running schema was set for WeaverPhase")
        self._phases_schema = phases_schema

    def start(self):
        for pipeline in shortcuts.force_list(self._phases_schema):
            self.pool.add(PipelineThread(self.pool))
            self.pool.queue_put(shortcuts.force_list(pipeline))
        self.pool.start()

    def stop(self):
        if self.finished:
            return
        self.pool.stop()
        self.finished = True


class PipelineThread(WorkerThread):
    def process(self, item, num):
        for phase in shortcuts.force_list(item):
            phase.start()
            phase.stop()
