#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/ensure.sh

# The layout rules (arrows point down, small files, no import circle) fail fast, before building.
scripts/check-layers.sh

# systemd-analyze verifies the unit in deploy/ (tests/deploy.rs).
ensure_deb systemd-analyze systemd

# promtool checks the Prometheus exposition (tests/metrics.rs).
ensure_deb promtool prometheus

# HAProxy as a real PROXY protocol peer, in front of sluice and behind it
# (tests/proxy_protocol.rs).
ensure_deb haproxy haproxy

# Real TLS clients for the listener's TLS (tests/tls.rs): curl, openssl s_client, Python's ssl;
# Python's ssl is also the TLS backend of tests/backend_tls.rs.
ensure_deb curl curl
ensure_deb openssl openssl
ensure_deb python3 python3
# A DNS server on loopback whose answers change, for the backends given by name (tests/dns.rs):
# the python3 on the PATH with dnslib, which builds and reads the DNS messages.
python3 -c 'import dnslib' 2>/dev/null || python3 -m pip install -q 'dnslib==0.9.26' >&2

# etcd for the cluster tests (tests/cluster.rs starts its own members on ephemeral ports).
ensure_deb etcd etcd-server

# The dashboard's browser test (tests/dashboard.rs): Debian's Chromium driven by playwright-core
# (pinned in tests/browser/package-lock.json; it never downloads a browser of its own).
ensure_deb chromium chromium
ensure_deb node nodejs
ensure_deb npm npm
if [ ! -d tests/browser/node_modules/playwright-core ] ||
    [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
    npm ci --prefix tests/browser --no-audit --no-fund >&2
fi

# Tests open many sockets; stay inside the per-process open-file limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
    cargo test --workspace --doc
else
    cargo test --workspace --no-fail-fast "$@"
fi
