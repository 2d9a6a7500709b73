# SPDX-License-Identifier: GPL-2.0-or-later
"""Stage 2: treefile + RPM repos -> an OSTree commit (rpm-ostree or dnf engine).

Imports treefile, ostree and the shared modules. Kept empty (see docs/architecture.md).
"""
