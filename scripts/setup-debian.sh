#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Everything koji-hostimage needs on a fresh Debian 12 machine, idempotent:
# the OSTree/RPM/OCI tools from apt, then the package and its test tools in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    ostree rpm createrepo-c dnf skopeo umoci   # the pipeline's real tools
    nginx-light                                  # the baseline in bench/bench_pull.py
    busybox-static                               # the server layer of base-less images
    podman runc docker-registry                  # tests/test_container.py runs the images
    gnupg                                        # signing tests
    git                                          # SCM checkouts in the builder tests
    chromium                                     # the report page, checked in a real browser
    libkrb5-dev gcc python3-dev python3-venv     # koji's requests-gssapi builds gssapi
)

. scripts/apt-install.sh
apt_install_missing "${APT_PACKAGES[@]}"

# A venv keeps us clear of Debian's externally-managed system Python (PEP 668).
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

# An editable install leaves data files out, and the stock koji CLI only finds plugins
# as files in site-packages/koji_cli_plugins/: link ours there (a normal `pip install .`
# installs it as a data file instead).
purelib=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
mkdir -p "$purelib/koji_cli_plugins"
ln -sf "$PWD/plugins/cli/hostimage.py" "$purelib/koji_cli_plugins/hostimage.py"
