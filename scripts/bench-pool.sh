#!/usr/bin/env bash
# A thousand keep-alive clients through sluice and straight to the same nginx, side by side: does
# sluice's backend pool serve them without churning connections?
#
# nginx (one worker) answers a tiny 200 and keeps every connection open (keepalive_requests
# 100,000,000, as in bench.sh; stock nginx closes one after 1,000 requests, which would make the
# direct runs churn too), so whatever churn there is, is the proxy's. Each round runs, in turn,
# `wrk -t2 -c1000 -d10s --latency` straight to nginx and through a sluice started fresh at default
# flags (and through SLUICE_BEFORE, another sluice binary, when given), ROUNDS times. With PEERS=1
# (the default), nginx (`proxy_pass`, an upstream keepalive pool of 1,024, so that it does not
# churn either) and HAProxy (`http-reuse always`) join as proxies of reference, one worker each:
# what one more hop costs on this machine whoever makes it. Every run has
# ports of its own (nginx listens on one per run). Each run starts with WARMUP seconds of the same
# load (pools filled, as in steady traffic), then measures. Sockets in TIME_WAIT are counted for
# that run alone (`ss -tan state time-wait` on its ports; a TIME_WAIT socket lasts 60 s), as the
# increase over the count after the warm-up: once a second before the end (while every client is
# still connected: what connection churn left behind), and right after (wrk's own closes
# included). Also counted: TCP connections opened during the measurement, machine-wide
# (ActiveOpens of /proc/net/snmp), wrk's 1,000 included.
#
# Usage: scripts/bench-pool.sh
#        ROUNDS=3 DURATION=10 WARMUP=2 CONNECTIONS=1000 WORKERS=2 scripts/bench-pool.sh
#        SLUICE_BEFORE=/tmp/sluice-before scripts/bench-pool.sh      PEERS=0 scripts/bench-pool.sh
# WORKERS is passed as --workers when set (sluice's default: one per core). Prints a Markdown
# table (medians and ranges over rounds) and writes it to target/bench/pool.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/ensure.sh
source scripts/lib/contenders.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-1000}
WORKERS=${WORKERS:-}
SLUICE_BEFORE=${SLUICE_BEFORE:-}
PEERS=${PEERS:-1}
if [ -n "$SLUICE_BEFORE" ] && [ ! -x "$SLUICE_BEFORE" ]; then
    echo "SLUICE_BEFORE=$SLUICE_BEFORE is not an executable" >&2
    exit 2
fi

ensure_deb nginx nginx
ensure_deb wrk wrk
[ "$PEERS" != 1 ] || ensure_deb haproxy haproxy
cargo build --release -q -p sluice --bin sluice

out=target/bench
mkdir -p "$out"
source scripts/lib/proc.sh
ulimit -n "$(ulimit -Hn)"

WHO=(direct sluice)
[ -z "$SLUICE_BEFORE" ] || WHO+=(sluice-before)
[ "$PEERS" != 1 ] || WHO+=(nginx haproxy)
# Ports: 19300 + 10 x round + 2 x contender (the proxy) and that + 1 (nginx for that run).
proxy_port() { echo $((19300 + 10 * $2 + 2 * $1)); }
origin_port() { echo $(($(proxy_port "$1" "$2") + 1)); }

origin_ports=""
for round in $(seq "$ROUNDS"); do
    for i in "${!WHO[@]}"; do origin_ports+=" $(origin_port "$i" "$round")"; done
done
mkdir -p "$work/origin"
nginx_origin_config "$work/origin" ports="$origin_ports" keepalive_requests=100000000 \
    >"$work/origin/nginx.conf"
spawn nginx -p "$work/origin" -c "$work/origin/nginx.conf"
for p in $origin_ports; do wait_port "$p"; done

active_opens() { awk '/^Tcp:/ && ++n == 2 {print $6}' /proc/net/snmp; }
tw_filter() { # tw_filter PORT...: an ss filter for sockets with one end on one of the ports
    local filter="" p
    for p; do filter+="${filter:+ or }sport = :$p or dport = :$p"; done
    echo "( $filter )"
}
time_wait() { ss -Htan state time-wait "$(tw_filter "$@")" | wc -l; } # time_wait PORT...
# forget PID: drops a process that exited and was waited for from the stop list.
forget() {
    local keep=() p
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]}")
}

results="$work/runs.jsonl"
# run INDEX ROUND: one measurement of contender WHO[INDEX]; appends a JSON line to $results.
run() {
    local i=$1 round=$2 who=${WHO[$1]} origin port bin="" proxy="" ports opens during after
    origin=$(origin_port "$i" "$round")
    port=$origin
    ports=("$origin")
    case $who in
    sluice) bin=target/release/sluice ;;
    sluice-before) bin=$SLUICE_BEFORE ;;
    esac
    if [ "$who" != direct ]; then
        port=$(proxy_port "$i" "$round")
        ports+=("$port")
    fi
    case $who in
    sluice*)
        spawn "$bin" --listen "127.0.0.1:$port" --backend "127.0.0.1:$origin" --admin off \
            ${WORKERS:+--workers "$WORKERS"} >/dev/null 2>"$work/$who-$round.err"
        ;;
    nginx)
        mkdir -p "$work/nginx-$round"
        nginx_config "$work/nginx-$round" listen="$port" servers="$origin" connections=8192 \
            nofile=18000 listen_options="reuseport backlog=4096" upstream_keepalive=1024 \
            forwarded=1 >"$work/nginx-$round/nginx.conf"
        spawn nginx -p "$work/nginx-$round" -c "$work/nginx-$round/nginx.conf"
        ;;
    haproxy)
        haproxy_config listen="$port" servers="$origin" forwardfor=1 >"$work/haproxy-$round.cfg"
        spawn haproxy -db -f "$work/haproxy-$round.cfg" >"$work/haproxy-$round.log" 2>&1
        ;;
    esac
    if [ "$who" != direct ]; then
        proxy=$SPAWNED
        wait_port "$port" "$proxy"
    fi
    wrk -t2 -c"$CONNECTIONS" -d"${WARMUP}s" "http://127.0.0.1:$port/" >/dev/null
    local base
    base=$(time_wait "${ports[@]}")
    opens=$(active_opens)
    # TIME_WAIT a second before the end, while every client is still connected.
    # shellcheck disable=SC2016 # expanded by the inner shell
    spawn bash -c 'sleep "$1"; ss -Htan state time-wait "$2" | wc -l >"$3"' _ \
        $((DURATION - 1)) "$(tw_filter "${ports[@]}")" "$work/during"
    local sampler=$SPAWNED
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/" >"$work/wrk.txt"
    wait "$sampler" || true
    forget "$sampler"
    opens=$(($(active_opens) - opens))
    after=$(($(time_wait "${ports[@]}") - base))
    during=$(($(cat "$work/during") - base))
    [ -z "$proxy" ] || stop "$proxy"
    python3 - "$who" "$round" "$opens" "$during" "$after" "$work/wrk.txt" >>"$results" <<'PY'
import json, re, sys
who, rnd, opens, during, after, path = sys.argv[1:]
text = open(path).read()
unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
def ms(label):
    m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(m.group(1)) * unit[m.group(2)] if m else None
errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(json.dumps({
    "who": who, "round": int(rnd),
    "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
    "p50": ms(50), "p90": ms(90), "p99": ms(99),
    "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
    "opens": int(opens), "tw_during": int(during), "tw_after": int(after),
}))
PY
    tail -n 1 "$results" >&2
}

echo "tcp_tw_reuse=$(cat /proc/sys/net/ipv4/tcp_tw_reuse), $(nproc) cores" >&2
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    for i in "${!WHO[@]}"; do run "$i" "$round"; done
done

python3 - "$results" "$ROUNDS" "$DURATION" "$CONNECTIONS" "${WORKERS:-default}" <<'PY' | tee "$out/pool.md"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
rounds, duration, conns, workers = sys.argv[2:]
who_order = [w for w in ("direct", "sluice", "sluice-before", "nginx", "haproxy")
             if any(r["who"] == w for r in runs)]
def cell(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    med = statistics.median(values)
    if min(values) == max(values):
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}-{fmt(max(values))})"
num = lambda v: f"{v:,.0f}"
msf = lambda v: f"{v:.1f}" if v < 100 else f"{v:,.0f}"
print(f"wrk -t2 -c{conns} -d{duration}s --latency after a warm-up, {rounds} rounds, sluice workers: "
      f"{workers}; median (min-max) over rounds\n")
print("| to nginx | req/s | p50 ms | p90 ms | p99 ms | errors | new TIME_WAIT 1 s before the end | new TIME_WAIT after | connections opened |")
print("|---|---|---|---|---|---|---|---|---|")
for who in who_order:
    rs = [r for r in runs if r["who"] == who]
    get = lambda k: [r[k] for r in rs]
    label = {"direct": "direct", "sluice": "through sluice", "sluice-before": "through sluice before",
             "nginx": "through nginx", "haproxy": "through HAProxy"}[who]
    print(f"| {label} | {cell(get('rps'), num)} | {cell(get('p50'), msf)} | {cell(get('p90'), msf)} | "
          f"{cell(get('p99'), msf)} | {cell(get('errors'), num)} | {cell(get('tw_during'), num)} | "
          f"{cell(get('tw_after'), num)} | {cell(get('opens'), num)} |")
by_round = {}
for r in runs:
    by_round.setdefault(r["round"], {})[r["who"]] = r
for who in who_order[1:]:
    ratios = [b[who]["p99"] / b["direct"]["p99"] for b in by_round.values()
              if who in b and b[who]["p99"] and b["direct"]["p99"]]
    diffs = [b[who]["p99"] - b["direct"]["p99"] for b in by_round.values()
             if who in b and b[who]["p99"] is not None and b["direct"]["p99"] is not None]
    print(f"\n{who} p99 ÷ direct p99, same round: {cell(ratios, lambda v: f'{v:.2f}')}; "
          f"difference: {cell(diffs, lambda v: f'{v:+.1f}')} ms")
PY
