# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi.phases.base: the phase classes and mixins the hostimage phase uses."""

from __future__ import annotations

import logging

from pungi import util


class PhaseBase:
    def __init__(self, compose):
        self.compose = compose
        self.msg = f"---------- PHASE: {self.name.upper()} ----------"
        self.finished = False
        self._skipped = False
        self.used_patterns = None

    def validate(self):
        pass

    def skip(self):
        if self._skipped:
            return True
        if self.compose.just_phases and self.name not in self.compose.just_phases:
            return True
        if self.name in self.compose.skip_phases:
            return True
        return self.name in self.compose.conf.get("skip_phases", [])

    def start(self):
        self._skipped = self.skip()
        if self._skipped:
            self.compose.log_warning(f"[SKIP ] {self.msg}")
            self.finished = True
            return
        self.compose.log_info(f"[BEGIN] {self.msg}")
        self.run()

    def get_config_block(self, variant, arch=None):
        self.used_patterns = self.used_patterns or set()
        return util.get_variant_data(
            self.compose.conf, self.name, variant, keys=self.used_patterns
        )

    def stop(self):
        if self.finished:
            return
        if hasattr(self, "pool"):
            self.pool.stop()
        self.finished = True
        self.compose.log_info(f"[DONE ] {self.msg}")

    def run(self):
        raise NotImplementedError


class ConfigGuardedPhase(PhaseBase):
    """Skipped unless its config option is set."""

    def skip(self):
        if super().skip():
            return True
        if not self.compose.conf.get(self.name):
            self.compose.log_info(f"Config section '{self.name}' was not found. Skipping.")
            return True
        return False


class ImageConfigMixin:
    """Block setting, else <phase>_<opt>, else global_<opt>."""

    def get_config(self, cfg, opt):
        return cfg.get(
            opt,
            self.compose.conf.get(f"{self.name}_{opt}", self.compose.conf.get(f"global_{opt}")),
        )

    def get_version(self, cfg):
        return (
            util.version_generator(self.compose, self.get_config(cfg, "version"))
            or self.get_config(cfg, "version")
            or self.compose.image_version
        )

    def get_release(self, cfg):
        for key, conf in [
            ("release", cfg),
            (f"{self.name}_release", self.compose.conf),
            ("global_release", self.compose.conf),
        ]:
            if key in conf:
                return (
                    util.version_generator(self.compose, conf[key]) or self.compose.image_release
                )
        return None


class PhaseLoggerMixin:
    """A logger named after the phase, with the compose logger's handlers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logger = None
        if self.compose._logger and self.compose._logger.handlers:
            self.logger = logging.getLogger(self.name.upper())
            self.logger.setLevel(logging.DEBUG)
            for handler in self.compose._logger.handlers:
                self.logger.addHandler(handler)
