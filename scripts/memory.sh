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
CONNS=${CONNS:-19000}
HOLD=${HOLD:-20}
ensure_deb nginx nginx
ensure_deb haproxy haproxy
cargo build --release --workspace -q
ulimit -n "$(ulimit -Hn)"
sysctl -qw net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 2>/dev/null || true

source scripts/lib/proc.sh

rss_kib() { awk '/^VmRSS:/ {s += $2} END {print s}' $(for p in $1; do echo "/proc/$p/status"; done); }

target/release/loadgen sim --profile uniform --service-time-ms 0 --ports 19301-19302 --control-port 19399 >/dev/null 2>&1 &
pids+=($!)
wait_port 19301

cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 9900
defaults
  mode http
  timeout connect 3s
  timeout client 600s
  timeout server 600s
  timeout http-keep-alive 600s
frontend fe
  bind 127.0.0.1:19311
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:19301
EOF
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
worker_rlimit_nofile 20000;
events { worker_connections 19800; }
http {
  access_log off;
  keepalive_timeout 600s;
  keepalive_requests 100000000;
  upstream be { server 127.0.0.1:19301; keepalive 64; }
  server { listen 127.0.0.1:19312 backlog=65535; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
EOF

measure() { # measure NAME PORT PIDS [CONNECTIONS]
    local name=$1 port=$2 procs=$3 conns=${4:-$CONNS} before holding after
    sleep 1
    before=$(rss_kib "$procs")
    target/release/loadgen hold "127.0.0.1:$port" -c "$conns" --ping-interval 10 -d "$HOLD" \
        --source-ips 127.0.0.2-127.0.0.20 --json >"$work/hold-$name.json" 2>/dev/null &
    local hp=$!
    # Sample the RSS near the end of the hold, when every connection is open and has pinged.
    sleep $((HOLD - 3))
    holding=$(rss_kib "$procs")
    wait "$hp" || true
    sleep 60
    after=$(rss_kib "$procs")
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
target/release/sluice --listen 127.0.0.1:19310 --workers 1 --admin off --health-interval 0 \
    --max-conns 19500 --idle-timeout 600s --backend 127.0.0.1:19301 >/dev/null 2>&1 &
SLUICE=$!; pids+=($SLUICE)
wait_port 19310
measure sluice 19310 "$SLUICE"
kill $SLUICE

haproxy -D -f "$work/haproxy.cfg" -p "$work/haproxy.pid"
HAPROXY=$(cat "$work/haproxy.pid"); pids+=($HAPROXY)
wait_port 19311
# HAProxy reserves two descriptors per connection: with 20,000 it accepts at most ~9,900.
measure haproxy 19311 "$HAPROXY" $((CONNS < 9500 ? CONNS : 9500))
kill "$HAPROXY"

nginx -c "$work/nginx.conf"
wait_port 19312
NGINX_MASTER=$(cat "$work/nginx.pid"); pids+=($NGINX_MASTER)
measure nginx 19312 "$(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"
kill "$NGINX_MASTER"
