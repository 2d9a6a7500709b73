# SPDX-License-Identifier: GPL-2.0-or-later
"""The Koji integration: what the builder and hub plugins decide, in testable form.

Imports the pipeline, image and the shared modules; options.py stays dependency-free for
the hub. Kept empty (see docs/architecture.md).
"""
