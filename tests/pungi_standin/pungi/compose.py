# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi.compose.Compose: the attributes the hostimage phase reads.

Variants come from a JSON file (``variants_file``: {uid: [arches]}) instead of pungi's
variants XML; ``compose.im`` is a real productmd Images.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from types import SimpleNamespace

import kobo.log
from productmd.images import Images


@dataclass
class Variant:
    uid: str
    arches: list[str]
    is_empty: bool = False
    type: str = "variant"


@dataclass
class _Notifier:
    sent: list = field(default_factory=list)

    def send(self, msg, **kwargs):
        self.sent.append((msg, kwargs))


class ComposePaths:
    def __init__(self, topdir):
        self.topdir = topdir
        self.compose = SimpleNamespace(
            topdir=lambda: self._dir("compose"),
            metadata=lambda name: os.path.join(self._dir("compose", "metadata"), name),
            image_dir=self._image_dir,
            repository=self._repository,
        )
        self.log = SimpleNamespace(
            topdir=lambda arch=None, create_dir=True: self._dir("logs", arch or "global"),
            koji_tasks_dir=lambda create_dir=True: self._dir(
                "logs", "global", "koji-tasks", create=create_dir
            ),
        )

    def _dir(self, *parts, create=True):
        path = os.path.join(self.topdir, *parts)
        if create:
            os.makedirs(path, exist_ok=True)
        return path

    def _image_dir(self, variant, symlink_to=None, relative=False):
        path = os.path.join("compose", variant.uid, "%(arch)s", "images")
        return path[len("compose/") :] if relative else os.path.join(self.topdir, path)

    def _repository(self, arch, variant, create_dir=True, relative=False):
        path = os.path.join("compose", variant.uid, arch, "os")
        return path if relative else os.path.join(self.topdir, path)


class Compose(kobo.log.LoggingBase):
    def __init__(
        self,
        conf,
        topdir,
        skip_phases=None,
        just_phases=None,
        logger=None,
        notifier=None,
        **kwargs,
    ):
        kobo.log.LoggingBase.__init__(self, logger=logger)
        self.conf = conf
        self.topdir = os.path.abspath(topdir)
        os.makedirs(self.topdir, exist_ok=True)
        self.skip_phases = skip_phases or []
        self.just_phases = just_phases or []
        self.notifier = notifier or _Notifier()
        self.paths = ComposePaths(self.topdir)
        self.compose_date = "20260101"
        self.compose_respin = 0
        self.compose_type = "production"
        self.compose_id = "{}-{}-{}.{}".format(
            conf["release_short"],
            conf["release_version"],
            self.compose_date,
            self.compose_respin,
        )
        self.ci_base = SimpleNamespace(release=SimpleNamespace(version=conf["release_version"]))
        self.image_version = conf["release_version"]
        self.image_release = f"{self.compose_date}.{self.compose_respin}"
        self.variants = {}
        self.all_variants = {}
        self.required_deliverables = []
        self.attempted_deliverables = []
        self.failed_deliverables = []
        self.status = None
        self.im = Images()
        self.im.compose.id = self.compose_id
        self.im.compose.type = self.compose_type
        self.im.compose.date = self.compose_date
        self.im.compose.respin = self.compose_respin

    def read_variants(self):
        with open(self.conf["variants_file"]) as f:
            for uid, arches in json.load(f).items():
                self.variants[uid] = self.all_variants[uid] = Variant(uid, arches)

    def get_variants(self, types=None, arch=None):
        return [self.variants[uid] for uid in sorted(self.variants)]

    def require_deliverable(self, variant, arch, kind, subvariant=None):
        self.required_deliverables.append((variant.uid, arch, kind, subvariant))

    def attempt_deliverable(self, variant, arch, kind, subvariant=None):
        self.attempted_deliverables.append((variant.uid, arch, kind, subvariant))

    def fail_deliverable(self, variant, arch, kind, subvariant=None):
        self.failed_deliverables.append((variant.uid, arch, kind, subvariant))

    def write_status(self, status):
        self.status = status
        with open(os.path.join(self.topdir, "STATUS"), "w") as f:
            f.write(status + "\n")
