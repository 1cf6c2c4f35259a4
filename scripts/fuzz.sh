#!/usr/bin/env bash
# Fuzzes the parsers: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Targets: request_head, response_head, chunked, proxy_protocol, tls_first_flight (default: all,
# 60 s each). The committed seeds in fuzz/corpus/<target> are read; new interesting inputs go to
# fuzz/work/<target> (not committed).
# A crash lands in fuzz/artifacts/<target>/; once fixed, copy it to fuzz/regressions/<target>/,
# where the corpus_replay unit tests (src/http/check.rs, src/tls/check.rs) replay it on every
# test run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(request_head response_head chunked proxy_protocol tls_first_flight)

source scripts/lib/ensure.sh
ensure_cargo cargo-fuzz cargo-fuzz
# cargo fuzz passes nightly-only flags (sanitizers); this machine has one stable toolchain.
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
    echo "== fuzzing $t for ${secs}s"
    mkdir -p "fuzz/work/$t"
    cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -max_len=16384
done
