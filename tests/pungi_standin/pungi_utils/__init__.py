# SPDX-License-Identifier: GPL-2.0-or-later
"""STAND-IN for pungi_utils (shipped with pungi): only config_utils."""
