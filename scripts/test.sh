#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/ensure.sh

# promtool checks the Prometheus exposition (tests/metrics.rs).
ensure_deb promtool prometheus

# Tests open many sockets; stay inside the per-process open-file limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
    cargo test --workspace --doc
else
    cargo test --workspace --no-fail-fast "$@"
fi
