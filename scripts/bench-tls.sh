#!/usr/bin/env bash
# sluice against HAProxy and nginx over TLS, side by side in one run, on this machine.
#
# Every proxy terminates TLS with the same certificate (ECDSA P-256, made here with openssl), TLS
# 1.3 with X25519 and TLS_AES_128_GCM_SHA256 only (the clients are held to the same through an
# OpenSSL configuration, so each connection negotiates exactly that), one worker each, and
# forwards plain HTTP to the same backend (nginx answering a tiny 200). Contenders run
# interleaved, ROUNDS times, under each load:
#   ka        keep-alive HTTPS requests: wrk, 50 connections
#   full      a full handshake per connection: `openssl s_time -new` (each connection does one
#             HTTP/1.0 GET through the proxy, then closes)
#   resumed   the same with the session resumed: `openssl s_time -reuse` (TLS 1.3 ticket)
#   rate      loadgen open loop over keep-alive TLS at RATE req/s, 50 connections: p99
# and reports the proxy's CPU time (utime + stime from /proc/PID/stat) per request or per
# connection. Then memory: each proxy in turn holds IDLE_CONNS idle TLS keep-alive connections
# (loadgen hold over TLS, opening 1,000 a second; each made a request, then pings every 10 s);
# RSS per connection is (RSS holding - RSS before) / connections. HAProxy holds at most 9,500: it reserves two
# descriptors per connection and this machine's hard limit is 20,000 per process.
# PROFILE=1 also records `perf` profiles of sluice under ka and full (in target/bench-tls/).
# BUILD=0 uses the binaries already in target/release instead of building first.
#
# Usage: scripts/bench-tls.sh        ROUNDS=2 DURATION=10 RATE=2000 IDLE_CONNS=10000 scripts/bench-tls.sh
# Prints Markdown tables and writes them to target/bench-tls/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/ensure.sh
source scripts/lib/contenders.sh

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
RATE=${RATE:-2000}
IDLE_CONNS=${IDLE_CONNS:-10000}
HOLD=${HOLD:-30}
PROFILE=${PROFILE:-0}

ensure_deb nginx nginx
ensure_deb haproxy haproxy
ensure_deb wrk wrk
ensure_deb openssl openssl
[ "$PROFILE" = 0 ] || ensure_deb perf linux-perf
[ "${BUILD:-1}" = 0 ] || cargo build --release --workspace -q

out=target/bench-tls
mkdir -p "$out"
source scripts/lib/proc.sh

sysctl -qw net.ipv4.ip_local_port_range="32768 65535" net.ipv4.tcp_tw_reuse=1 \
    net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

BACKEND=19601 SLUICE=19610 HAPROXY=19611 NGINX=19612

# One certificate for everyone: ECDSA P-256, for localhost and 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" >"$work/haproxy.pem"

# The clients (wrk, openssl s_time) offer only what the proxies are held to.
cat >"$work/client-openssl.cnf" <<'EOF'
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1.3
Ciphersuites = TLS_AES_128_GCM_SHA256
Groups = X25519
EOF
client() { OPENSSL_CONF="$work/client-openssl.cnf" "$@"; }

# The backend (not a contender): nginx answering a tiny 200.
mkdir -p "$work/origin"
nginx_origin_config "$work/origin" ports=$BACKEND keepalive_requests=100000000 >"$work/origin/nginx.conf"
mkdir -p "$work/nginx"
nginx_config "$work/nginx" workers=1 listen=$NGINX servers=$BACKEND connections=16000 nofile=18000 \
    listen_options="reuseport backlog=4096" upstream_keepalive=512 \
    upstream_keepalive_requests=100000000 client_keepalive_requests=100000000 \
    client_keepalive_timeout=600s forwarded=1 tls_cert="$work/cert.pem" tls_key="$work/key.pem" \
    >"$work/nginx/nginx.conf"
haproxy_config threads=1 maxconn=9900 listen=$HAPROXY servers=$BACKEND forwardfor=1 \
    client=600s keepalive=600s tls_pem="$work/haproxy.pem" >"$work/haproxy.cfg"

spawn nginx -p "$work/origin" -c "$work/origin/nginx.conf"
wait_port $BACKEND
spawn target/release/sluice --listen "127.0.0.1:$SLUICE" --workers 1 --admin 127.0.0.1:0 \
    --health-interval 0 --max-conns 16000 --idle-timeout 600s \
    --tls "$work/cert.pem,$work/key.pem" --backend "127.0.0.1:$BACKEND" >/dev/null 2>"$work/sluice.err"
SLUICE_PID=$SPAWNED
spawn haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1
HAPROXY_PID=$SPAWNED
spawn nginx -p "$work/nginx" -c "$work/nginx/nginx.conf"
NGINX_MASTER=$SPAWNED
for p in $SLUICE $HAPROXY $NGINX; do wait_port "$p"; done

cpu_pids() {
    case $1 in
    sluice) echo "$SLUICE_PID" ;;
    haproxy) echo "$HAPROXY_PID" ;;
    nginx) pgrep -P "$NGINX_MASTER" | tr '\n' ' ' ;;
    esac
}
port_of() {
    case $1 in sluice) echo $SLUICE ;; haproxy) echo $HAPROXY ;; nginx) echo $NGINX ;; esac
}
HZ=$(getconf CLK_TCK)

# s_time_json MODE PORT: STIME_CLIENTS s_time processes at once (one alone waits on the network
# more than it works), as one JSON line: connections, and how many of them were resumed.
STIME_CLIENTS=${STIME_CLIENTS:-8}
s_time_json() {
    local mode=$1 port=$2 i spids=()
    for i in $(seq "$STIME_CLIENTS"); do
        client openssl s_time -connect "127.0.0.1:$port" "-$mode" -time "$DURATION" -www / \
            >"$work/s_time.$i" 2>&1 &
        spids+=($!)
    done
    wait "${spids[@]}" || true
    python3 - "$work"/s_time.* <<'PY'
import json, re, sys
n = resumed = 0
secs = 1
for path in sys.argv[1:]:
    t = open(path).read()
    m = re.findall(r"(\d+) connections in (\d+) real seconds", t)
    if m:
        n += int(m[-1][0]); secs = max(secs, int(m[-1][1]))
    # s_time prints one mark per connection: 'r' resumed, '*' or '.' not.
    resumed += sum(l.count("r") for l in t.splitlines() if re.fullmatch(r"[r*.]+", l.strip() or "-"))
print(json.dumps({"requests": n, "duration_us": secs * 1e6, "resumed": resumed, "errors": 0}))
PY
    rm -f "$work"/s_time.*
}

results="$work/runs.jsonl"
run() { # run CONTENDER LOAD: one measurement, appended to $results as a JSON line
    local who=$1 load=$2 port json cp before after
    port=$(port_of "$who")
    local url="https://127.0.0.1:$port/"
    read -r -a cp <<<"$(cpu_pids "$who")"
    before=$(cpu_ticks "${cp[@]}")
    case $load in
    ka) json=$(client wrk -t1 -c50 -d"$DURATION" -s scripts/bench/wrk-report.lua "$url" | tail -n 1) ;;
    full) json=$(s_time_json new "$port") ;;
    resumed) json=$(s_time_json reuse "$port") ;;
    rate) json=$(target/release/loadgen http "$url" -k --rate "$RATE" -c 50 -d "$DURATION" --json 2>/dev/null | tail -n 1) ;;
    esac
    after=$(cpu_ticks "${cp[@]}")
    echo "{\"who\":\"$who\",\"load\":\"$load\",\"cpu_s\":$(python3 -c "print(($after - $before) / $HZ)"),\"report\":$json}" >>"$results"
    printf '  %-8s %-8s %s\n' "$who" "$load" "$(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(r.get('requests',0), 'in', $DURATION, 's')" "$json")" >&2
}

CONTENDERS=(sluice haproxy nginx)
echo "warming up" >&2
for who in "${CONTENDERS[@]}"; do client wrk -t1 -c50 -d2 "https://127.0.0.1:$(port_of "$who")/" >/dev/null; done
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS" >&2
    for load in ka full resumed rate; do
        for who in "${CONTENDERS[@]}"; do run "$who" "$load"; done
    done
done

if [ "$PROFILE" != 0 ]; then
    for load in ka full; do
        spawn perf record -g -F 999 -p "$SLUICE_PID" -o "$out/perf-$load.data" >/dev/null 2>&1
        pp=$SPAWNED
        case $load in
        ka) client wrk -t1 -c50 -d"$DURATION" "https://127.0.0.1:$SLUICE/" >/dev/null ;;
        full) s_time_json new $SLUICE >/dev/null ;;
        esac
        kill -INT "$pp" 2>/dev/null || true
        wait "$pp" 2>/dev/null || true
        stop "$pp"
        perf report -i "$out/perf-$load.data" --no-children --sort dso,symbol --stdio 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -n 40 >"$out/perf-$load.txt" || true
        echo "perf profile of sluice under $load: $out/perf-$load.txt" >&2
    done
fi

# Memory: one contender at a time holds the idle connections.
mem="$work/memory.txt"
: >"$mem"
hold_idle() { # hold_idle NAME CONNECTIONS
    local name=$1 conns=$2 procs before holding hp
    read -r -a procs <<<"$(cpu_pids "$name")"
    before=$(rss_kib "${procs[@]}")
    spawn target/release/loadgen hold "https://127.0.0.1:$(port_of "$name")/" -k -c "$conns" \
        --ping-interval 10 --connect-rate 1000 -d "$HOLD" --source-ips 127.0.0.2-127.0.0.20 --json \
        >"$work/hold-$name.json" 2>/dev/null
    hp=$SPAWNED
    # Near the end of the hold: every connection has its handshake done and has pinged.
    sleep $((HOLD - 3))
    holding=$(rss_kib "${procs[@]}")
    wait "$hp" || true
    stop "$hp"
    echo "$name $before $holding $(tail -n 1 "$work/hold-$name.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["established_at_end"])')" >>"$mem"
    echo "  memory $name: $(tail -n 1 "$mem")" >&2
}
hold_idle sluice "$IDLE_CONNS"
hold_idle haproxy $((IDLE_CONNS < 9500 ? IDLE_CONNS : 9500))
hold_idle nginx "$IDLE_CONNS"

python3 - "$results" "$mem" "$DURATION" "$ROUNDS" "$RATE" <<'PY' | tee "$out/results.md"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
duration, rounds, rate = sys.argv[3:6]
LOADS = {"ka": "keep-alive requests (wrk, 50 conns)", "full": "full handshakes (s_time -new)",
         "resumed": "resumed handshakes (s_time -reuse)", "rate": f"loadgen open loop, {int(rate):,} req/s, 50 conns"}
UNIT = {"ka": "request", "full": "connection", "resumed": "connection", "rate": "request"}
WHO = ("sluice", "haproxy", "nginx")
def metrics(r):
    rep = r["report"]
    if "latency_us" in rep:  # loadgen
        n, secs, lat = rep["requests"], rep["duration_s"], rep["latency_us"]
        errs = sum(rep["errors"].values()) + sum(v for k, v in rep["status"].items() if not k.startswith("2"))
        p99 = lat["p99"]
    else:
        n, secs, errs, p99 = rep["requests"], rep["duration_us"] / 1e6, rep.get("errors", 0), rep.get("p99")
    return {"rate": n / secs, "cpu_us": r["cpu_s"] * 1e6 / max(n, 1), "p99": p99, "errors": errs,
            "resumed": rep.get("resumed"), "n": n}
table = {}
for r in runs:
    table.setdefault((r["load"], r["who"]), []).append(metrics(r))
rng = lambda xs, f="{:,.1f}": f.format(min(xs)) if len(xs) == 1 else f"{f.format(min(xs))}–{f.format(max(xs))}"
print(f"One worker each; {rounds} interleaved rounds of {duration} s; ranges are min–max over rounds.\n")
print("| load | proxy | per second | CPU µs per op | p99 µs | errors | resumed |")
print("|---|---|---|---|---|---|---|")
for load in LOADS:
    for who in WHO:
        ms = table.get((load, who))
        if not ms:
            continue
        p99 = [m["p99"] for m in ms if m["p99"] is not None]
        res = [m["resumed"] for m in ms if m["resumed"] is not None]
        resumed = f"{sum(res):,} of {sum(m['n'] for m in ms):,}" if load != "ka" and load != "rate" else ""
        print(f"| {LOADS[load]} | {who} | {rng([m['rate'] for m in ms], '{:,.0f}')} | "
              f"{rng([m['cpu_us'] for m in ms])} | {rng(p99, '{:,.0f}') if p99 else ''} | "
              f"{sum(m['errors'] for m in ms)} | {resumed} |")
print("\nsluice ÷ peer, CPU per op (range over rounds: each round's sluice ÷ the same round's peer):\n")
print("| load | vs HAProxy | vs nginx | p99 vs HAProxy | p99 vs nginx |")
print("|---|---|---|---|---|")
for load in LOADS:
    s = table.get((load, "sluice"), [])
    cells = []
    for key in ("cpu_us", "p99"):
        for peer in ("haproxy", "nginx"):
            p = table.get((load, peer), [])
            ratios = [a[key] / b[key] for a, b in zip(s, p) if a[key] and b[key]]
            cells.append(rng(ratios, "{:.2f}") + "×" if ratios else "")
    if load in ("full", "resumed"):
        cells[2] = cells[3] = ""
    print(f"| {LOADS[load]} | " + " | ".join(cells) + " |")
print("\nMemory per idle TLS keep-alive connection (each made one request, then pings every 10 s):\n")
print("| proxy | connections held | RSS before (MiB) | RSS holding (MiB) | bytes per connection |")
print("|---|---|---|---|---|")
for line in open(sys.argv[2]):
    name, before, holding, est = line.split()
    before, holding, est = int(before), int(holding), int(est)
    print(f"| {name} | {est:,} | {before/1024:.1f} | {holding/1024:.1f} | {(holding - before) * 1024 / max(est, 1):,.0f} |")
PY
