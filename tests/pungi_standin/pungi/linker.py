# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi.linker.Linker: link one file the way compose.conf["link_type"] says."""

from __future__ import annotations

import os
import shutil

import kobo.log


class Linker(kobo.log.LoggingBase):
    def __init__(self, ignore_existing=False, always_copy=None, test=False, logger=None):
        kobo.log.LoggingBase.__init__(self, logger=logger)

    def link(self, src, dst, link_type="hardlink-or-copy", scan=True):
        if link_type in ("hardlink", "hardlink-or-copy"):
            try:
                os.link(src, dst)
                return
            except OSError:
                if link_type == "hardlink":
                    raise
        if link_type in ("symlink", "abspath-symlink"):
            os.symlink(src, dst)
            return
        shutil.copy2(src, dst)
