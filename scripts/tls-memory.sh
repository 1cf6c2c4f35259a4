#!/usr/bin/env bash
# Memory per idle TLS keep-alive client connection, sluice alone: one worker terminates TLS (an
# ECDSA P-256 certificate made here, TLS 1.3) for CONNS connections that each made one request
# and then stay idle (scripts/bench/tls_hold.py); the RSS of sluice before and while holding
# them gives the bytes per connection. Side by side with HAProxy and nginx is scripts/bench-tls.sh.
#
# Usage: scripts/tls-memory.sh            CONNS=10000 HOLD=60 scripts/tls-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/ensure.sh
source scripts/lib/proc.sh
CONNS=${CONNS:-10000}
HOLD=${HOLD:-60}
ensure_deb openssl openssl
ensure_deb python3 python3
cargo build --release --bin sluice -q
ulimit -n "$(ulimit -Hn)"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=hold.test \
    -addext subjectAltName=DNS:hold.test -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

spawn python3 -m http.server 19401 --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1
wait_port 19401
spawn target/release/sluice --listen 127.0.0.1:19400 --workers 1 --admin off --health-interval 0 \
    --idle-timeout 600s --max-conns 19000 --tls "$work/cert.pem,$work/key.pem" --backend 127.0.0.1:19401 2>/dev/null
sp=$SPAWNED
wait_port 19400 "$sp"
sleep 1
before=$(rss_kib "$sp")
spawn python3 scripts/bench/tls_hold.py 127.0.0.1 19400 "$CONNS" "$HOLD" >"$work/hold.out"
hp=$SPAWNED
until grep -q '^held' "$work/hold.out" 2>/dev/null; do
    alive "$hp" || { echo "the holder failed" >&2; exit 1; }
    sleep 1
done
holding=$(rss_kib "$sp")
held=$(awk '/^held/ {print $2}' "$work/hold.out")
wait "$hp" || true
echo "| sluice (TLS 1.3, ECDSA P-256) | $held | $((before / 1024)) | $((holding / 1024)) | $(((holding - before) * 1024 / held)) |"
