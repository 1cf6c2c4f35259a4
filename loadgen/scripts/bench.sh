#!/usr/bin/env bash
# Benchmarks loadgen's generator against loadgen's own simulator (uniform profile, 0 ms service
# time), 3 runs per configuration, and prints the median of each metric as a Markdown table.
#
#   loadgen/scripts/bench.sh            # defaults below
#   RUNS=5 DURATION=20 loadgen/scripts/bench.sh
#
# Every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
PORT=${PORT:-18000}
CONNECTIONS=${CONNECTIONS:-64}

cargo build --release -p loadgen >/dev/null 2>&1
BIN=target/release/loadgen

SIM_PID=
cleanup() { [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$BIN" sim --profile uniform --service-time-ms 0 --ports "$PORT-$((PORT + 1))" \
    --control-port "$((PORT + 100))" >/dev/null 2>&1 &
SIM_PID=$!
# Wait for the simulator's control port.
for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$((PORT + 100))") 2>/dev/null && break
    sleep 0.1
done

# Reads "<json report> <generator cpu s> <simulator cpu s>" per line on stdin, prints a table
# row of medians; CPU is shown as % of one core over the whole run (warmup included).
MEDIANS=$(cat <<'PY'
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

TICK=$(getconf CLK_TCK)
sim_cpu_s() { awk -v t="$TICK" '{printf "%.2f", ($14 + $15) / t}' "/proc/$SIM_PID/stat"; }

bench() { # name, extra flags...
    local name=$1
    shift
    for _ in $(seq "$RUNS"); do
        local before after report
        before=$(sim_cpu_s)
        report=$( { /usr/bin/time -f "CPU %U %S" "$BIN" http "http://127.0.0.1:$PORT/" \
            -c "$CONNECTIONS" -t 1 -d "$DURATION" --warmup "$WARMUP" --json "$@" 2>&1; } )
        after=$(sim_cpu_s)
        echo "$(grep '^{' <<<"$report" | tail -n 1)" \
            "$(awk '/^CPU/ {print $2 + $3}' <<<"$report")" \
            "$(awk -v a="$after" -v b="$before" 'BEGIN {print a - b}')"
    done | python3 -c "$MEDIANS" "$name" "$((DURATION + WARMUP))"
}

echo "| run (median of $RUNS, ${DURATION}s + ${WARMUP}s warmup, $CONNECTIONS connections, 1 thread) | req/s | p50 us | p99 us | p99.9 us | max us | errors | generator CPU | simulator CPU |"
echo "|---|---|---|---|---|---|---|---|---|"
bench "closed loop (--rate 0)" --rate 0
bench "fixed rate 10,000 req/s" --rate 10000
bench "fixed rate 10,000 req/s, --send-ahead-us 0" --rate 10000 --send-ahead-us 0
bench "fixed rate 50,000 req/s" --rate 50000
bench "fixed rate 100,000 req/s" --rate 100000
