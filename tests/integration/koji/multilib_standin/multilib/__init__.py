# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for Fedora's python-multilib (``from multilib import multilib``).

koji-project/koji builder/kojid imports it at start-up; only ``createDistRepo``
(``do_multilib``, distRepo tasks with multilib) uses it. It is not packaged for Debian
and the PyPI project of that name is an unrelated demo, so the real-Koji integration run
puts this directory on kojid's PYTHONPATH. Nothing in the run builds dist repos.
"""
