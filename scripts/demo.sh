#!/usr/bin/env bash
# The demo: sluice in front of the flaky servers of the flaky-servers challenge (README.md, "The
# flaky-servers challenge"), scored.
#
# Builds release, starts `loadgen sim --challenge` (the challenge's three configurations on
# ports 4000-4009, 5000-5009 and 6000-6009), sluice in front of configuration 1 with the bandit
# strategy and the challenge's retry policy, then sends fresh 24-character ids at 10 per second
# with `loadgen challenge` and prints the score. Watch it live on the dashboard meanwhile.
#
# Usage: scripts/demo.sh [SECONDS]     (default 60; Ctrl-C stops early and still cleans up)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
-h | --help)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
"" | *[!0-9]*)
    [ -z "${1:-}" ] || { echo "usage: scripts/demo.sh [SECONDS] (a whole number; see --help)" >&2; exit 2; }
    ;;
esac
source scripts/lib/proc.sh
secs=${1:-60}
listen=127.0.0.1:8080
admin=127.0.0.1:9090

for port in 4000 4100 5000 5100 6000 6100 8080 9090; do
    if port_in_use "$port"; then
        echo "port $port is in use; stop whatever listens there and run the demo again" >&2
        exit 1
    fi
done

# The first build compiles every dependency with link-time optimisation: a minute or two on two
# cores. Cargo's own progress lines show it is working; later builds take seconds.
echo "building sluice and loadgen (release; the first build takes a minute or two)..."
cargo build --release --workspace

spawn target/release/loadgen sim --challenge --seed 1 >"$work/sim.log" 2>&1
backends=()
for port in $(seq 4000 4009); do backends+=(--backend "127.0.0.1:$port"); done
spawn target/release/sluice --listen "$listen" --admin "$admin" --strategy bandit \
    --retry-on connect,timeout,5xx,429 --retry-methods any --request-id body-alnum24 \
    --health-path /health \
    "${backends[@]}" >"$work/sluice.out" 2>"$work/sluice.log"
WAIT_S=10 wait_for sluice grep -q "sluice ready" "$work/sluice.out" 2>/dev/null ||
    { echo "sluice did not start:"; cat "$work/sluice.log"; exit 1; }

cat <<INFO
sluice is balancing configuration 1 of the flaky-servers challenge: ten servers on
127.0.0.1:4000-4009, each failing with its own fixed probability. An id scores when a server
accepts it; each attempt beyond the third for one id costs a point. Reading the score:
README.md, "The flaky-servers challenge".
  dashboard:  http://$admin/            (live charts, backends, strategy)
  status:     target/release/sluice ctl --admin $admin status
  metrics:    curl -s http://$admin/metrics
Sending fresh ids at 10/s for ${secs}s...
INFO
target/release/loadgen challenge --target "http://$listen/" --sim-control 127.0.0.1:4100 \
    --rps 10 --duration "$secs" --seed 7
echo
target/release/sluice ctl --admin "$admin" status
