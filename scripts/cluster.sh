#!/usr/bin/env bash
# Several sluice instances run as one: a 3-member etcd cluster and 3 sluice instances, each on
# its own loopback address as if on three machines, in front of `loadgen sim` backends.
#
# The demo adds a backend through one instance and shows all three routing to it; then it kills
# one etcd member and one sluice instance (kill -9) and shows that the rest carry on: changes go
# through, traffic flows, and the dead instance leaves the member list when its lease expires.
#
# Usage: scripts/cluster.sh            the demo
#        scripts/cluster.sh --bench [N] time from an admin call's 2xx to every instance having
#                                       installed the change, over N changes (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/ensure.sh
source scripts/lib/proc.sh

mode=demo
changes=1000
if [ "${1:-}" = "--bench" ]; then
    mode=bench
    changes=${2:-1000}
fi

ensure_deb etcd etcd-server
ensure_deb curl curl
echo "building (release)..." >&2
cargo build --release --workspace -q
sluice=target/release/sluice
loadgen=target/release/loadgen

# Three "machines": etcd member i and sluice instance i share 127.0.0.(10+i).
ips=(127.0.0.11 127.0.0.12 127.0.0.13)
ttl=3s

etcd_pids=()
initial=""
for i in 0 1 2; do initial+="${initial:+,}e$i=http://${ips[$i]}:2380"; done
for i in 0 1 2; do
    ip=${ips[$i]}
    spawn etcd --name "e$i" --data-dir "$work/etcd$i" \
        --listen-client-urls "http://$ip:2379" --advertise-client-urls "http://$ip:2379" \
        --listen-peer-urls "http://$ip:2380" --initial-advertise-peer-urls "http://$ip:2380" \
        --initial-cluster "$initial" --initial-cluster-state new \
        --heartbeat-interval 50 --election-timeout 500 >"$work/etcd$i.log" 2>&1
    etcd_pids+=("$SPAWNED")
done
store="http://${ips[0]}:2379,http://${ips[1]}:2379,http://${ips[2]}:2379"

# Backends: four uniform simulated servers; the fourth is added at run time.
spawn $loadgen sim --profile uniform --ports 19001-19005 --service-time-ms 2 >"$work/sim.log" 2>&1
wait_port 19001 "$SPAWNED"
wait_for "etcd" sh -c "curl -sf http://${ips[0]}:2379/health | grep -q true"

sluice_pids=()
admins=()
for i in 0 1 2; do
    ip=${ips[$i]}
    flags=()
    # The first instance seeds the configuration; the others adopt it.
    [ "$i" = 0 ] && flags=(--backend 127.0.0.1:19001 --backend 127.0.0.1:19002 --backend 127.0.0.1:19003)
    RUST_LOG=${RUST_LOG:-warn} spawn $sluice --listen "$ip:8080" --admin "$ip:9090" --workers 1 \
        --cluster-store "$store" --cluster-name demo --cluster-id "lb$i" --cluster-ttl "$ttl" \
        "${flags[@]}" >"$work/sluice$i.out" 2>"$work/sluice$i.log"
    sluice_pids+=("$SPAWNED")
    admins+=("$ip:9090")
    wait_for "sluice $i" grep -q "sluice ready" "$work/sluice$i.out" || {
        echo "sluice $i did not start:" >&2
        cat "$work/sluice$i.log" >&2
        exit 1
    }
done

ctl() { $sluice ctl --admin "$1" "${@:2}"; }

if [ "$mode" = bench ]; then
    echo "timing $changes changes across 3 instances..." >&2
    python3 scripts/bench/cluster_latency.py --admins "$(IFS=,; echo "${admins[*]}")" \
        --backend 127.0.0.1:19001 --changes "$changes"
    exit 0
fi

# How many of N requests through instance $1 the backend $2 answered (from its counters).
served_by() {
    local admin=$1 backend=$2 before after
    before=$(curl -s "http://$admin/metrics" | awk -v b="backend=\"$backend\"" \
        '$1 ~ /^sluice_backend_responses_total/ && index($1, b) { s += $2 } END { print s + 0 }')
    local ip=${admin%:*}
    for _ in $(seq 40); do curl -s -o /dev/null "http://$ip:8080/"; done
    sleep 1.2 # workers hand their counters to the control thread once a second
    after=$(curl -s "http://$admin/metrics" | awk -v b="backend=\"$backend\"" \
        '$1 ~ /^sluice_backend_responses_total/ && index($1, b) { s += $2 } END { print s + 0 }')
    echo $((after - before))
}

echo "== three instances, one configuration"
ctl "${admins[1]}" cluster
echo
echo "== add 127.0.0.1:19004 through lb0 (${admins[0]})"
ctl "${admins[0]}" backends add 127.0.0.1:19004
for i in 0 1 2; do
    echo "lb$i: revision $(curl -s "http://${admins[$i]}/api/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])'), $(served_by "${admins[$i]}" 127.0.0.1:19004) of 40 requests served by the new backend"
done
echo
echo "== kill -9 etcd member e0 and sluice lb2"
kill -9 "${etcd_pids[0]}"
kill -9 "${sluice_pids[2]}"
echo "a change through lb1 still commits (2 of 3 etcd members are a quorum):"
for _ in $(seq 50); do
    ctl "${admins[1]}" backends weight 127.0.0.1:19004 3 >/dev/null 2>&1 && break
    sleep 0.2
done
ctl "${admins[0]}" backends list
echo
echo "traffic through lb0 and lb1:"
for i in 0 1; do
    ok=0
    for _ in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://${ips[$i]}:8080/")" = 200 ] && ok=$((ok + 1))
    done
    echo "  lb$i: $ok of 100 requests answered 200"
done
echo
echo "waiting for lb2's lease ($ttl) to expire..."
for _ in $(seq 100); do
    curl -s "http://${admins[0]}/api/cluster" | grep -q '"lb2"' || break
    sleep 0.1
done
ctl "${admins[0]}" cluster
