# SPDX-License-Identifier: GPL-2.0-or-later
"""The ostree command line, wrapped: repositories, commits and GVariant text.

Imports only the shared modules (errors, runner). Kept empty so that importing one module
of the package imports nothing else (see docs/architecture.md).
"""
