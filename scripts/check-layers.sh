#!/usr/bin/env bash
# Checks the layout rules of src/: arrows only point down, files stay small, and code speaks to a
# reader who has only the repository. Run by scripts/test.sh; exits non-zero with one line per
# breach.
#
#   - src/worker/ (the data-plane thread) never imports the control thread or the admin API;
#   - src/control/ reaches the workers only through src/link.rs (never crate::worker);
#   - no file under src/ is longer than 600 lines, not counting its `#[cfg(test)]` tests
#     (files named tests.rs are tests);
#   - no import circle between modules (scripts/lib/module_cycles.py says what counts);
#   - no "brief 0NN" or "issue N" in src/ or loadgen/src/: name the requirement instead.
set -uo pipefail
cd "$(dirname "$0")/.."

MAX_LINES=600
fail=0
breach() {
    echo "check-layers: $*" >&2
    fail=1
}

while IFS= read -r hit; do
    breach "the worker imports the control side or the admin API: $hit"
done < <(grep -rnE 'crate::(control|admin|run)\b|super::super::(control|admin)' src/worker)

while IFS= read -r hit; do
    breach "the control thread reaches into the worker (use crate::link): $hit"
done < <(grep -rnE 'crate::worker\b' src/control src/admin)

while IFS= read -r file; do
    # Lines before the first `#[cfg(test)]` that opens a test module (or the whole file).
    lines=$(awk '/^#\[cfg\(test\)\]/ { getline nxt; if (nxt ~ /^mod /) exit } { n++ } END { print n + 0 }' "$file")
    if [ "$lines" -gt "$MAX_LINES" ]; then
        breach "$file has $lines lines of code (most $MAX_LINES): split it by concern"
    fi
done < <(find src -name '*.rs' ! -name tests.rs)

while IFS= read -r circle; do
    breach "$circle"
done < <(python3 scripts/lib/module_cycles.py src)

while IFS= read -r hit; do
    breach "names a task document instead of the requirement: $hit"
done < <(grep -rnE 'brief 0[0-9]|issue [0-9]' src loadgen/src)

if [ "$fail" -ne 0 ]; then
    exit 1
fi
echo "check-layers: ok"
