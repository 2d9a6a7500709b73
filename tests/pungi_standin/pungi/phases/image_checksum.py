# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi.phases.image_checksum: fill Image.checksums with kobo's digests."""

from __future__ import annotations

import os

from kobo import shortcuts

from .base import PhaseBase


class ImageChecksumPhase(PhaseBase):
    name = "image_checksum"

    def skip(self):
        # As in pungi: never skipped, images.json cannot be written without checksums.
        return False

    def run(self):
        topdir = self.compose.paths.compose.topdir()
        for variant in self.compose.im.images.values():
            for images in variant.values():
                for image in images:
                    path = os.path.join(topdir, image.path)
                    digests = shortcuts.compute_file_checksums(
                        path, self.compose.conf["media_checksums"]
                    )
                    for kind, digest in digests.items():
                        image.add_checksum(None, kind, digest)
