# SPDX-License-Identifier: GPL-2.0-or-later
"""Stage 3: commit -> export repo (deltas, summary) -> OCI archive, and reading it back.

Imports ostree and the shared modules. Kept empty (see docs/architecture.md).
"""
