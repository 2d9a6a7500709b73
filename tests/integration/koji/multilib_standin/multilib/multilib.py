# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for python-multilib's ``multilib`` module: the one name kojid's
``createDistRepo.do_multilib`` uses, refusing loudly if a task ever gets there."""

from __future__ import annotations


class DevelMultilibMethod:
    """python-multilib's DevelMultilibMethod; the integration run builds no dist repos."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError(
            "multilib stand-in (tests/integration/koji/multilib_standin): distRepo"
            " multilib is not supported in the integration run"
        )
