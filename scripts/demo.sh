#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The main job: set up, then a local host-image build and OTA round trip on the
# built-in example content (build v1, build v2 with a delta, serve v2, deploy v1 into a
# throwaway sysroot, upgrade it to v2 over HTTP).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
exec .venv/bin/python -m koji_hostimage.example.roundtrip "$@"
