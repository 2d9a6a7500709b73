# SPDX-License-Identifier: GPL-2.0-or-later
"""One module per `koji-hostimage` subcommand.

Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""

COMMANDS = ("compose", "build", "serve", "inspect", "diff", "report", "push", "treefile")
