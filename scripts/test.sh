#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The whole test suite: set up, lint, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
.venv/bin/ruff check koji_hostimage plugins tests bench
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
