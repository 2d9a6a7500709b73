#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Host-image builds through a REAL Koji (hub, kojid, kojira from an upstream checkout):
#   KOJI_SRC=/path/to/koji-checkout bash scripts/koji-integration.sh [pytest args]
# Installs what the run needs (Debian packages, the project's .venv), then runs
# tests/integration/koji (docs/testing.md). Needs root: it chroots, mounts, and runs
# PostgreSQL as the postgres user and Apache as www-data.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${KOJI_SRC:-}" ] || [ ! -f "${KOJI_SRC}/builder/kojid" ] \
        || [ ! -f "${KOJI_SRC}/schemas/schema.sql" ]; then
    echo "KOJI_SRC must name a koji source checkout (git clone https://pagure.io/koji.git)" >&2
    exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "run as root: the run chroots, mounts and starts services as other users" >&2
    exit 2
fi
KOJI_SRC=$(cd "$KOJI_SRC" && pwd)
export KOJI_SRC

# The project's own tools and .venv (ostree, rpm, createrepo-c, dnf, git ...).
bash scripts/setup-debian.sh

APT_PACKAGES=(
    postgresql                                  # the hub's database (initdb, pg_ctl, psql)
    apache2 libapache2-mod-wsgi-py3             # the hub under mod_wsgi, mod_ssl built in
    openssl                                     # the throwaway CA and certificates
    python3-psycopg2 python3-dateutil python3-requests python3-six  # kojihub, koji lib
    python3-jsonschema python3-yaml             # the hub plugin; koji_hostimage in kojid
    python3-dnf python3-rpm python3-librepo python3-cheetah python3-defusedxml  # kojid
    createrepo-c                                # kojid's newRepo tasks
    busybox-static                              # the test tree's shell (useradd in %pre)
    util-linux                                  # mount, runuser
)
. scripts/apt-install.sh
apt_install_missing "${APT_PACKAGES[@]}"

exec .venv/bin/python -m pytest -p no:cacheprovider -rA tests/integration/koji "$@"
