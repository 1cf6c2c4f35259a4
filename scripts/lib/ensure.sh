# Helpers for scripts: install a missing tool from Debian's packages, once.
# shellcheck shell=bash

# ensure_deb COMMAND PACKAGE: installs PACKAGE when COMMAND is not on the PATH.
ensure_deb() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null 2>&1 && return 0
    echo "installing $pkg (for $cmd)..." >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    if ! $sudo apt-get install -y -q --no-install-recommends "$pkg" >/dev/null 2>&1; then
        $sudo apt-get update -q >/dev/null 2>&1 || true
        $sudo apt-get install -y -q --no-install-recommends "$pkg" >/dev/null
    fi
    command -v "$cmd" >/dev/null 2>&1 || { echo "could not install $pkg" >&2; return 1; }
}
