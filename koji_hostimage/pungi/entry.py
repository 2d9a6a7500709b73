# SPDX-License-Identifier: GPL-2.0-or-later
"""``pungi-koji-hostimage``: pungi-koji with the ``hostimage`` phase registered.

pungi has no plugin mechanism: its phases are hard-coded in ``pungi/phases/__init__.py``
(``PHASES_NAMES``), ``pungi/checks.py`` (``make_schema``) and
``pungi/scripts/pungi_koji.py`` (``run_compose`` builds every phase and the
``WeaverPhase`` schemas that run them). ``register()`` hooks an unmodified pungi at the
few module attributes those functions look up when they run, then ``main()`` runs
pungi-koji's own ``cli_main`` (its signal handlers cancel the compose's Koji tasks on a
kill) with the same arguments:

- ``pungi.phases.PHASES_NAMES`` (one list, shared by ``pungi_koji`` and ``pungi.checks``)
  gets "hostimage": ``--skip-phase hostimage``, ``--just-phase hostimage`` and
  ``skip_phases = ["hostimage"]`` are accepted.
- ``pungi.checks.make_schema`` returns the schema extended by ``schema.py``:
  ``pungi.checks.validate`` checks the hostimage options with everything else.
- ``pungi_koji.run_compose`` validates the phase where it validates its own: right
  after ``compose.read_variants()`` (the phase checks its blocks against the variants)
  and before any phase runs, failing the same way ("Configuration is not valid").
- ``pungi.phases.WeaverPhase``: the weaver that runs the image phases in parallel (the
  one whose schema holds the osbuild / image-build phase) gets the hostimage phase as
  one more parallel pipeline, so it runs beside them and before image_checksum.
- ``pungi.metadata.write_compose_info`` also writes images.json when the hostimage phase
  ran: pungi writes it only when one of its own image phases ran.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from koji_hostimage.errors import HostImageError

log = logging.getLogger(__name__)

PHASE_NAME = "hostimage"
# Phases whose presence in a WeaverPhase schema marks the image-building weaver.
IMAGE_PHASE_ANCHORS = ("OSBuildPhase", "ImageBuildPhase", "KiwiBuildPhase", "LiveMediaPhase")

# One hostimage phase per compose: created for validation, reused by the weaver hook and
# asked by the images.json hook whether it ran.
_PHASES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
# The original pungi attributes, to undo register() (tests, re-entrant callers).
_ORIGINALS: dict[str, Any] = {}


class PungiMissingError(HostImageError):
    """pungi is not installed, so there is nothing to register the phase into."""


def main(argv: Sequence[str] | None = None) -> Any:
    """Register the phase, then run pungi-koji with ``argv`` (default: sys.argv[1:])."""
    register()
    from pungi.scripts import pungi_koji

    if argv is not None:
        # pungi-koji parses sys.argv itself; its usage messages name this program.
        sys.argv = [sys.argv[0] if sys.argv else "pungi-koji-hostimage", *argv]
    run = getattr(pungi_koji, "cli_main", None) or pungi_koji.main
    return run()


def register() -> None:
    """Hook the hostimage phase into the installed pungi (idempotent)."""
    if _ORIGINALS:
        return
    try:
        import pungi.checks
        import pungi.metadata
        import pungi.phases
        from pungi.scripts import pungi_koji
    except ImportError as exc:
        raise PungiMissingError(
            f"pungi is not installed ({exc}): pungi-koji-hostimage runs pungi-koji"
        ) from exc
    from .phase import HostImagePhase

    _ORIGINALS.update(
        make_schema=pungi.checks.make_schema,
        weaver=pungi.phases.WeaverPhase,
        write_compose_info=pungi.metadata.write_compose_info,
        run_compose=pungi_koji.run_compose,
    )
    pungi.phases.HostImagePhase = HostImagePhase
    if PHASE_NAME not in pungi.phases.PHASES_NAMES:
        # In place: pungi_koji and pungi.checks imported this same list (built by
        # pungi.phases.phases_metadata.gather_phases_metadata) by name.
        pungi.phases.PHASES_NAMES.append(PHASE_NAME)
    pungi.checks.make_schema = _with_hostimage_schema(_ORIGINALS["make_schema"])
    pungi.phases.WeaverPhase = _weaver_with_hostimage(_ORIGINALS["weaver"])
    pungi.metadata.write_compose_info = _also_write_images(_ORIGINALS["write_compose_info"])
    pungi_koji.run_compose = _validating(_ORIGINALS["run_compose"])
    log.debug("registered the %s phase into pungi", PHASE_NAME)


def unregister() -> None:
    """Undo register(): pungi's own attributes back, the phase name removed."""
    if not _ORIGINALS:
        return
    import pungi.checks
    import pungi.metadata
    import pungi.phases
    from pungi.scripts import pungi_koji

    pungi.checks.make_schema = _ORIGINALS["make_schema"]
    pungi.phases.WeaverPhase = _ORIGINALS["weaver"]
    pungi.metadata.write_compose_info = _ORIGINALS["write_compose_info"]
    pungi_koji.run_compose = _ORIGINALS["run_compose"]
    if PHASE_NAME in pungi.phases.PHASES_NAMES:
        pungi.phases.PHASES_NAMES.remove(PHASE_NAME)
    if hasattr(pungi.phases, "HostImagePhase"):
        del pungi.phases.HostImagePhase
    _ORIGINALS.clear()
    _PHASES.clear()


def phase_for(compose: Any) -> Any:
    """The hostimage phase of ``compose``, created on first use."""
    phase = _PHASES.get(compose)
    if phase is None:
        from .phase import HostImagePhase

        phase = _PHASES[compose] = HostImagePhase(compose)
    return phase


def _with_hostimage_schema(make_schema: Callable[[], dict]) -> Callable[[], dict]:
    from .schema import extend_schema

    def make_schema_with_hostimage() -> dict:
        return extend_schema(make_schema())

    return make_schema_with_hostimage


def _validating(run_compose: Callable[..., Any]) -> Callable[..., Any]:
    """``run_compose`` (pungi 4.3.6 ``pungi/scripts/pungi_koji.py``) calls
    ``compose.read_variants()`` once, then ``validate()`` on each of its phases before it
    starts any: the hostimage phase is validated at the end of that same call."""

    def run_compose_with_hostimage(compose: Any, *args: Any, **kwargs: Any) -> Any:
        phase = phase_for(compose)
        if not phase.skip():
            compose.read_variants = _then_validate(compose.read_variants, compose, phase)
        try:
            return run_compose(compose, *args, **kwargs)
        finally:
            vars(compose).pop("read_variants", None)  # the class's own method again

    return run_compose_with_hostimage


def _then_validate(read_variants: Callable[..., Any], compose: Any, phase: Any) -> Callable:
    def read_variants_then_validate(*args: Any, **kwargs: Any) -> Any:
        result = read_variants(*args, **kwargs)
        try:
            phase.validate()
        except ValueError as exc:
            # As run_compose reports its phases' errors: one line each, phase first.
            for line in str(exc).splitlines():
                compose.log_error(f"{phase.name.upper()}: {line}")
            raise RuntimeError("Configuration is not valid") from exc
        return result

    return read_variants_then_validate


def _weaver_with_hostimage(weaver_class: type) -> type:
    class WeaverPhaseWithHostImage(weaver_class):
        def __init__(self, compose: Any, phases_schema: Any) -> None:
            if _is_image_schema(phases_schema):
                phases_schema = (*_as_tuple(phases_schema), phase_for(compose))
            super().__init__(compose, phases_schema)

    WeaverPhaseWithHostImage.__name__ = weaver_class.__name__
    return WeaverPhaseWithHostImage


def _is_image_schema(phases_schema: Any) -> bool:
    import pungi.phases

    anchors = tuple(
        cls for name in IMAGE_PHASE_ANCHORS if (cls := getattr(pungi.phases, name, None))
    )
    return any(isinstance(phase, anchors) for phase in _flatten(phases_schema))


def _as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _flatten(phases_schema: Any) -> list[Any]:
    phases = []
    for pipeline in _as_tuple(phases_schema):
        phases.extend(_as_tuple(pipeline))
    return phases


def _also_write_images(write_compose_info: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def write_compose_info_and_images(compose: Any) -> Any:
        result = write_compose_info(compose)
        phase = _PHASES.get(compose)
        # Called after the image phases and image_checksum, where pungi-koji writes
        # images.json itself; writing it twice writes the same content.
        if phase is not None and phase.finished and not phase.skip():
            compose.im.dump(compose.paths.compose.metadata("images.json"))
        return result

    return write_compose_info_and_images
