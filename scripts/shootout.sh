#!/usr/bin/env bash
# The strategy shootout: every sluice strategy, HAProxy (roundrobin, leastconn) and nginx
# (least_conn, random two least_conn), each in front of heavy-tailed backends
# (`loadgen sim --profile heavytail`: 5% of requests take 10-50x the service time, each server has
# a few workers and queues the rest), at a fixed share of their capacity, measured open loop with
# `loadgen http`. Prints a Markdown table of medians over ROUNDS rounds and writes it, with the raw
# runs, under OUT_DIR.
#
# Capacity (requests/s the servers can finish):
#     capacity = SERVERS x SIM_WORKERS / mean_service_s
#     mean_service = SERVICE_MS x ((1 - 0.05) + 0.05 x (10 + 50) / 2) = 2.45 x SERVICE_MS
# e.g. 10 servers x 4 workers / 24.5 ms = 1,633 req/s; at LOAD=0.7 the rate is 1,143 req/s.
#
# Fairness: every proxy gets WORKERS workers/threads, keeps connections to the backends alive
# (HAProxy `http-reuse always`, nginx upstream `keepalive`, sluice's pool), and runs without
# active health checks or passive ejection. Each contender gets a fresh simulator (empty queues,
# zero counts), a fresh proxy, the same warm-up and the same measured duration; the order rotates
# every round, and the table shows medians (and the p99 range) over the rounds. Backend shares are
# the simulator's request counts over the measured window. Traffic comes from SOURCE_IPS loopback
# addresses so ip-hash and maglev (keyed on the client address) have more than one key; loadgen
# sends one path, so url-hash puts every request on one backend (that is what it is for).
#
# Usage:
#   scripts/shootout.sh                              # full run: 3 rounds of 10 s warm-up + 30 s
#   ROUNDS=1 DURATION=5 WARMUP=3 scripts/shootout.sh # quick check
#   CONTENDERS="sluice:adaptive haproxy:leastconn" scripts/shootout.sh
#   RETRY_AFTER_MS=30 scripts/shootout.sh            # every proxy cuts the tail by retrying
#   scripts/shootout.sh --table target/shootout/shootout-T.jsonl   # a past run's table again
#
# RETRY_AFTER_MS (off by default) gives every proxy the same per-attempt response timeout and
# retries a request that times out on another backend, up to 7 attempts in all: sluice
# `--response-timeout Nms --retry-on connect,timeout,gateway --max-attempts 7`, HAProxy
# `timeout server Nms`, `retry-on conn-failure empty-response response-timeout`, `retries 6`,
# `option redispatch 1`, nginx `proxy_read_timeout Nms`, `proxy_next_upstream error timeout`,
# `proxy_next_upstream_tries 7`. The simulator keeps working on an abandoned request until its
# deadline, as a real server would.
#
# Environment (defaults): ROUNDS (3), DURATION (30 s), WARMUP (10 s), LOAD (0.7), SERVERS (10),
# SIM_WORKERS (4), SERVICE_MS (10), WORKERS (2, for every proxy), CONNECTIONS (256),
# SOURCE_IPS (32: 127.0.0.2 onwards), SEED (1), BASE_PORT (23400: servers from it, simulator
# control +100, proxy +200, sluice admin +201), CONTENDERS (all), SLUICE_ARGS (extra flags for
# every sluice contender), OUT_DIR (target/shootout).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/ensure.sh
source scripts/lib/contenders.sh

# table RAW.jsonl: the Markdown table of a run's medians.
table() {
    python3 - "$1" <<'PY'
import json, statistics, sys
raw = sys.argv[1]
runs = {}
for line in open(raw):
    r = json.loads(line)
    runs.setdefault(r["contender"], []).append(r)

def ms(us):
    return f"{us / 1000:,.1f}"

rows = {}
first = next(iter(runs.values()))[0]
rate, capacity = first["rate_rps"], first["capacity_rps"]
service_ms = first.get("service_ms")
print(f"Offered {int(rate):,} req/s (capacity {float(capacity):,.0f} req/s); medians over "
      f"{max(len(rs) for rs in runs.values())} rounds; p99 range = lowest–highest round.")
if service_ms:
    # 5% of requests take 10-50x (uniform): 1% of all take at least 42x, 0.1% at least 49.2x.
    print(f"No balancer can beat the service times themselves: p50 {service_ms:g} ms, "
          f"p99 {42 * service_ms:g} ms, p99.9 {49.2 * service_ms:g} ms.")
print()
print("| contender | p50 ms | p90 ms | p99 ms | p99 range ms | p99.9 ms | answered | errors | backend shares % | max share % |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name, rs in runs.items():
    ok = [r for r in rs if "latency_us" in r["report"]]
    if not ok:
        print(f"| {name} | failed | | | | | | | | |")
        continue
    answered = sum(r["report"]["requests"] for r in ok)
    scheduled = sum(r["report"]["scheduled"] for r in ok)
    failed = sum(sum(r["report"]["errors"].values()) for r in ok)
    failed += sum(v for r in ok for k, v in r["report"]["status"].items() if k != "200")
    counts = [sum(c) for c in zip(*(r["backend_requests"] for r in ok))]
    total = sum(counts) or 1
    shares = " ".join(f"{100 * c / total:.0f}" for c in counts)
    top = f"{100 * max(counts) / total:.0f}"
    timed = [r for r in ok if r["report"]["requests"] > 0]
    if not timed:
        print(f"| {name} | – | – | – | – | – | 0% | {failed} | {shares} | {top} |")
        continue
    lat = lambda q: statistics.median(r["report"]["latency_us"][q] for r in timed)
    p99s = [r["report"]["latency_us"]["p99"] for r in timed]
    rows[name] = lat("p99")
    print(f"| {name} | {ms(lat('p50'))} | {ms(lat('p90'))} | {ms(lat('p99'))} | "
          f"{ms(min(p99s))}–{ms(max(p99s))} | {ms(lat('p999'))} | {100 * answered / scheduled:.1f}% | "
          f"{failed} | {shares} | {top} |")
proxies = {k: v for k, v in rows.items() if k.split(":")[0] in ("haproxy", "nginx")}
if "sluice:adaptive" in rows and proxies:
    best = min(proxies, key=proxies.get)
    ratio = rows["sluice:adaptive"] / proxies[best]
    print(f"\nadaptive p99 {ms(rows['sluice:adaptive'])} ms = {ratio:.2f}x the best of HAProxy and nginx "
          f"({best}, {ms(proxies[best])} ms); target <= 0.70x: {'met' if ratio <= 0.7 else 'not met'}")
chosen = [r["strategy"] for r in runs.get("sluice:adaptive", []) if r.get("strategy")]
for c in chosen:
    print(f"adaptive ran {c.get('active')}: {c.get('reason')}")
PY
}

if [ "${1:-}" = --table ]; then
    table "$2"
    exit 0
fi

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-10}
LOAD=${LOAD:-0.7}
SERVERS=${SERVERS:-10}
SIM_WORKERS=${SIM_WORKERS:-4}
SERVICE_MS=${SERVICE_MS:-10}
WORKERS=${WORKERS:-2}
CONNECTIONS=${CONNECTIONS:-256}
SOURCE_IPS=${SOURCE_IPS:-32}
SEED=${SEED:-1}
BASE_PORT=${BASE_PORT:-23400}
SLUICE_ARGS=${SLUICE_ARGS:-}
RETRY_AFTER_MS=${RETRY_AFTER_MS:-}
OUT_DIR=${OUT_DIR:-target/shootout}

SIM_CONTROL=$((BASE_PORT + 100))
LISTEN=$((BASE_PORT + 200))
ADMIN=$((BASE_PORT + 201))
HOST=127.0.0.1

ensure_deb haproxy haproxy
ensure_deb nginx nginx
ensure_deb curl curl
ensure_deb python3 python3

source scripts/lib/proc.sh
for port in $(seq "$BASE_PORT" $((BASE_PORT + SERVERS - 1))) "$SIM_CONTROL" "$LISTEN" "$ADMIN"; do
    if port_in_use "$port"; then
        echo "port $port is in use; pick another BASE_PORT" >&2
        exit 1
    fi
done

echo "building (release)..." >&2
cargo build --release --workspace -q
SLUICE=target/release/sluice
LG=target/release/loadgen

# The arithmetic of the header, in one place.
read -r MEAN_MS CAPACITY RATE < <(python3 -c "
mean = $SERVICE_MS * ((1 - 0.05) + 0.05 * (10 + 50) / 2)
cap = $SERVERS * $SIM_WORKERS / (mean / 1000)
print(f'{mean:.2f} {cap:.1f} {round(cap * $LOAD)}')")

if [ -z "${CONTENDERS:-}" ]; then
    # Every strategy `sluice --help` lists, so a new one joins the shootout by itself.
    strategies=$($SLUICE --help | awk '/^ *--strategy/ {on = 1; next} on && /\[default/ {exit}
        on && /^ *- [a-z0-9-]+:/ {sub(/^ *- /, ""); sub(/:.*/, ""); print}')
    CONTENDERS=""
    for s in $strategies; do CONTENDERS+="sluice:$s "; done
    CONTENDERS+="haproxy:roundrobin haproxy:leastconn nginx:least_conn nginx:random-two-least_conn"
fi
read -r -a contenders <<<"$CONTENDERS"

mkdir -p "$OUT_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw="$OUT_DIR/shootout-$stamp.jsonl"
# start NAME LOG PORT COMMAND...: starts COMMAND in the background until it listens on PORT;
# sets STARTED_PID. Tries again a few times: this machine's ephemeral port range starts at 1024,
# so now and then an outgoing connection of some other program holds one of our ports.
start() {
    local name=$1 log=$2 port=$3 attempt
    shift 3
    for attempt in 1 2 3 4 5; do
        spawn "$@" >"$log" 2>&1
        STARTED_PID=$SPAWNED
        wait_port "$port" "$STARTED_PID" 2>/dev/null && return 0
        echo "$name did not start (attempt $attempt): $(tail -n 2 "$log")" >&2
        stop "$STARTED_PID"
        sleep 2
    done
    exit 1
}

backend_ports() { seq "$BASE_PORT" $((BASE_PORT + SERVERS - 1)); }

start_sim() {
    start simulator "$work/sim.log" "$SIM_CONTROL" \
        $LG sim --profile heavytail --ports "$BASE_PORT-$((BASE_PORT + SERVERS))" \
        --control-port "$SIM_CONTROL" --seed "$SEED" --service-time-ms "$SERVICE_MS" \
        --workers-per-server "$SIM_WORKERS"
    SIM_PID=$STARTED_PID
}

# Every contender's configuration keeps connections to the servers alive and marks no server down
# (nginx: max_fails=0); with RETRY_AFTER_MS, it retries a request that has no answer in time on
# another server, up to 7 attempts in all.
haproxy_shootout() { # haproxy_shootout BALANCE
    local retry=()
    if [ -n "$RETRY_AFTER_MS" ]; then
        retry=(server="${RETRY_AFTER_MS}ms" retries=6 redispatch=1
            retry_on="conn-failure empty-response response-timeout")
    fi
    haproxy_config threads="$WORKERS" listen="$LISTEN" servers="$(backend_ports | tr '\n' ' ')" \
        balance="$1" "${retry[@]}"
}

nginx_shootout() { # nginx_shootout METHOD
    local retry=()
    if [ -n "$RETRY_AFTER_MS" ]; then
        retry=(read_timeout="${RETRY_AFTER_MS}ms" next_upstream="error timeout" tries=7)
    fi
    nginx_config "$work" workers="$WORKERS" listen="$LISTEN" \
        servers="$(backend_ports | tr '\n' ' ')" server_options="max_fails=0" balance="$1" \
        connections=4096 upstream_keepalive=512 upstream_keepalive_requests=1000000 \
        client_keepalive_requests=1000000 "${retry[@]}"
}

# start_proxy CONTENDER: starts it in front of the simulator; sets PROXY_PID.
start_proxy() {
    local kind=${1%%:*} variant=${1#*:} cmd
    case $kind in
    sluice)
        local backends=() retry=()
        for port in $(backend_ports); do backends+=(--backend "$HOST:$port"); done
        if [ -n "$RETRY_AFTER_MS" ]; then
            retry=(--response-timeout "${RETRY_AFTER_MS}ms" --retry-on connect,timeout,gateway
                --max-attempts 7)
        fi
        # shellcheck disable=SC2206 # SLUICE_ARGS is a list of flags
        cmd=($SLUICE --listen "$HOST:$LISTEN" --admin "$HOST:$ADMIN" --workers "$WORKERS"
            --strategy "$variant" --health-interval 0 --eject-after 0 "${retry[@]}"
            $SLUICE_ARGS "${backends[@]}")
        ;;
    haproxy)
        haproxy_shootout "$variant" >"$work/haproxy.cfg"
        cmd=(haproxy -db -f "$work/haproxy.cfg")
        ;;
    nginx)
        nginx_shootout "${variant//-/ }" >"$work/nginx.conf"
        cmd=(nginx -p "$work" -c "$work/nginx.conf")
        ;;
    *)
        echo "unknown contender $1 (sluice:STRATEGY, haproxy:BALANCE, nginx:METHOD)" >&2
        exit 2
        ;;
    esac
    start "$1" "$work/proxy.log" "$LISTEN" "${cmd[@]}"
    PROXY_PID=$STARTED_PID
    curl -sf -o /dev/null "http://$HOST:$LISTEN/" || {
        echo "$1 does not answer:" >&2
        cat "$work/proxy.log" >&2
        exit 1
    }
}

last_ip=$((1 + SOURCE_IPS))
cat >&2 <<INFO
shootout: ${#contenders[@]} contenders x $ROUNDS rounds, ${WARMUP}s warm-up + ${DURATION}s each
heavytail: $SERVERS servers x $SIM_WORKERS workers, service ${SERVICE_MS} ms (mean ${MEAN_MS} ms)
capacity $CAPACITY req/s; offered $RATE req/s (LOAD=$LOAD), $CONNECTIONS connections from 127.0.0.2-127.0.0.$last_ip
raw results: $raw${RETRY_AFTER_MS:+
every proxy retries a request on another backend after ${RETRY_AFTER_MS} ms without an answer}
INFO

for round in $(seq "$ROUNDS"); do
    n=${#contenders[@]}
    for i in $(seq 0 $((n - 1))); do
        # Rotate the order each round so no contender always runs first or last.
        contender=${contenders[$(((i + round - 1) % n))]}
        echo "round $round/$ROUNDS: $contender" >&2
        start_sim
        start_proxy "$contender"
        # The backend counts at the end of the warm-up, to subtract.
        spawn bash -c 'sleep "$1"; curl -sf "$2" >"$3"' snapshot "$WARMUP" \
            "http://$HOST:$SIM_CONTROL/servers" "$work/before.json"
        snap=$SPAWNED
        $LG http "http://$HOST:$LISTEN/work" --rate "$RATE" -c "$CONNECTIONS" -t 1 \
            -d "$DURATION" --warmup "$WARMUP" --timeout 10 \
            --source-ips "127.0.0.2-127.0.0.$last_ip" --json 2>"$work/loadgen.err" \
            | tail -n 1 >"$work/report.json" || true
        wait "$snap" || true
        stop "$snap"
        curl -sf "http://$HOST:$SIM_CONTROL/servers" >"$work/after.json"
        strategy=null
        if [ "${contender%%:*}" = sluice ]; then
            strategy=$(curl -sf "http://$HOST:$ADMIN/api/strategy" || echo null)
        fi
        python3 - "$contender" "$round" "$work" "$strategy" "$RATE" "$CAPACITY" "$SERVICE_MS" \
            >>"$raw" <<'PY'
import json, sys
contender, round_, work, strategy = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rate, capacity, service_ms = float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
try:
    report = json.load(open(f"{work}/report.json"))
except (ValueError, OSError):
    report = {"error": open(f"{work}/loadgen.err").read()[-500:]}
before = {s["port"]: s["requests"] for s in json.load(open(f"{work}/before.json"))}
after = {s["port"]: s["requests"] for s in json.load(open(f"{work}/after.json"))}
counts = [after[p] - before.get(p, 0) for p in sorted(after)]
print(json.dumps({"contender": contender, "round": round_, "rate_rps": rate,
                  "capacity_rps": capacity, "service_ms": service_ms, "report": report,
                  "backend_requests": counts, "strategy": json.loads(strategy)}))
PY
        stop "$PROXY_PID"
        stop "$SIM_PID"
    done
done

table="$OUT_DIR/shootout-$stamp.md"
table "$raw" | tee "$table"
echo "table: $table" >&2
