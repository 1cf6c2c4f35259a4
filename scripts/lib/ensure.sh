# Helpers for scripts: install a missing tool, once, from Debian's packages, crates.io or PyPI.
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

# ensure_cargo COMMAND CRATE: installs CRATE with `cargo install --locked` when COMMAND is missing.
ensure_cargo() {
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "installing $2 (for $1)..." >&2
    cargo install "$2" --locked
}

# ensure_pip COMMAND PACKAGE: installs PACKAGE with pip when COMMAND is missing.
ensure_pip() {
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "installing $2 (for $1)..." >&2
    python3 -m pip install -q "$2"
}
