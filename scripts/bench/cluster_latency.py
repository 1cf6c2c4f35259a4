"""Configuration propagation in a sluice cluster: time from an admin call's 2xx to every
instance having installed the change.

For each of N changes (weight of one backend, alternating 1 and 2, taken by the instances in
turn), it records when the 2xx arrived and the revision the change committed at, then polls
`GET /api/status` on the other instances until each reports that revision. The instance that
took the call has installed it before it answers (it answers only then), so the figure per change
is when the last of the others was seen with it. Polling adds up to one round trip of the admin
API (a fraction of a millisecond on loopback) to each figure.

Usage: python3 cluster_latency.py --admins A,B,C --backend ADDR [--changes 1000]
Prints one JSON line: p50/p90/p99/max in ms, and the commit time (request sent to 2xx) as well.
"""

import argparse
import http.client
import json
import sys
import time


def conn(addr):
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=10)


def call(c, method, path, body=None):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    resp = c.getresponse()
    data = resp.read()
    return resp.status, json.loads(data) if data else None


def quantile(sorted_values, q):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--admins", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--changes", type=int, default=1000)
    args = ap.parse_args()
    admins = args.admins.split(",")
    conns = [conn(a) for a in admins]
    path = f"/api/backends/{args.backend}"
    spread, commit = [], []
    for i in range(args.changes):
        taker = i % len(conns)
        weight = 1 + (i % 2)
        sent = time.perf_counter()
        status, body = call(conns[taker], "PUT", path, {"weight": weight})
        answered = time.perf_counter()
        if status != 200:
            print(f"change {i}: HTTP {status}: {body}", file=sys.stderr)
            sys.exit(1)
        revision = body["revision"]
        commit.append((answered - sent) * 1000)
        last_seen = answered
        for j, c in enumerate(conns):
            if j == taker:
                continue
            deadline = answered + 10
            while True:
                _, st = call(c, "GET", "/api/status")
                now = time.perf_counter()
                if st["revision"] >= revision:
                    last_seen = max(last_seen, now)
                    break
                if now > deadline:
                    print(f"change {i}: {admins[j]} did not install revision {revision}", file=sys.stderr)
                    sys.exit(1)
        spread.append((last_seen - answered) * 1000)
    spread.sort()
    commit.sort()
    out = {
        "changes": len(spread),
        "instances": len(conns),
        "to_all_p50_ms": round(quantile(spread, 0.50), 2),
        "to_all_p90_ms": round(quantile(spread, 0.90), 2),
        "to_all_p99_ms": round(quantile(spread, 0.99), 2),
        "to_all_max_ms": round(spread[-1], 2),
        "commit_p50_ms": round(quantile(commit, 0.50), 2),
        "commit_p99_ms": round(quantile(commit, 0.99), 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
