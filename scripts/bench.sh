#!/usr/bin/env bash
# sluice against HAProxy and nginx, side by side in one run, on this machine.
#
# A backend (nginx answering a tiny 200) sits behind each proxy; every proxy runs WORKERS worker
# threads (processes for nginx). Contenders run interleaved (A B C, then again), ROUNDS times,
# under each load: wrk and loadgen with 50 and 200 keep-alive connections, wrk with
# "Connection: close" and 50 connections, and loadgen at a fixed rate of half the measured
# maximum (the same rate for everyone) to compare latency. TCP mode is compared with HAProxy's
# `mode tcp`. For every run: requests/s, p50/p99/p99.9, and the proxy's CPU time per request
# (utime + stime from /proc/PID/stat, before and after). User-space instructions per request come
# from separate short runs under `valgrind --tool=callgrind` (two request counts, difference of
# the totals, so start-up and shutdown cancel).
#
# Two builds of sluice in one run: SLUICE_BEFORE=PATH names another sluice binary (say, the
# previous commit's), which joins as `sluice-before` and `sluice-before-tcp`, interleaved in the
# same rounds and measured under callgrind the same way; the summary then gives sluice ÷
# sluice-before for instructions and CPU per request.
#
# The operators' features: OPS=1 runs sluice three ways instead, interleaved in the same rounds
# (keep-alive loads only, no HAProxy or nginx): as it is, `sluice-log` with the access log on
# (JSON lines to a file, emptied after each run), and `sluice-limits` with both per-client limits
# on (set so high that nothing is refused: the cost of counting, not of refusing); the summary
# gives each ÷ sluice for CPU and instructions per request.
#
# Usage: scripts/bench.sh                   WORKERS=1 ROUNDS=3 DURATION=10 scripts/bench.sh
#        SLUICE_BEFORE=/tmp/sluice-before scripts/bench.sh
#        OPS=1 scripts/bench.sh
# Prints Markdown tables (medians over rounds) and writes them to target/bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/ensure.sh
source scripts/lib/contenders.sh

WORKERS=${WORKERS:-1}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CALLGRIND=${CALLGRIND:-1}
SLUICE_BEFORE=${SLUICE_BEFORE:-}
OPS=${OPS:-0}
if [ -n "$SLUICE_BEFORE" ] && [ ! -x "$SLUICE_BEFORE" ]; then
    echo "SLUICE_BEFORE=$SLUICE_BEFORE is not an executable" >&2
    exit 2
fi

ensure_deb nginx nginx
ensure_deb haproxy haproxy
ensure_deb wrk wrk
ensure_deb valgrind valgrind
cargo build --release --workspace -q

out=target/bench
mkdir -p "$out"
source scripts/lib/proc.sh

# Connection: close runs open tens of thousands of connections a second.
# Ephemeral ports stay above every listener the benchmarks use (all below 32768).
sysctl -qw net.ipv4.ip_local_port_range="32768 65535" net.ipv4.tcp_tw_reuse=1 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

BACKEND=19001
SLUICE=19010 HAPROXY=19011 NGINX=19012 SLUICE_TCP=19013 HAPROXY_TCP=19014
BEFORE=19015 BEFORE_TCP=19016
WITH_LOG=19017 WITH_LIMITS=19018
ACCESS_LOG="$work/access.log"
LOG_ARGS=(--access-log "$ACCESS_LOG")
LIMIT_ARGS=(--max-conns-per-client 100000 --rate-limit-per-client "1000000/s,burst=1000000")

# The backend (not a contender): nginx answering a tiny 200.
cat >"$work/backend.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/backend.pid;
error_log $work/backend.err;
events { worker_connections 16384; }
worker_rlimit_nofile 18000;
http {
  access_log off;
  keepalive_requests 100000000;
  server { listen 127.0.0.1:$BACKEND reuseport backlog=4096; location / { return 200 "ok\n"; } }
}
EOF
# The contenders' configurations; the same with one worker on other ports for callgrind.
nginx_bench() { # nginx_bench DIR WORKERS PORT
    mkdir -p "$1"
    nginx_config "$1" workers="$2" listen="$3" servers="$BACKEND" connections=8192 nofile=18000 \
        listen_options="reuseport backlog=4096" upstream_keepalive=512 \
        upstream_keepalive_requests=100000000 client_keepalive_requests=100000000 forwarded=1 \
        >"$1/nginx.conf"
}
haproxy_bench() { # haproxy_bench FILE THREADS HTTP_PORT TCP_PORT
    haproxy_config threads="$2" listen="$3" tcp_listen="$4" servers="$BACKEND" forwardfor=1 >"$1"
}
nginx_bench "$work/nginx" "$WORKERS" $NGINX
haproxy_bench "$work/haproxy.cfg" "$WORKERS" $HAPROXY $HAPROXY_TCP

spawn nginx -c "$work/backend.conf"
wait_port $BACKEND

SLUICE_ARGS=(--workers "$WORKERS" --admin 127.0.0.1:0 --health-interval 0 --max-conns 16000 --backend "127.0.0.1:$BACKEND")
spawn target/release/sluice --listen "127.0.0.1:$SLUICE" "${SLUICE_ARGS[@]}" >/dev/null 2>"$work/sluice.err"
SLUICE_PID=$SPAWNED
spawn target/release/sluice --mode tcp --listen "127.0.0.1:$SLUICE_TCP" "${SLUICE_ARGS[@]}" >/dev/null 2>"$work/sluice-tcp.err"
SLUICE_TCP_PID=$SPAWNED
if [ -n "$SLUICE_BEFORE" ]; then
    spawn "$SLUICE_BEFORE" --listen "127.0.0.1:$BEFORE" "${SLUICE_ARGS[@]}" >/dev/null 2>"$work/sluice-before.err"
    BEFORE_PID=$SPAWNED
    spawn "$SLUICE_BEFORE" --mode tcp --listen "127.0.0.1:$BEFORE_TCP" "${SLUICE_ARGS[@]}" >/dev/null 2>"$work/sluice-before-tcp.err"
    BEFORE_TCP_PID=$SPAWNED
fi
if [ "$OPS" = 1 ]; then
    spawn target/release/sluice --listen "127.0.0.1:$WITH_LOG" "${SLUICE_ARGS[@]}" "${LOG_ARGS[@]}" >/dev/null 2>"$work/sluice-log.err"
    WITH_LOG_PID=$SPAWNED
    spawn target/release/sluice --listen "127.0.0.1:$WITH_LIMITS" "${SLUICE_ARGS[@]}" "${LIMIT_ARGS[@]}" >/dev/null 2>"$work/sluice-limits.err"
    WITH_LIMITS_PID=$SPAWNED
    wait_port $WITH_LOG
    wait_port $WITH_LIMITS
fi
spawn haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1
HAPROXY_PID=$SPAWNED
spawn nginx -p "$work/nginx" -c "$work/nginx/nginx.conf"
NGINX_MASTER=$SPAWNED
for p in $SLUICE $SLUICE_TCP $HAPROXY $HAPROXY_TCP $NGINX; do wait_port "$p"; done
[ -z "$SLUICE_BEFORE" ] || { wait_port $BEFORE; wait_port $BEFORE_TCP; }

# The processes whose CPU a contender spends (nginx: its workers, not the idle master).
cpu_pids() {
    case $1 in
    sluice) echo "$SLUICE_PID" ;;
    sluice-tcp) echo "$SLUICE_TCP_PID" ;;
    sluice-before) echo "$BEFORE_PID" ;;
    sluice-before-tcp) echo "$BEFORE_TCP_PID" ;;
    sluice-log) echo "$WITH_LOG_PID" ;;
    sluice-limits) echo "$WITH_LIMITS_PID" ;;
    haproxy | haproxy-tcp) echo "$HAPROXY_PID" ;;
    nginx) pgrep -P "$NGINX_MASTER" | tr '\n' ' ' ;;
    esac
}
port_of() {
    case $1 in
    sluice) echo $SLUICE ;; sluice-tcp) echo $SLUICE_TCP ;; haproxy) echo $HAPROXY ;;
    haproxy-tcp) echo $HAPROXY_TCP ;; nginx) echo $NGINX ;;
    sluice-before) echo $BEFORE ;; sluice-before-tcp) echo $BEFORE_TCP ;;
    sluice-log) echo $WITH_LOG ;; sluice-limits) echo $WITH_LIMITS ;;
    esac
}
HZ=$(getconf CLK_TCK)

results="$work/runs.jsonl"
# run CONTENDER LOAD: runs one measurement, appends a JSON line to $results.
run() {
    local who=$1 load=$2 port json
    port=$(port_of "$who")
    local url="http://127.0.0.1:$port/" cp before after
    read -r -a cp <<<"$(cpu_pids "$who")"
    before=$(cpu_ticks "${cp[@]}")
    case $load in
    wrk-ka50) json=$(wrk -t1 -c50 -d"$DURATION" -s scripts/bench/wrk-report.lua "$url" | tail -n 1) ;;
    wrk-ka200) json=$(wrk -t1 -c200 -d"$DURATION" -s scripts/bench/wrk-report.lua "$url" | tail -n 1) ;;
    wrk-close50) json=$(wrk -t1 -c50 -d"$DURATION" -H "Connection: close" -s scripts/bench/wrk-report.lua "$url" | tail -n 1) ;;
    lg-ka50) json=$(target/release/loadgen http "$url" --rate 0 -c 50 -d "$DURATION" --json 2>/dev/null | tail -n 1) ;;
    lg-ka200) json=$(target/release/loadgen http "$url" --rate 0 -c 200 -d "$DURATION" --json 2>/dev/null | tail -n 1) ;;
    lg-rate) json=$(target/release/loadgen http "$url" --rate "$RATE" -c 50 -d "$DURATION" --json 2>/dev/null | tail -n 1) ;;
    esac
    after=$(cpu_ticks "${cp[@]}")
    # The log file grows by ~100 MB a run: empty it (the process appends, so it writes on at 0).
    [ "$who" != sluice-log ] || : >"$ACCESS_LOG"
    echo "{\"who\":\"$who\",\"load\":\"$load\",\"cpu_s\":$(python3 -c "print(($after - $before) / $HZ)"),\"report\":$json}" >>"$results"
    printf '  %-11s %-11s %s\n' "$who" "$load" "$(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(round(r.get('requests',0)/$DURATION), 'req/s')" "$json")" >&2
}

HTTP=(sluice haproxy nginx)
TCP=(sluice-tcp haproxy-tcp)
if [ -n "$SLUICE_BEFORE" ]; then
    HTTP=(sluice sluice-before haproxy nginx)
    TCP=(sluice-tcp sluice-before-tcp haproxy-tcp)
fi
HTTP_LOADS=(wrk-ka50 wrk-ka200 wrk-close50 lg-ka50 lg-ka200)
TCP_LOADS=(wrk-ka50 lg-ka50)
if [ "$OPS" = 1 ]; then
    HTTP=(sluice sluice-log sluice-limits)
    [ -z "$SLUICE_BEFORE" ] || HTTP+=(sluice-before)
    TCP=()
    HTTP_LOADS=(wrk-ka50 wrk-ka200 lg-ka50)
    TCP_LOADS=()
fi
echo "warming up" >&2
for who in "${HTTP[@]}" "${TCP[@]}"; do wrk -t1 -c50 -d2 "http://127.0.0.1:$(port_of "$who")/" >/dev/null; done

for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    for load in "${HTTP_LOADS[@]}"; do
        for who in "${HTTP[@]}"; do run "$who" "$load"; done
    done
    for load in "${TCP_LOADS[@]}"; do
        for who in "${TCP[@]}"; do run "$who" "$load"; done
    done
done
# Half the measured maximum: the median over contenders of their median wrk keep-alive rate.
RATE=0
[ "$OPS" = 1 ] || RATE=$(python3 - "$results" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
rates = {}
for r in runs:
    if r["load"] == "wrk-ka50" and r["who"] in ("sluice", "haproxy", "nginx"):
        rates.setdefault(r["who"], []).append(r["report"]["requests"] * 1e6 / r["report"]["duration_us"])
print(int(statistics.median(statistics.median(v) for v in rates.values()) / 2))
PY
)
if [ "$OPS" != 1 ]; then
    echo "fixed-rate runs at $RATE req/s" >&2
    for round in $(seq "$ROUNDS"); do
        for who in "${HTTP[@]}"; do run "$who" lg-rate; done
    done
fi

# Instructions per request under callgrind (one worker, keep-alive, 4 connections).
instr="$work/instr.txt"
: >"$instr"
if [ "$CALLGRIND" = 1 ]; then
    count_ir() { # count_ir PORT N command...: total instructions of the command serving N requests
        local port=$1 n=$2 vp
        shift 2
        rm -f "$work"/cg.*
        spawn valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" "$@" >/dev/null 2>"$work/vg.err"
        vp=$SPAWNED
        wait_port "$port" "$vp"
        python3 scripts/bench/nreq.py 127.0.0.1 "$port" "$n"
        # SIGINT: sluice and nginx exit cleanly on it, so callgrind writes its totals.
        kill -INT "$vp" 2>/dev/null || true
        sleep 1
        stop "$vp"
        cat "$work"/cg.* | awk '/^summary:/ {s += $2} END {print s}'
    }
    per_request() { # per_request NAME PORT -- command...
        local name=$1 port=$2 a b
        shift 3
        a=$(count_ir "$port" 2000 "$@")
        b=$(count_ir "$port" 12000 "$@")
        echo "$name $(((b - a) / 10000))" >>"$instr"
        echo "  instructions/request $name: $(((b - a) / 10000))" >&2
    }
    nginx_bench "$work/nginx-cg" 1 19022
    haproxy_bench "$work/haproxy-cg.cfg" 1 19021 19024
    CG_ARGS=(--workers 1 --admin off --health-interval 0 --backend "127.0.0.1:$BACKEND")
    per_request sluice 19020 -- target/release/sluice --listen 127.0.0.1:19020 "${CG_ARGS[@]}"
    if [ "$OPS" = 1 ]; then
        per_request sluice-log 19027 -- target/release/sluice --listen 127.0.0.1:19027 "${CG_ARGS[@]}" "${LOG_ARGS[@]}"
        per_request sluice-limits 19028 -- target/release/sluice --listen 127.0.0.1:19028 "${CG_ARGS[@]}" "${LIMIT_ARGS[@]}"
    fi
    if [ -n "$SLUICE_BEFORE" ]; then
        per_request sluice-before 19025 -- "$SLUICE_BEFORE" --listen 127.0.0.1:19025 "${CG_ARGS[@]}"
    fi
    if [ "$OPS" != 1 ]; then
        per_request haproxy 19021 -- haproxy -db -f "$work/haproxy-cg.cfg"
        per_request nginx 19022 -- nginx -p "$work/nginx-cg" -c "$work/nginx-cg/nginx.conf" -g "master_process off;"
        per_request sluice-tcp 19023 -- target/release/sluice --mode tcp --listen 127.0.0.1:19023 "${CG_ARGS[@]}"
        if [ -n "$SLUICE_BEFORE" ]; then
            per_request sluice-before-tcp 19026 -- "$SLUICE_BEFORE" --mode tcp --listen 127.0.0.1:19026 "${CG_ARGS[@]}"
        fi
        per_request haproxy-tcp 19024 -- haproxy -db -f "$work/haproxy-cg.cfg"
    fi
fi

python3 - "$results" "$instr" "$WORKERS" "$DURATION" "$ROUNDS" "$RATE" <<'PY' | tee "$out/results.md"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
instr = dict(l.split() for l in open(sys.argv[2]) if l.strip())
workers, duration, rounds, rate = sys.argv[3:7]
LOADS = {
    "wrk-ka50": "wrk, keep-alive, 50 conns", "wrk-ka200": "wrk, keep-alive, 200 conns",
    "wrk-close50": "wrk, Connection: close, 50 conns", "lg-ka50": "loadgen, keep-alive, 50 conns",
    "lg-ka200": "loadgen, keep-alive, 200 conns", "lg-rate": f"loadgen, fixed {int(rate):,} req/s, 50 conns",
}
def metrics(r):
    rep = r["report"]
    if "latency_us" in rep:  # loadgen
        n = rep["requests"]; secs = rep["duration_s"]; lat = rep["latency_us"]
        errs = sum(rep["errors"].values()) + sum(v for k, v in rep["status"].items() if not k.startswith("2"))
        p50, p99, p999 = lat["p50"], lat["p99"], lat["p999"]
    else:  # wrk
        n = rep["requests"]; secs = rep["duration_us"] / 1e6; errs = rep["errors"]
        p50, p99, p999 = rep["p50"], rep["p99"], rep["p999"]
    return {"rps": n / secs, "p50": p50, "p99": p99, "p999": p999, "cpu_us": r["cpu_s"] * 1e6 / max(n, 1), "errors": errs}
table = {}
for r in runs:
    table.setdefault((r["load"], r["who"]), []).append(metrics(r))
print(f"{workers} worker(s) each; medians of {rounds} interleaved rounds of {duration} s.\n")
print("| load | proxy | req/s | p50 µs | p99 µs | p99.9 µs | CPU µs/req | errors |")
print("|---|---|---|---|---|---|---|---|")
for load in LOADS:
    for who in ("sluice", "sluice-log", "sluice-limits", "sluice-before", "haproxy", "nginx", "sluice-tcp", "sluice-before-tcp", "haproxy-tcp"):
        ms = table.get((load, who))
        if not ms:
            continue
        med = lambda k: statistics.median(m[k] for m in ms)
        print(f"| {LOADS[load]} | {who} | {med('rps'):,.0f} | {med('p50'):,.0f} | {med('p99'):,.0f} | {med('p999'):,.0f} | {med('cpu_us'):.1f} | {sum(m['errors'] for m in ms)} |")
if instr:
    print("\n| proxy | user-space instructions per request (callgrind) |")
    print("|---|---|")
    for who, n in instr.items():
        print(f"| {who} | {int(n):,} |")
if any(who == "haproxy" for _, who in table):
    print("\nRatios (sluice ÷ peer, same load, medians):\n")
    print("| load | CPU/req vs HAProxy | req/s vs HAProxy | req/s vs nginx | p99 vs HAProxy |")
    print("|---|---|---|---|---|")
for load in LOADS:
    s, h, n = table.get((load, "sluice")), table.get((load, "haproxy")), table.get((load, "nginx"))
    if not (s and h and n):
        continue
    med = lambda ms, k: statistics.median(m[k] for m in ms)
    print(f"| {LOADS[load]} | {med(s,'cpu_us')/med(h,'cpu_us'):.2f} | {med(s,'rps')/med(h,'rps'):.2f} | {med(s,'rps')/med(n,'rps'):.2f} | {med(s,'p99')/med(h,'p99'):.2f} |")
s, h = table.get(("wrk-ka50", "sluice-tcp")), table.get(("wrk-ka50", "haproxy-tcp"))
if s and h:
    med = lambda ms, k: statistics.median(m[k] for m in ms)
    print(f"\nTCP mode, wrk keep-alive 50 conns: CPU/req sluice ÷ HAProxy = {med(s,'cpu_us')/med(h,'cpu_us'):.2f}, req/s ratio {med(s,'rps')/med(h,'rps'):.2f}")
if any(who in ("sluice-log", "sluice-limits") for _, who in table):
    med = lambda ms, k: statistics.median(m[k] for m in ms)
    rng = lambda ms, k: f"{min(m[k] for m in ms):.1f}-{max(m[k] for m in ms):.1f}"
    print("\nThe operators' features (each ÷ sluice with both off, same load, medians; CPU µs/req ranges over rounds):\n")
    print("| load | variant | CPU/req | req/s | p99 | CPU µs/req, off | CPU µs/req, on |")
    print("|---|---|---|---|---|---|---|")
    for load in LOADS:
        base = table.get((load, "sluice"))
        for variant in ("sluice-log", "sluice-limits"):
            v = table.get((load, variant))
            if base and v:
                print(f"| {LOADS[load]} | {variant} | {med(v,'cpu_us')/med(base,'cpu_us'):.2f} | {med(v,'rps')/med(base,'rps'):.2f} | {med(v,'p99')/med(base,'p99'):.2f} | {rng(base,'cpu_us')} | {rng(v,'cpu_us')} |")
    for variant in ("sluice-log", "sluice-limits"):
        if variant in instr and "sluice" in instr:
            print(f"\nInstructions/request, {variant} ÷ sluice = {int(instr[variant]) / int(instr['sluice']):.2f} "
                  f"({int(instr[variant]):,} ÷ {int(instr['sluice']):,})")
if any(who == "sluice-before" for _, who in table):
    med = lambda ms, k: statistics.median(m[k] for m in ms)
    print("\nThis build against the one before (sluice ÷ sluice-before, same load, medians):\n")
    print("| load | mode | CPU/req | req/s | p99 |")
    print("|---|---|---|---|---|")
    for load in LOADS:
        for now, before, mode in (("sluice", "sluice-before", "HTTP"), ("sluice-tcp", "sluice-before-tcp", "TCP")):
            a, b = table.get((load, now)), table.get((load, before))
            if a and b:
                print(f"| {LOADS[load]} | {mode} | {med(a,'cpu_us')/med(b,'cpu_us'):.2f} | {med(a,'rps')/med(b,'rps'):.2f} | {med(a,'p99')/med(b,'p99'):.2f} |")
    for now, before, mode in (("sluice", "sluice-before", "HTTP"), ("sluice-tcp", "sluice-before-tcp", "TCP")):
        if now in instr and before in instr:
            print(f"\nInstructions/request, {mode}: sluice ÷ sluice-before = {int(instr[now]) / int(instr[before]):.2f} "
                  f"({int(instr[now]):,} ÷ {int(instr[before]):,})")
PY
