# SPDX-License-Identifier: GPL-2.0-or-later
"""Stage 1: rpm-ostree treefiles: load, includes, validation, repos, input hash.

Imports only the shared modules. Kept empty (see docs/architecture.md).
"""
