# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi.scripts.pungi_koji: main() and run_compose() in pungi's shape.

The parts the hostimage entry point hooks are kept as pungi has them: --skip-phase and
--just-phase choices from PHASES_NAMES (read when main() runs), pungi.checks.validate,
run_compose building phases through ``pungi.phases`` attributes, the image phases run
by a WeaverPhase before image_checksum, write_compose_info, then images.json written
only when one of pungi's own image phases ran.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pungi import util
from pungi.phases import PHASES_NAMES

COMPOSE = None


def main():
    global COMPOSE
    parser = argparse.ArgumentParser()
    parser.add_argument("--compose-dir", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--label")
    parser.add_argument("--no-label", action="store_true")
    choices = PHASES_NAMES + ["productimg"]
    parser.add_argument("--skip-phase", choices=choices, action="append", default=[])
    parser.add_argument("--just-phase", choices=choices, action="append", default=[])
    opts = parser.parse_args()

    import pungi.checks
    from pungi.compose import Compose

    logger = logging.getLogger("pungi")
    conf = util.load_config(opts.config)
    errors, warnings = pungi.checks.validate(conf, offline=True)
    for message in warnings + errors:
        logger.warning(message)
    if errors:
        sys.exit(1)
    compose = Compose(
        conf,
        topdir=opts.compose_dir,
        skip_phases=opts.skip_phase,
        just_phases=opts.just_phase,
        logger=logger,
    )
    COMPOSE = compose
    run_compose(compose)


def run_compose(
    compose, create_latest_link=True, latest_link_status=None, latest_link_components=-1
):
    import pungi.metadata
    import pungi.phases

    compose.write_status("STARTED")
    compose.read_variants()
    osbuild_phase = pungi.phases.OSBuildPhase(compose)
    image_checksum_phase = pungi.phases.ImageChecksumPhase(compose)

    errors = []
    for phase in (osbuild_phase, image_checksum_phase):
        if phase.skip():
            continue
        try:
            phase.validate()
        except ValueError as ex:
            errors.extend(f"{phase.name.upper()}: {i}" for i in str(ex).splitlines())
    if errors:
        for line in errors:
            compose.log_error(line)
            print(line)
        raise RuntimeError("Configuration is not valid")

    compose_images_phase = pungi.phases.WeaverPhase(compose, (osbuild_phase,))
    post_image_phase = pungi.phases.WeaverPhase(compose, (image_checksum_phase,))
    extra_phase = pungi.phases.WeaverPhase(compose, ((compose_images_phase, post_image_phase),))
    extra_phase.start()
    extra_phase.stop()

    pungi.metadata.write_compose_info(compose)
    if not osbuild_phase.skip():
        compose.im.dump(compose.paths.compose.metadata("images.json"))
    compose.write_status("FINISHED")


def cli_main():
    try:
        main()
    except Exception:
        if COMPOSE:
            COMPOSE.write_status("DOOMED")
        raise
