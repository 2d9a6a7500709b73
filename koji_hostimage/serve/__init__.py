# SPDX-License-Identifier: GPL-2.0-or-later
"""Stage 4: the static web server that serves an export repo to ostree pull.

Imports image (the archive reader) and the shared modules. Kept empty
(see docs/architecture.md).
"""
