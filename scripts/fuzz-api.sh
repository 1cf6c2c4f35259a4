#!/usr/bin/env bash
# Fuzzes the admin API against its OpenAPI document with schemathesis (PyPI): every route, with
# generated valid and invalid inputs, checking status codes, content types and response schemas.
# Usage: scripts/fuzz-api.sh [MAX_EXAMPLES_PER_ROUTE]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-200}
source scripts/lib/ensure.sh
ensure_pip schemathesis schemathesis
cargo build --release -q
source scripts/lib/proc.sh

# A backend for the routes to point at, and sluice with a state file (mutations are persisted).
spawn python3 -m http.server 0 --bind 127.0.0.1 -d "$work" >"$work/backend.log" 2>&1
token=fuzz-$RANDOM$RANDOM
spawn target/release/sluice --listen 127.0.0.1:0 --admin 127.0.0.1:0 --workers 1 --health-interval 0 --admin-token "$token" \
    --state-file "$work/state.json" --backend 127.0.0.1:9 >"$work/out" 2>"$work/sluice.log"
WAIT_S=10 wait_for sluice grep -q "sluice ready" "$work/out" 2>/dev/null || true
admin=$(sed -n 's/.*admin=\([^ ]*\).*/\1/p' "$work/out")
[ -n "$admin" ] || { echo "sluice did not start:"; cat "$work/sluice.log"; exit 1; }
echo "fuzzing http://$admin with $examples examples per route"

schemathesis run "http://$admin/api/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $token" \
    --max-examples "$examples" \
    --generation-deterministic \
    --workers 1
echo "sluice is still up: $(curl -s -o /dev/null -w '%{http_code}' "http://$admin/api/status")"
