# SPDX-License-Identifier: GPL-2.0-or-later
"""The pungi integration: the hostimage phase, its config schema and entry point.

Imports only the shared modules. Kept empty (see docs/architecture.md).
"""
