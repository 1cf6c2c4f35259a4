#!/usr/bin/env bash
# loadgen against `loadgen sim --profile uniform --service-time-ms 0` directly, and through sluice
# (1 worker) in front of the same simulator: closed loop, and a fixed rate. Runs interleaved,
# RUNS rounds; prints a Markdown table of medians.
#
#   scripts/bench-loadgen.sh            RUNS=3 DURATION=10 scripts/bench-loadgen.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-20000}
cargo build --release --workspace -q
LG=target/release/loadgen
source scripts/lib/proc.sh

$LG sim --profile uniform --service-time-ms 0 --ports 18000-18001 --control-port 18100 >/dev/null 2>&1 &
pids+=($!)
target/release/sluice --listen 127.0.0.1:18080 --admin off --workers 1 --health-interval 0 \
    --backend 127.0.0.1:18000 >/dev/null 2>&1 &
pids+=($!)
wait_port 18080

out="$work/runs"
for round in $(seq "$RUNS"); do
    for target in sim:18000 sluice:18080; do
        for mode in closed rate; do
            rate=0
            [ "$mode" = rate ] && rate=$RATE
            json=$($LG http "http://127.0.0.1:${target#*:}/" -c 64 -d "$DURATION" --warmup 2 --rate "$rate" --json | tail -n 1)
            echo "${target%%:*} $mode $json" >>"$out"
        done
    done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    target, mode, js = line.split(" ", 2)
    rows.setdefault((target, mode), []).append(json.loads(js))
print("| target | load | req/s | p50 µs | p99 µs | p99.9 µs | errors |")
print("|---|---|---|---|---|---|---|")
for (target, mode), runs in rows.items():
    med = lambda f: statistics.median(f(r) for r in runs)
    load = "closed loop, 64 conns" if mode == "closed" else f"fixed {runs[0]['rate_rps']:,.0f}/s, 64 conns"
    name = "loadgen → sim" if target == "sim" else "loadgen → sluice → sim"
    print(f"| {name} | {load} | {med(lambda r: r['throughput_rps']):,.0f} | {med(lambda r: r['latency_us']['p50']):.0f} | "
          f"{med(lambda r: r['latency_us']['p99']):.0f} | {med(lambda r: r['latency_us']['p999']):.0f} | "
          f"{med(lambda r: sum(r['errors'].values())):.0f} |")
PY
