# Helpers for scripts that start processes, shared by every script under scripts/.
#
# Sourcing this file makes a scratch folder, `$work`, and sets one stop policy: when the script
# exits (normally, on an error, or on Ctrl-C), every process started with `spawn` is sent TERM,
# newest first (load before proxies, proxies before backends); they get STOP_GRACE_S seconds (5)
# to exit, then whatever is left gets KILL; then `$work` is removed. No daemons: nginx and HAProxy
# run in the foreground under `spawn` too, so every PID is known. Ctrl-C or a TERM prints
# "stopped" and exits with status 130.
# shellcheck shell=bash

STOP_GRACE_S=${STOP_GRACE_S:-5}
# The longest `wait_port` and `wait_for` wait, in seconds.
WAIT_S=${WAIT_S:-30}

pids=()
work=$(mktemp -d)

# spawn COMMAND...: starts COMMAND in the background and records its PID, also left in SPAWNED.
# Redirect as usual (`spawn cmd >log 2>&1`); its standard input is /dev/null, as for any `&` in a
# script. Call it directly, not in $(...), or the PID is lost.
spawn() {
    "$@" &
    SPAWNED=$!
    pids+=("$SPAWNED")
}

# alive PID: whether the process exists and has not exited (an unreaped child is a zombie).
alive() {
    local stat
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# stop PID...: the stop policy for some processes, which are then forgotten: TERM to each (newest
# first as given), up to STOP_GRACE_S seconds for all to exit, KILL to the rest, and reaped.
stop() {
    local pid left keep=() p
    for pid; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq $((STOP_GRACE_S * 10))); do
        left=0
        for pid; do alive "$pid" && left=1; done
        [ "$left" = 0 ] && break
        sleep 0.1
    done
    for pid; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        for pid; do [ "$p" = "$pid" ] && continue 2; done
        keep+=("$p")
    done
    pids=("${keep[@]}")
}

# stop_all: stops every recorded process, newest first.
stop_all() {
    local newest_first=() i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do newest_first+=("${pids[i]}"); done
    [ ${#newest_first[@]} -eq 0 ] || stop "${newest_first[@]}"
}

# A process forked by `spawn` keeps these traps until it execs its command; if a signal comes in
# that moment, it must not clean up as if it were the script ($$ is the script's PID there too).
cleanup() {
    [ "$BASHPID" = "$$" ] || return 0
    trap - EXIT INT TERM
    stop_all
    rm -rf "$work"
}
interrupted() {
    [ "$BASHPID" = "$$" ] || exit 143
    echo >&2
    echo "stopped" >&2
    exit 130
}
trap cleanup EXIT
trap interrupted INT TERM

# port_in_use PORT: whether something accepts connections on 127.0.0.1:PORT.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_port PORT [PID]: waits until something accepts on 127.0.0.1:PORT, up to WAIT_S seconds;
# fails at once if PID is given and that process has exited.
wait_port() {
    for _ in $(seq $((WAIT_S * 10))); do
        port_in_use "$1" && return 0
        if [ -n "${2:-}" ] && ! alive "$2"; then
            echo "process $2 exited before listening on 127.0.0.1:$1" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

# wait_for WHAT COMMAND...: runs COMMAND (quietly) until it succeeds, up to WAIT_S seconds.
wait_for() {
    local what=$1
    shift
    for _ in $(seq $((WAIT_S * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "$(basename "$0"): $what did not come up" >&2
    return 1
}

# free_port: a TCP port on 127.0.0.1 that nothing uses now, from the kernel's ephemeral range.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# rss_kib PID...: the resident memory of the processes, summed, in KiB (VmRSS).
rss_kib() {
    local pid sum=0 kib
    for pid; do
        kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
        sum=$((sum + ${kib:-0}))
    done
    echo "$sum"
}

# cpu_ticks PID...: user + system CPU time of the processes (all their threads), summed, in clock
# ticks (getconf CLK_TCK a second).
cpu_ticks() {
    local pid sum=0 stat f
    for pid; do
        read -r stat <"/proc/$pid/stat"
        # Fields after the command name, which is in parentheses and may hold spaces.
        read -r -a f <<<"${stat##*) }"
        sum=$((sum + f[11] + f[12]))
    done
    echo "$sum"
}
