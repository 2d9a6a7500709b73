# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for a Koji hub with this project's hub and builder plugins (tests only).

``hostImageBuild`` checks ``opts`` with the project's own options schema (as the hub
plugin does), then "builds" at once: one child task per arch, whose files (an OCI image
layout tar, its hostimage.json and compose.json, named as the builder plugin names them)
are written where koji's real ``PathInfo`` puts image builds (``imagebuild``) or, for
scratch builds, the child's work dir. A child fails when its arch is in ``fail_arches``;
the parent fails when a failed arch is not in ``failable_arches`` (the builder waits
with ``canfail=failable_arches``) or when no arch built at all. Like the builder's, the
parent's result is a message, so the build is found with ``listBuilds(taskID=...)``.
Every call is recorded in ``calls``.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import tarfile
from pathlib import Path

import koji

from koji_hostimage.koji.options import option_errors

CLOSED = koji.TASK_STATES["CLOSED"]
FAILED = koji.TASK_STATES["FAILED"]


class FakeKojiHub:
    def __init__(self, topdir, fail_arches=()):
        self.topdir = str(topdir)
        self.pathinfo = koji.PathInfo(topdir=self.topdir)
        self.fail_arches = set(fail_arches)
        self.calls = []
        self.logins = 0
        self.tasks = {}
        self.builds = {}
        self.archives = []
        self._ids = itertools.count(1000)

    def login(self):
        self.logins += 1

    # -- the call under test ---------------------------------------------------------

    def hostImageBuild(self, target, scm_url, treefile, opts=None, priority=None):
        problems = option_errors(opts or {})
        if problems:
            raise koji.ParameterError("\n".join(problems))
        self.calls.append(("hostImageBuild", target, scm_url, treefile, opts))
        opts = opts or {}
        parent = self._task("hostImageBuild", None, [target, scm_url, treefile, opts])
        nvr = {
            "name": opts.get("name") or Path(treefile).stem,
            "version": opts.get("version") or "1",
            "release": opts.get("release") or "1",
        }
        build = None if opts.get("scratch") else self._build(nvr, parent["id"])
        failed_required = False
        for arch in opts["arches"]:
            child = self._task("createHostImage", parent["id"], [arch, opts])
            if arch in self.fail_arches:
                child["state"] = FAILED
                failed_required |= arch not in opts.get("failable_arches", [])
                continue
            child["result"] = self._write_files(nvr, arch, child["id"], build)
            child["state"] = CLOSED
        # A build without a single image fails too: there is nothing to import.
        built = [t for t in self.getTaskChildren(parent["id"]) if t["state"] == CLOSED]
        failed_required = failed_required or not built
        parent["state"] = FAILED if failed_required else CLOSED
        where = self.pathinfo.imagebuild(build) if build else self.pathinfo.work()
        parent["result"] = f"host image build results in: {where}"
        if failed_required and build:
            build["state"] = koji.BUILD_STATES["FAILED"]
        return parent["id"]

    # -- what the phase reads back ---------------------------------------------------

    def getTaskInfo(self, task_id, request=False):
        return dict(self.tasks[task_id])

    def getTaskResult(self, task_id):
        task = self.tasks[task_id]
        if task["state"] != CLOSED:
            raise koji.GenericError(f"task {task_id} did not finish")
        return task.get("result")

    def getTaskChildren(self, task_id, request=False):
        return [dict(t) for t in self.tasks.values() if t["parent"] == task_id]

    def listBuilds(self, taskID=None, **kwargs):
        return [dict(b) for b in self.builds.values() if b["task_id"] == taskID]

    def getBuild(self, build_id):
        return dict(self.builds[build_id])

    def listArchives(self, buildID=None, type=None, **kwargs):
        found = []
        for archive in self.archives:
            if archive["build_id"] != buildID:
                continue
            archive = dict(archive)
            if type != "image":  # only the image listing joins in the arch
                archive.pop("arch")
            found.append(archive)
        return found

    # -- helpers -----------------------------------------------------------------------

    def _task(self, method, parent, request):
        task = {
            "id": next(self._ids),
            "method": method,
            "parent": parent,
            "state": koji.TASK_STATES["OPEN"],
            "request": request,
        }
        self.tasks[task["id"]] = task
        return task

    def _build(self, nvr, task_id):
        build = dict(
            nvr,
            build_id=next(self._ids),
            task_id=task_id,
            volume_name="DEFAULT",
            state=koji.BUILD_STATES["COMPLETE"],
        )
        build["nvr"] = "{name}-{version}-{release}".format(**build)
        self.builds[build["build_id"]] = build
        return build

    def _write_files(self, nvr, arch, child_id, build):
        base = "{name}-{version}-{release}".format(**nvr) + "." + arch
        files = {
            base + ".oci.tar": _oci_layout_tar(arch),
            base + ".hostimage.json": json.dumps(dict(nvr, arch=arch, schema_version=1)).encode(),
            base + ".compose.json": json.dumps({"ostree-version": nvr["version"]}).encode(),
        }
        if build:
            topdir = self.pathinfo.imagebuild(build)
        else:
            topdir = os.path.join(self.pathinfo.work(), self.pathinfo.taskrelpath(child_id))
        os.makedirs(topdir, exist_ok=True)
        for filename, data in files.items():
            Path(topdir, filename).write_bytes(data)
            if build:
                self.archives.append(
                    {
                        "id": next(self._ids),
                        "build_id": build["build_id"],
                        "filename": filename,
                        "type_name": "tar" if filename.endswith(".tar") else "json",
                        "size": len(data),
                        "arch": arch,
                    }
                )
        return {"arch": arch, "task_id": child_id, "files": sorted(files), "logs": []}


def _oci_layout_tar(arch):
    """A small but well-formed OCI image layout tar (no layers): distinct per arch."""
    members = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(
            {"schemaVersion": 2, "manifests": [], "annotations": {"arch": arch}}
        ).encode(),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
