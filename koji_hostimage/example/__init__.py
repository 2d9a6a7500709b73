# SPDX-License-Identifier: GPL-2.0-or-later
"""The built-in example host OS and the OTA round trip run on it (the main job).

May import every stage. Kept empty (see docs/architecture.md).
"""
