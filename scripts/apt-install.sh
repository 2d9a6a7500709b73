# SPDX-License-Identifier: GPL-2.0-or-later
# Sourced by the set-up scripts. apt_install_missing PKG...: install the Debian packages
# that are not installed yet (nothing to do, no apt-get update: idempotent and quick).
apt_install_missing() {
    local missing=() pkg sudo=""
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
}
