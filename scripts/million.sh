#!/usr/bin/env bash
# A million concurrent client connections through sluice, on this machine.
#
# The per-process open-file limit here is 20,000 and cannot be raised, so the script runs as many
# sluice processes as needed (PER_PROC connections each, with headroom), all sharing one listen
# port with SO_REUSEPORT (the kernel spreads connections over them), and `loadgen hold --procs`
# from many 127.x source addresses. It raises the fs/net sysctls it needs first. The connections
# open during a warm-up of WARMUP seconds, then are held for HOLD seconds while a trickle of
# requests flows over them (each connection sends a keep-alive GET every PING seconds; only the
# pings of the hold count in the latencies). Recorded: time to establish, total sluice RSS per
# connection, kernel slab per connection, trickle latency p50/p99, errors.
#
# Usage: scripts/million.sh                       CONNS=100000 WARMUP=20 scripts/million.sh
# CONNECT_RATE [20000] new connections per second over all holders; PER_PROC [18000]; HOLD [60],
# WARMUP [90] and PING [300] seconds (each connection pings once per PING: 3,333 requests/s at a
# million; PING=60 makes it 16,667/s, more than this 2-core machine serves next to 112 processes).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-1000000}
PER_PROC=${PER_PROC:-18000}
HOLD=${HOLD:-60}
WARMUP=${WARMUP:-90}
PING=${PING:-300}
CONNECT_RATE=${CONNECT_RATE:-20000}
PORT=19700
cargo build --release --workspace -q

procs=$(((CONNS + PER_PROC - 1) / PER_PROC))
# New connections per second over all holders: faster overflows the listeners' SYN and accept
# queues on two cores (a first 1M run at 4,000/s per holder, 224,000/s in all, lost connections
# to connect timeouts and never held them all at once).
per_proc_rate=$(((CONNECT_RATE + procs - 1) / procs))
echo "== $CONNS connections: $procs sluice processes, $procs loadgen hold processes"

# The kernel needs room for 2 x CONNS sockets (both ends are on this machine).
sysctl -qw fs.file-max=$((4 * CONNS + 100000)) \
    net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=262144 \
    net.ipv4.ip_local_port_range="32768 65535" net.core.netdev_max_backlog=65536 \
    net.ipv4.tcp_tw_reuse=1
# tcp_mem is in pages: let TCP use up to 12 GiB before it considers memory pressure.
sysctl -qw net.ipv4.tcp_mem="1572864 2097152 3145728"
ulimit -n "$(ulimit -Hn)"

source scripts/lib/proc.sh
slab_kib() { awk '/^Slab:/ {print $2}' /proc/meminfo; }

spawn target/release/loadgen sim --profile uniform --service-time-ms 0 --ports 19701-19703 \
    --control-port 19799 --threads 2 >/dev/null 2>&1
wait_port 19701

sluices=()
for i in $(seq "$procs"); do
    spawn target/release/sluice --listen "127.0.0.1:$PORT" --reuse-port shared --workers 1 --admin off --health-interval 0 \
        --max-conns $((PER_PROC + 1500)) --idle-timeout 600s --pool-max-idle 16 --id-memory 4096 \
        --backend 127.0.0.1:19701 --backend 127.0.0.1:19702 >/dev/null 2>"$work/sluice-$i.err"
    sluices+=("$SPAWNED")
done
wait_port $PORT
sleep 2
slab_before=$(slab_kib)
rss_before=$(rss_kib "${sluices[@]}")
mem_before=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)

start=$(date +%s.%N)
spawn target/release/loadgen hold "127.0.0.1:$PORT" -c "$CONNS" --procs "$procs" --ping-interval "$PING" \
    -d $((WARMUP + HOLD)) --warmup "$WARMUP" --source-ips 127.0.0.2-127.0.0.250 --connect-rate "$per_proc_rate" \
    --timeout 10 --json \
    >"$work/hold.out" 2>"$work/hold.err"
hold=$SPAWNED

# Time to establish: until the kernel holds both ends of every connection (TCP sockets in use,
# from /proc/net/sockstat: cheap to read at a million sockets, and independent of how promptly the
# 56 holders, starved of CPU while connecting, report their progress).
established_s=""
peak_rss=0
peak_slab=0
while alive "$hold"; do
    sleep 1
    now=$(awk '/^TCP:/ {print $3}' /proc/net/sockstat)
    if [ -z "$established_s" ] && [ "$now" -ge $((2 * CONNS)) ]; then
        established_s=$(python3 -c "print(round($(date +%s.%N) - $start, 1))")
        echo "   all $CONNS established after ${established_s}s" >&2
        sleep 5
        peak_rss=$(rss_kib "${sluices[@]}")
        peak_slab=$(slab_kib)
    fi
done
wait $hold || true
summary=$(tail -n 1 "$work/hold.out")
if [ "$peak_rss" = 0 ]; then
    peak_rss=$(rss_kib "${sluices[@]}")
    peak_slab=$(slab_kib)
fi
# Timer entries of closed connections are dropped when they come due (the wheel spans 41 s).
sleep 45
rss_after=$(rss_kib "${sluices[@]}")

python3 - "$summary" "$CONNS" "$procs" "$rss_before" "$peak_rss" "$rss_after" "$slab_before" "$peak_slab" "${established_s:-never}" "$mem_before" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
conns, procs, rss0, rss1, rss2, slab0, slab1 = map(int, sys.argv[2:9])
est_time, mem0 = sys.argv[9], int(sys.argv[10])
held = s["established_at_end"]
lat = s["latency_us"]
print(f"| connections | sluice processes | established (max / at end) | time to establish | sluice RSS per connection | kernel slab per connection | trickle pings | ping p50 | ping p99 | errors (failed connects + failed pings) | sluice RSS 45 s after close |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
print(f"| {conns:,} | {procs} | {s['max_established']:,} / {held:,} | {est_time} s | "
      f"{(rss1 - rss0) * 1024 / max(held, 1):.0f} B | {(slab1 - slab0) * 1024 / max(held, 1):,.0f} B | "
      f"{s['pings']:,} | {lat['p50'] / 1000:.2f} ms | {lat['p99'] / 1000:.2f} ms | {s['failed'] + s['ping_errors']} | "
      f"{rss2 / 1024:.0f} MiB (from {rss0 / 1024:.0f} MiB) |")
PY
