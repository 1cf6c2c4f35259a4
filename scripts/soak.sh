#!/usr/bin/env bash
# Soak: DURATION seconds (default 600) of steady load through sluice while random faults hit the
# backends through the simulator's control API: a backend goes down (and its health checks fail),
# stalls for a while, or slows down 20-fold, then recovers. Checks that no request is lost or hung
# (every scheduled request answered, no connect/timeout/reset errors) and that sluice's RSS grows
# less than 5% after warm-up. Prints a summary row for PERF.md.
#
# Usage: scripts/soak.sh          DURATION=600 RATE=2000 SEED=1 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-600}
RATE=${RATE:-2000}
WARMUP=${WARMUP:-60}
SEED=${SEED:-1}
cargo build --release --workspace -q

source scripts/lib/proc.sh

SERVERS=5
spawn target/release/loadgen sim --profile uniform --service-time-ms 2 --ports 19801-$((19801 + SERVERS)) \
    --control-port 19899 --seed "$SEED" >/dev/null 2>&1
wait_port 19801
backends=()
for i in $(seq 0 $((SERVERS - 1))); do backends+=(--backend "127.0.0.1:$((19801 + i))"); done
spawn target/release/sluice --listen 127.0.0.1:19800 --admin 127.0.0.1:19890 --workers 2 \
    --strategy least-connections --health-path /health --health-interval 500ms --fall 2 --rise 2 \
    --retry-on connect,timeout,gateway --response-timeout 2s "${backends[@]}" \
    >/dev/null 2>"$work/sluice.log"
SLUICE=$SPAWNED
wait_port 19800 "$SLUICE"

spawn target/release/loadgen http http://127.0.0.1:19800/soak --rate "$RATE" -c 64 -d "$DURATION" \
    --timeout 10 --json >"$work/load.out" 2>/dev/null
LOAD=$SPAWNED

# Random faults, one at a time, each lasting a few seconds, on a fixed seed.
cat >"$work/faults.py" <<'PY'
import json, random, sys, time, urllib.request
duration, seed, servers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
def patch(i, body):
    req = urllib.request.Request(f"http://127.0.0.1:19899/servers/{i}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()
end = time.time() + duration - 15
counts = {}
while time.time() < end:
    time.sleep(rng.uniform(3, 10))
    i = rng.randrange(servers)
    kind = rng.choice(["down", "stall", "slow"])
    counts[kind] = counts.get(kind, 0) + 1
    hold = rng.uniform(2, 12)
    print(f"{time.strftime('%H:%M:%S')} server {i}: {kind} for {hold:.1f}s", flush=True)
    if kind == "down":
        patch(i, {"down": True}); time.sleep(hold); patch(i, {"down": False})
    elif kind == "stall":
        patch(i, {"stall_ms": int(hold * 1000)}); time.sleep(hold)
    else:
        patch(i, {"service_time_ms": 40}); time.sleep(hold); patch(i, {"service_time_ms": 2})
print(json.dumps(counts), flush=True)
PY
spawn python3 "$work/faults.py" "$DURATION" "$SEED" "$SERVERS" >"$work/faults.log" 2>&1

# RSS every 10 s.
: >"$work/rss"
while alive "$LOAD"; do
    rss_kib "$SLUICE" >>"$work/rss"
    sleep 10
done
wait $LOAD || true
report=$(tail -n 1 "$work/load.out")
faults=$(tail -n 1 "$work/faults.log")
sleep 3  # the workers report their counts once a second
status=$(curl -s "http://127.0.0.1:19890/api/status")

python3 - "$report" "$faults" "$work/rss" "$WARMUP" "$DURATION" "$RATE" "$status" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
faults = json.loads(sys.argv[2]) if sys.argv[2].startswith("{") else {}
rss = [int(x) for x in open(sys.argv[3]) if x.strip()]
warmup, duration, rate = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
status = json.loads(sys.argv[7])
after_warmup = rss[warmup // 10:] or rss
growth = (after_warmup[-1] - after_warmup[0]) / after_warmup[0] * 100
errors = sum(r["errors"].values())
non_2xx = sum(v for k, v in r["status"].items() if not k.startswith("2"))
lost = r["scheduled"] - r["requests"]
leftover = status["active_connections"], sum(b["in_flight"] for b in status["backends"])
print("| duration | rate | faults injected | requests | lost (scheduled, unanswered) | errors (connect/timeout/reset/parse) | non-2xx answers | p99 | max | RSS after warm-up → end | growth |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
print(f"| {duration} s | {rate}/s | {sum(faults.values())} ({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))}) | "
      f"{r['requests']:,} | {lost} | {errors} {r['errors'] or ''} | {non_2xx} {dict((k, v) for k, v in r['status'].items() if not k.startswith('2')) or ''} | "
      f"{r['latency_us']['p99'] / 1000:.1f} ms | {r['latency_us']['max'] / 1000:.0f} ms | "
      f"{after_warmup[0] / 1024:.1f} → {after_warmup[-1] / 1024:.1f} MiB | {growth:+.1f}% |")
print("\nRSS every 10 s, MiB: " + " ".join(f"{x / 1024:.1f}" for x in rss))
print(f"\nafter the load: {leftover[0]} client connections and {leftover[1]} requests in flight left in sluice")
ok = lost == 0 and errors == 0 and growth < 5
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
