#!/usr/bin/env bash
# Benchmarks loadgen itself, against `loadgen sim --profile uniform --service-time-ms 0` (answers at
# once), and prints two Markdown tables of medians over RUNS runs:
#
# 1. generator: `loadgen http` (1 thread) straight at the simulator, closed loop and at fixed rates
#    of 10,000 (also with --send-ahead-us 0), 50,000 and 100,000 req/s, with the generator's CPU
#    (from /usr/bin/time) and the simulator's (from /proc/PID/stat) as % of one core over the run.
# 2. sluice: the same simulator directly and through sluice (1 worker) in front of it, closed loop
#    and at a fixed RATE, interleaved round by round.
#
# Usage: scripts/bench-loadgen.sh
#        RUNS=5 DURATION=20 PARTS=generator scripts/bench-loadgen.sh
# Environment (defaults): RUNS (3), DURATION (10 s), WARMUP (2 s), CONNECTIONS (64), RATE (20000,
# part 2), PORT (18000: the simulator's one server; its control on PORT+100, sluice on PORT+80),
# PARTS ("generator sluice").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/ensure.sh

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
RATE=${RATE:-20000}
PORT=${PORT:-18000}
PARTS=${PARTS:-generator sluice}

ensure_deb /usr/bin/time time
cargo build --release --workspace -q
LG=target/release/loadgen
source scripts/lib/proc.sh

spawn $LG sim --profile uniform --service-time-ms 0 --ports "$PORT-$((PORT + 1))" \
    --control-port $((PORT + 100)) >/dev/null 2>&1
SIM_PID=$SPAWNED
wait_port $((PORT + 100)) "$SIM_PID"
TICK=$(getconf CLK_TCK)

# Part 1. Reads "<json report> <generator cpu s> <simulator cpu s>" per line on stdin, prints a
# table row of medians; CPU is shown as % of one core over the whole run (warmup included).
MEDIANS=$(
    cat <<'PY'
import json, statistics, sys
name, wall = sys.argv[1], float(sys.argv[2])
runs = []
for line in sys.stdin:
    if line.strip():
        report, gen_cpu, sim_cpu = line.rsplit(" ", 2)
        runs.append((json.loads(report), float(gen_cpu), float(sim_cpu)))
def med(f):
    return statistics.median(f(r) for r in runs)
row = [name, f"{med(lambda r: r[0]['throughput_rps']):,.0f}"]
row += [f"{med(lambda r: r[0]['latency_us'][k]):.0f}" for k in ("p50", "p99", "p999", "max")]
row.append(f"{med(lambda r: sum(r[0]['errors'].values())):.0f}")
row.append(f"{med(lambda r: r[1]) / wall * 100:.0f}%")
row.append(f"{med(lambda r: r[2]) / wall * 100:.0f}%")
print("| " + " | ".join(row) + " |")
PY
)

generator() { # generator NAME FLAGS...: RUNS runs of one configuration, one table row
    local name=$1
    shift
    for _ in $(seq "$RUNS"); do
        local before after report
        before=$(cpu_ticks "$SIM_PID")
        report=$( { /usr/bin/time -f "CPU %U %S" "$LG" http "http://127.0.0.1:$PORT/" \
            -c "$CONNECTIONS" -t 1 -d "$DURATION" --warmup "$WARMUP" --json "$@" 2>&1; } )
        after=$(cpu_ticks "$SIM_PID")
        echo "$(grep '^{' <<<"$report" | tail -n 1)" \
            "$(awk '/^CPU/ {print $2 + $3}' <<<"$report")" \
            "$(awk -v a="$after" -v b="$before" -v t="$TICK" 'BEGIN {printf "%.2f", (a - b) / t}')"
    done | python3 -c "$MEDIANS" "$name" "$((DURATION + WARMUP))"
}

if [[ " $PARTS " == *" generator "* ]]; then
    echo "| run (median of $RUNS, ${DURATION}s + ${WARMUP}s warmup, $CONNECTIONS connections, 1 thread) | req/s | p50 us | p99 us | p99.9 us | max us | errors | generator CPU | simulator CPU |"
    echo "|---|---|---|---|---|---|---|---|---|"
    generator "closed loop (--rate 0)" --rate 0
    generator "fixed rate 10,000 req/s" --rate 10000
    generator "fixed rate 10,000 req/s, --send-ahead-us 0" --rate 10000 --send-ahead-us 0
    generator "fixed rate 50,000 req/s" --rate 50000
    generator "fixed rate 100,000 req/s" --rate 100000
fi

if [[ " $PARTS " == *" sluice "* ]]; then
    [[ " $PARTS " == *" generator "* ]] && echo
    spawn target/release/sluice --listen 127.0.0.1:$((PORT + 80)) --admin off --workers 1 \
        --health-interval 0 --backend "127.0.0.1:$PORT" >/dev/null 2>&1
    wait_port $((PORT + 80)) "$SPAWNED"
    out="$work/runs"
    for _ in $(seq "$RUNS"); do
        for target in sim:$PORT sluice:$((PORT + 80)); do
            for mode in closed rate; do
                rate=0
                [ "$mode" = rate ] && rate=$RATE
                json=$($LG http "http://127.0.0.1:${target#*:}/" -c "$CONNECTIONS" -d "$DURATION" \
                    --warmup "$WARMUP" --rate "$rate" --json | tail -n 1)
                echo "${target%%:*} $mode $json" >>"$out"
            done
        done
    done
    python3 - "$out" "$CONNECTIONS" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    target, mode, js = line.split(" ", 2)
    rows.setdefault((target, mode), []).append(json.loads(js))
conns = sys.argv[2]
print("| target | load | req/s | p50 µs | p99 µs | p99.9 µs | errors |")
print("|---|---|---|---|---|---|---|")
for (target, mode), runs in rows.items():
    med = lambda f: statistics.median(f(r) for r in runs)
    load = f"closed loop, {conns} conns" if mode == "closed" else f"fixed {runs[0]['rate_rps']:,.0f}/s, {conns} conns"
    name = "loadgen → sim" if target == "sim" else "loadgen → sluice → sim"
    print(f"| {name} | {load} | {med(lambda r: r['throughput_rps']):,.0f} | {med(lambda r: r['latency_us']['p50']):.0f} | "
          f"{med(lambda r: r['latency_us']['p99']):.0f} | {med(lambda r: r['latency_us']['p999']):.0f} | "
          f"{med(lambda r: sum(r['errors'].values())):.0f} |")
PY
fi
