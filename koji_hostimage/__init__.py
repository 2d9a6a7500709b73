# SPDX-License-Identifier: GPL-2.0-or-later
"""koji-hostimage: rpm-ostree host images as OSTree-repo container archives."""

__version__ = "0.1.0"
