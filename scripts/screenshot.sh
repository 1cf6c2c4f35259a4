#!/usr/bin/env bash
# Takes the README's picture of the dashboard under load (default docs/dashboard.png, 1280x800).
#
# Starts, on loopback: three small HTTP backends (python3; one fast, one slower that fails 2% of
# requests, one fast that gets disabled), an address where nothing listens (so one row shows a
# backend that is down), a release sluice in front of them with the adaptive strategy, and load in
# phases (wrk if installed, else curl loops). Then Debian's Chromium, driven by
# tests/browser/dashboard.mjs, takes the screenshot while the load runs. Every process it started
# is stopped by its PID on exit.
#
# usage: scripts/screenshot.sh [OUTPUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/ensure.sh

OUT=${1:-docs/dashboard.png}
# Seconds of each load phase; together they about fill the dashboard's one-minute window.
PHASE_S=15

ensure_deb python3 python3
ensure_deb curl curl
ensure_deb chromium chromium
ensure_deb node nodejs
ensure_deb npm npm
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    npm ci --prefix tests/browser --no-audit --no-fund >&2
fi
cargo build --release -p sluice --bin sluice

# Stopped newest first on exit: the load before sluice, sluice before its backends.
source scripts/lib/proc.sh

# An HTTP/1.1 keep-alive backend: python3 -c "$BACKEND_PY" PORT DELAY_MS ERROR_SHARE
BACKEND_PY='
import http.server, random, sys, time
port, delay_ms, error_share = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        time.sleep(random.expovariate(1 / delay_ms) / 1000 if delay_ms else 0)
        status = 500 if random.random() < error_share else 200
        body = b"hello from %d\n" % port
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
# The default listen backlog of 5 drops connects when the load steps up (a 1 s SYN retry).
http.server.ThreadingHTTPServer.request_queue_size = 128
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
server.serve_forever()
'

start_backend() {
    spawn python3 -c "$BACKEND_PY" "$@"
}

# load CONNECTIONS SECONDS: HTTP load through sluice. Call it in a subshell, `(load 4 15)`: it
# execs, so the subshell's PID is the load generator's and killing it stops the load.
load() {
    if command -v wrk >/dev/null 2>&1; then
        exec wrk -t2 -c"$1" -d"$2"s "http://$listen/" >/dev/null
    else
        # timeout stops its whole group of curl loops when the time is up or when it is killed.
        exec timeout "$2" bash -c \
            'for _ in $(seq "$1"); do (while :; do curl -s -o /dev/null "$0"; done) & done; wait' \
            "http://$listen/" "$1"
    fi
}

fast=$(free_port)
slow=$(free_port)
spare=$(free_port)
down=$(free_port)
listen=127.0.0.1:$(free_port)
admin=127.0.0.1:$(free_port)

start_backend "$fast" 1 0
start_backend "$slow" 8 0.02
start_backend "$spare" 1 0
for port in "$fast" "$slow" "$spare"; do
    WAIT_S=10 wait_for "backend $port" curl -sf "http://127.0.0.1:$port/"
done

RUST_LOG=warn spawn target/release/sluice --listen "$listen" --admin "$admin" --workers 2 \
    --strategy adaptive --health-interval 1s \
    --backend "127.0.0.1:$fast" --backend "127.0.0.1:$slow,weight=2" \
    --backend "127.0.0.1:$spare" --backend "127.0.0.1:$down"
WAIT_S=10 wait_for "sluice's admin API" curl -sf "http://$admin/api/status"

echo "load: light, then heavy with one backend disabled, then medium while the picture is taken" >&2
(load 4 "$PHASE_S") || true
curl -sf -X POST "http://$admin/api/backends/127.0.0.1:$spare/disable" >/dev/null
(load 24 "$PHASE_S") || true
spawn load 10 $((PHASE_S * 10))
sleep "$PHASE_S"

mkdir -p "$(dirname "$OUT")"
node tests/browser/dashboard.mjs "http://$admin/" --screenshot "$OUT" --rows 4 --min-points $((PHASE_S * 3))
echo "wrote $OUT" >&2
