# Helpers for scripts that start processes: each one is recorded in `pids` and stopped, by PID,
# when the script exits (normally, on error, or on Ctrl-C); `$work` is a scratch folder removed
# at the same time.
# shellcheck shell=bash

pids=()
work=$(mktemp -d)

stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap stop_all EXIT INT TERM

# wait_port PORT: waits (up to 30 s) until something listens on 127.0.0.1:PORT.
wait_port() {
    for _ in $(seq 300); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}
