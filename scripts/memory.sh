#!/usr/bin/env bash
# Memory per idle keep-alive client connection: sluice, HAProxy and nginx each hold CONNS idle
# connections (each has made one request, then pings rarely), one contender at a time.
# Reports the proxy's RSS before, while holding, and 60 s after the clients left (sluice drops a
# closed connection's timer entry lazily, when it comes due: at most the wheel's 41 s later), and
# the per-connection difference. One worker each (the 20,000 open-file limit per process allows
# about 19,000 connections in one process).
#
# Usage: scripts/memory.sh              CONNS=19000 scripts/memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/ensure.sh
source scripts/lib/contenders.sh
CONNS=${CONNS:-19000}
HOLD=${HOLD:-20}
ensure_deb nginx nginx
ensure_deb haproxy haproxy
cargo build --release --workspace -q
ulimit -n "$(ulimit -Hn)"
sysctl -qw net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 2>/dev/null || true

source scripts/lib/proc.sh

spawn target/release/loadgen sim --profile uniform --service-time-ms 0 --ports 19301-19302 --control-port 19399 >/dev/null 2>&1
wait_port 19301

# Long idle timeouts everywhere, so no proxy closes a held connection.
haproxy_config maxconn=9900 listen=19311 servers=19301 client=600s server=600s keepalive=600s \
    >"$work/haproxy.cfg"
mkdir -p "$work/nginx"
nginx_config "$work/nginx" listen=19312 servers=19301 nofile=20000 connections=19800 \
    listen_options="backlog=65535" upstream_keepalive=64 client_keepalive_timeout=600s \
    client_keepalive_requests=100000000 >"$work/nginx/nginx.conf"

measure() { # measure NAME PORT "PID..." [CONNECTIONS]
    local name=$1 port=$2 procs conns=${4:-$CONNS} before holding after hp
    read -r -a procs <<<"$3"
    sleep 1
    before=$(rss_kib "${procs[@]}")
    spawn target/release/loadgen hold "127.0.0.1:$port" -c "$conns" --ping-interval 10 -d "$HOLD" \
        --source-ips 127.0.0.2-127.0.0.20 --json >"$work/hold-$name.json" 2>/dev/null
    hp=$SPAWNED
    # Sample the RSS near the end of the hold, when every connection is open and has pinged.
    sleep $((HOLD - 3))
    holding=$(rss_kib "${procs[@]}")
    wait "$hp" || true
    stop "$hp"
    sleep 60
    after=$(rss_kib "${procs[@]}")
    python3 - "$name" "$before" "$holding" "$after" "$conns" "$work/hold-$name.json" <<'PY'
import json, sys
name, before, holding, after, conns, hold = sys.argv[1], *map(int, sys.argv[2:6]), sys.argv[6]
summary = json.loads(open(hold).read().strip().splitlines()[-1])
est = summary["established_at_end"]
per = (holding - before) * 1024 / max(est, 1)
print(f"| {name} | {est:,} | {before/1024:.1f} | {holding/1024:.1f} | {per:.0f} | {after/1024:.1f} |")
PY
}

echo "| proxy | connections held | RSS before (MiB) | RSS holding (MiB) | bytes per connection | RSS 60 s after they closed (MiB) |"
echo "|---|---|---|---|---|---|"
spawn target/release/sluice --listen 127.0.0.1:19310 --workers 1 --admin off --health-interval 0 \
    --max-conns 19500 --idle-timeout 600s --backend 127.0.0.1:19301 >/dev/null 2>&1
SLUICE=$SPAWNED
wait_port 19310 "$SLUICE"
measure sluice 19310 "$SLUICE"
stop "$SLUICE"

spawn haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1
HAPROXY=$SPAWNED
wait_port 19311 "$HAPROXY"
# HAProxy reserves two descriptors per connection: with 20,000 it accepts at most ~9,900.
measure haproxy 19311 "$HAPROXY" $((CONNS < 9500 ? CONNS : 9500))
stop "$HAPROXY"

spawn nginx -p "$work/nginx" -c "$work/nginx/nginx.conf"
NGINX_MASTER=$SPAWNED
wait_port 19312 "$NGINX_MASTER"
measure nginx 19312 "$(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"
stop "$NGINX_MASTER"
