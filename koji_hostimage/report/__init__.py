# SPDX-License-Identifier: GPL-2.0-or-later
"""Reading builds back: inspect, diff and the report over many hostimage.json files.

Imports image and the shared modules. Kept empty (see docs/architecture.md).
"""
