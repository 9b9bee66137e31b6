#!/usr/bin/env bash
# Benchmark of baton's etcd store (`baton run --etcd URL ...`) against the
# tool users pick today, `etcdctl lock NAME COMMAND`, on a 3-member etcd
# cluster of the script's own on loopback (data on tmpfs), with three
# simulated hosts: one `etcd gateway` (a TCP proxy to the three members) per
# host, each host's jobs using only its own gateway's URL.
#
#   1. drain: N jobs (`true`) launched at once on one lock name, split over
#      the 3 hosts; wall time from the first launch until all have exited,
#      per job = wall / N. baton and etcdctl interleaved per round, after one
#      unrecorded warm-up round each. Every job must exit 0.
#   2. uncontended: one job at a time (hyperfine -N, or bench/uncontended.py).
#   3. hand-over: host A's job holds, host B's job waits (seen waiting in
#      `baton status --json`, or as the second key under etcdctl's lock
#      prefix); A's command ends with `exec date +%s%N` (its last act), B's
#      command is `date +%s%N` (its first act); latency = B's stamp - A's.
#      The pair of hosts rotates from sample to sample.
#   4. idle: one holder and IDLE_WAITERS waiters spread over the hosts for
#      IDLE_SECS: the waiters' CPU (utime+stime from /proc/PID/stat) and the
#      cluster's gRPC requests meanwhile (the members' Prometheus counters,
#      summed, before/after), less the rate of a window with the holder alone.
#
# Usage:  bash bench/etcd.sh            (from anywhere; Markdown on stdout,
#                                        progress and diagnostics on stderr)
#
# Knobs (environment):
#   ROUNDS=5            measured drain rounds (baton and etcdctl interleaved)
#   N=100               jobs per drain, split round-robin over the 3 hosts
#   DRAIN=1             run the drain comparison (0: skip it)
#   UNCONTENDED=1       run the uncontended comparison (0: skip it)
#   UNC_RUNS=30         runs per command of the uncontended comparison
#   UNC_WARMUP=3        warm-up runs per command (not measured)
#   HANDOVER=30         hand-over samples per tool (0: skip the hand-over)
#   SETTLE=0.2          seconds between "B is seen waiting" and ending A's job
#   IDLE=1              run the idle measurement (0: skip it)
#   IDLE_SECS=20        length of each idle window (holder alone; with waiters)
#   IDLE_WAITERS=10     waiting jobs in the idle measurement
#   IDLE_TTLS="15s 3s"  baton --etcd-ttl values measured idle (15s: the default)
#   IDLE_SETTLE=        seconds from "all seen waiting" to the window with the
#                       waiters (empty: the TTL + 2 s, past the one re-read a
#                       waiter makes a TTL after its last read when the
#                       revision has moved meanwhile, as the other waiters'
#                       arrivals move it); that first stretch is reported apart
#   IDLE_ETCDCTL=1      also measure idle `etcdctl lock --ttl SECS` waiters
#                       at the same TTLs (0: leave them out)
#   PORT_BASE=23790     ports (below the usual ephemeral range, 32768-60999): clients PORT_BASE+1..3, peers PORT_BASE+11..13,
#                       gateways PORT_BASE+21..23 (all checked free first)
#   DATA_ROOT=/dev/shm  tmpfs where the members' data directories go
#   STARTUP_TIMEOUT=30  seconds for the cluster and gateways to become healthy
#   DRAIN_TIMEOUT=300   seconds before one drain is declared hung (a failure)
#   STEP_TIMEOUT=30     seconds for any other wait (a job to hold, to be seen
#                       waiting, to exit) before it is a hang (a failure)
#   PAUSE=1             seconds of rest between two drain measurements
#   HISTORY=0           baton's history: 0 off (BATON_HISTORY= empty, as in
#                       bench/run.sh's baton rows); 1 on, one file in the
#                       scratch directory for the run
#   BUILD=1             cargo build --release --target $TARGET first
#   TARGET=x86_64-unknown-linux-musl  the build measured (the static one)
#   BATON_BIN=path      use this baton binary (implies BUILD=0)
#   FLOOR=0             1: also drain etcd's own lock recipe in Rust
#                       (bench/floor, `recipe`: over gRPC and over the JSON
#                       gateway, each plain and with baton's two queue reads
#                       a job) in the same rounds: the floor under baton's
#                       drain. Builds bench/floor first (needs protoc)
#   RECIPE_BIN=path     use this `recipe` binary (FLOOR=1 without building)
#   BEFORE=path         also drain this other baton build (tool baton-before,
#                       e.g. the commit before a change) in the same rounds
#                       (as bench/run.sh's BEFORE)
#   ETCD=/usr/bin/etcd  ETCDCTL=/usr/bin/etcdctl
#   KEEP=0              1: keep the scratch directory (raw data, logs)
#
# Exit status: 0 unless a job exited non-zero, something hung, the cluster
# did not start, or the tools are missing. Claims that do not hold are
# reported in the output, not as an exit status.

set -euo pipefail
export LC_ALL=C

ROUNDS=${ROUNDS:-5}
N=${N:-100}
DRAIN=${DRAIN:-1}
UNCONTENDED=${UNCONTENDED:-1}
UNC_RUNS=${UNC_RUNS:-30}
UNC_WARMUP=${UNC_WARMUP:-3}
HANDOVER=${HANDOVER:-30}
SETTLE=${SETTLE:-0.2}
IDLE=${IDLE:-1}
IDLE_SECS=${IDLE_SECS:-20}
IDLE_WAITERS=${IDLE_WAITERS:-10}
IDLE_TTLS=${IDLE_TTLS:-"15s 3s"}
IDLE_ETCDCTL=${IDLE_ETCDCTL:-1}
IDLE_SETTLE=${IDLE_SETTLE:-}
PORT_BASE=${PORT_BASE:-23790}
DATA_ROOT=${DATA_ROOT:-/dev/shm}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-30}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}
STEP_TIMEOUT=${STEP_TIMEOUT:-30}
PAUSE=${PAUSE:-1}
HISTORY=${HISTORY:-0}
BUILD=${BUILD:-1}
TARGET=${TARGET-$(uname -m)-unknown-linux-musl}
ETCD=${ETCD:-/usr/bin/etcd}
ETCDCTL=${ETCDCTL:-/usr/bin/etcdctl}
KEEP=${KEEP:-0}
FLOOR=${FLOOR:-0}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
PY=$here/etcd/report.py

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

for v in ROUNDS N UNC_RUNS IDLE_SECS IDLE_WAITERS PORT_BASE STARTUP_TIMEOUT DRAIN_TIMEOUT STEP_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || die "$v must be a positive whole number (got '${!v}')"
done
for v in UNC_WARMUP HANDOVER PAUSE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
for v in DRAIN UNCONTENDED IDLE IDLE_ETCDCTL HISTORY KEEP BUILD; do
    [[ ${!v} == [01] ]] || die "$v must be 0 or 1 (got '${!v}')"
done
[[ -z $IDLE_SETTLE || $IDLE_SETTLE =~ ^[0-9]+$ ]] || die "IDLE_SETTLE must be whole seconds or empty (got '$IDLE_SETTLE')"
[[ $SETTLE =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SETTLE must be a number of seconds (got '$SETTLE')"
(( PORT_BASE + 23 < 65536 )) || die "PORT_BASE is too high"
for t in $IDLE_TTLS; do
    [[ $t =~ ^[0-9]+s$ && ${t%s} -ge 2 ]] || die "IDLE_TTLS: whole seconds of at least 2, as 15s (got '$t')"
done
[[ -n ${EPOCHREALTIME:-} ]] || die "needs bash >= 5 (EPOCHREALTIME)"
[[ -x $ETCD ]] || die "etcd not found at $ETCD (apt-get install etcd-server)"
[[ -x $ETCDCTL ]] || die "etcdctl not found at $ETCDCTL (apt-get install etcd-client)"
command -v python3 >/dev/null || die "python3 is needed for the statistics"
command -v curl >/dev/null || die "curl is needed (health and metrics)"
command -v date >/dev/null && [[ $(date +%N) =~ ^[0-9]{9}$ ]] || die "date +%N (GNU coreutils) is needed"
[[ -d $DATA_ROOT ]] || die "DATA_ROOT=$DATA_ROOT is not a directory"

# Only what this script sets reaches etcd, etcdctl and baton (BATON_BIN is
# this script's own knob: kept; it was unset here once, so every run built
# the work tree whatever BATON_BIN said).
GIVEN_BIN=${BATON_BIN:-}
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(ETCD_|ETCDCTL_|BATON_)' || true)
if [[ -n $GIVEN_BIN ]]; then export BATON_BIN=$GIVEN_BIN; fi
export ETCDCTL_API=3
if [[ $HISTORY == 0 ]]; then export BATON_HISTORY=; fi

# --- build --------------------------------------------------------------
if [[ -n ${BATON_BIN:-} ]]; then
    BATON=$BATON_BIN
else
    cd "$repo"
    target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$repo/$target
    if [[ $BUILD == 1 ]]; then
        say "cargo build --release${TARGET:+ --target $TARGET}"
        cargo build --release --quiet ${TARGET:+--target "$TARGET"} >&2 ||
            die "could not build${TARGET:+ for $TARGET} (TARGET= measures the default build)"
    fi
    BATON=$target/${TARGET:+$TARGET/}release/baton
fi
[[ -x $BATON ]] || die "baton binary not found at $BATON"
BATON=$(cd "$(dirname "$BATON")" && pwd)/$(basename "$BATON")
BUILT_FROM="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
git -C "$repo" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null ||
    BUILT_FROM+=" + uncommitted changes to src/Cargo"
[[ -n ${BATON_BIN:-} ]] && BUILT_FROM="given binary (BATON_BIN); work tree at $BUILT_FROM"
BATON_SUM=$(sha256sum "$BATON" | cut -c1-12)
BATON_KIND=$(file -b "$BATON" 2>/dev/null | cut -d, -f1-2 || echo '?')
"$BATON" run --help 2>/dev/null | grep -q -- '--etcd' || die "$BATON has no --etcd option"

# The floor (FLOOR=1): etcd's lock recipe in Rust, bench/floor.
DRAIN_TOOLS=(baton etcdctl)
if [[ $FLOOR == 1 ]]; then
    if [[ -n ${RECIPE_BIN:-} ]]; then
        RECIPE=$RECIPE_BIN
    else
        ftarget=${CARGO_TARGET_DIR:-$repo/target}/floor
        say "cargo build --release --manifest-path bench/floor/Cargo.toml"
        cargo build --release --quiet --locked --manifest-path "$repo/bench/floor/Cargo.toml" --target-dir "$ftarget" >&2 ||
            die "could not build bench/floor (tonic's build needs protoc: apt-get install protobuf-compiler)"
        RECIPE=$ftarget/release/recipe
    fi
    [[ -x $RECIPE ]] || die "recipe binary not found at $RECIPE"
    DRAIN_TOOLS+=(recipe-grpc recipe-json recipe-grpc-reads recipe-json-reads)
fi
if [[ -n ${BEFORE:-} ]]; then
    [[ -x $BEFORE ]] || die "BEFORE: no executable at $BEFORE"
    DRAIN_TOOLS+=(baton-before)
fi

# --- ports ------------------------------------------------------------------
CPORT=() PPORT=() GPORT=()
for i in 0 1 2; do
    CPORT+=($(( PORT_BASE + 1 + i ))); PPORT+=($(( PORT_BASE + 11 + i ))); GPORT+=($(( PORT_BASE + 21 + i )))
done
port_busy() {
    if command -v ss >/dev/null; then
        [[ -n $(ss -Htln "( sport = :$1 )" 2>/dev/null) ]]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}
for p in "${CPORT[@]}" "${PPORT[@]}" "${GPORT[@]}"; do
    port_busy "$p" && die "port $p is in use (PORT_BASE=$PORT_BASE; set another PORT_BASE)"
done
MEMBER=() GW=()
for i in 0 1 2; do
    MEMBER+=("http://127.0.0.1:${CPORT[i]}"); GW+=("http://127.0.0.1:${GPORT[i]}")
done
MEMBERS=$(IFS=,; echo "${MEMBER[*]}")

# --- scratch space and cleanup --------------------------------------------
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/baton-etcd-bench.XXXXXX")
DATA=$(mktemp -d "$DATA_ROOT/baton-etcd-bench.XXXXXX")
[[ $HISTORY == 1 ]] && export BATON_HISTORY=$SCRATCH/history
declare -a SERVERS=()   # etcd members and gateways
declare -a LIVE=()      # jobs in flight
WATCHDOG=
HOLD_FD=                # the fd a holder's command reads its "go" from
cleanup() {
    local rc=$?
    [[ $BASHPID == "$$" ]] || exit "$rc"
    [[ -z $WATCHDOG ]] || kill -TERM "$WATCHDOG" 2>/dev/null || true
    if (( ${#LIVE[@]} )); then
        kill -TERM "${LIVE[@]}" 2>/dev/null || true
        sleep 0.3
        kill -KILL "${LIVE[@]}" 2>/dev/null || true
    fi
    ! declare -F stop_servers >/dev/null || stop_servers
    rm -rf "$DATA"
    if [[ $KEEP == 1 ]]; then say "scratch directory kept: $SCRATCH"; else rm -rf "$SCRATCH"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

NOTES=$SCRATCH/notes.txt; : >"$NOTES"
DRAIN_TSV=$SCRATCH/drain.tsv; printf 'tool\tround\twall_us\tper_job_us\tfailed\n' >"$DRAIN_TSV"
HO_TSV=$SCRATCH/handover.tsv; printf 'tool\tsample\tholder\twaiter\tlatency_us\n' >"$HO_TSV"
IDLE_DIR=$SCRATCH/idle; mkdir -p "$IDLE_DIR"
UNC_JSON=$SCRATCH/uncontended.json
FAILED=0
WD_FIFO=$SCRATCH/watchdog.fifo; mkfifo "$WD_FIFO"

note() { say "$*"; printf '%s\n' "$*" >>"$NOTES"; }
fail() { note "FAIL: $*"; FAILED=1; }
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo $(( 10#$t )); }
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }   # single-quote for hyperfine -N

# watch_start SECS TAG PID...: after SECS, mark TAG hung (TAG.hung in the
# scratch directory, with what `baton status` said if TAG.statuscmd holds a
# command line) and stop the PIDs. It sleeps in bash's own `read -t` on a
# FIFO that never gets data: no child of its own that could outlive it.
watch_start() {
    local secs=$1 tag=$2; shift 2
    (
        trap - EXIT INT TERM
        read -r -t "$secs" _ <>"$WD_FIFO" && exit 0
        kill -0 "$$" 2>/dev/null || exit 0
        : >"$SCRATCH/$tag.hung"
        if [[ -s $SCRATCH/$tag.statuscmd ]]; then
            mapfile -t argv <"$SCRATCH/$tag.statuscmd"
            timeout -k 2 10 "${argv[@]}" >"$SCRATCH/$tag.status" 2>&1 || true
        fi
        kill -TERM "$@" 2>/dev/null || true
        read -r -t 3 _ <>"$WD_FIFO" || true
        kill -KILL "$@" 2>/dev/null || true
    ) &
    WATCHDOG=$!
}
watch_stop() {
    [[ -n $WATCHDOG ]] || return 0
    kill -TERM "$WATCHDOG" 2>/dev/null || true
    wait "$WATCHDOG" 2>/dev/null || true
    WATCHDOG=
}
hung() { [[ -e $SCRATCH/$1.hung ]]; }
show_status() {   # after a hang: what baton status said when it was declared
    [[ -s $SCRATCH/$1.status ]] || return 0
    say "baton status at the time:"; head -n 40 "$SCRATCH/$1.status" >&2
}

# until_true SECS WHAT CMD...: run CMD every 50 ms until it succeeds; false
# (and a FAIL) after SECS.
until_true() {
    local secs=$1 what=$2; shift 2
    local end=$(( $(now_us) + secs * 1000000 ))
    until "$@"; do
        if (( $(now_us) > end )); then
            fail "$what: not within ${secs}s"
            return 1
        fi
        sleep 0.05
    done
}

# --- the cluster ------------------------------------------------------------------
# The ports may be in the kernel's ephemeral range (another PORT_BASE): an outgoing connection (a
# member dialling its peers, anyone's) can take one between the check and
# the bind. So the gateways bind first, then the members; a start that
# fails on "address already in use" is tried again (3 times in all).
IC=m1=http://127.0.0.1:${PPORT[0]},m2=http://127.0.0.1:${PPORT[1]},m3=http://127.0.0.1:${PPORT[2]}
GW_ENDPOINTS=127.0.0.1:${CPORT[0]},127.0.0.1:${CPORT[1]},127.0.0.1:${CPORT[2]}
alive() {     # alive PID: running (not gone, not a zombie)
    local s
    { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
    s=${s##*) }
    [[ ${s:0:1} != Z ]]
}
listening() { # listening PORT...: each has a listener
    local p
    for p in "$@"; do
        if command -v ss >/dev/null; then
            [[ -n $(ss -Htln "( sport = :$p )" 2>/dev/null) ]] || return 1
        else
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || return 1
        fi
    done
}
healthy() {   # every member, and every gateway, answers /health true
    local u
    for u in "${MEMBER[@]}" "${GW[@]}"; do
        [[ $(curl -s --max-time 2 "$u/health" 2>/dev/null) == *'"health":"true"'* ]] || return 1
    done
    "$ETCDCTL" --endpoints="$MEMBERS" --command-timeout=2s endpoint health >/dev/null 2>&1
}
stop_servers() {
    (( ${#SERVERS[@]} )) || return 0
    kill -TERM "${SERVERS[@]}" 2>/dev/null || true
    local i p up
    for (( i = 0; i < 50; i++ )); do
        up=0
        for p in "${SERVERS[@]}"; do alive "$p" && up=1; done
        (( up )) || break
        sleep 0.1
    done
    kill -KILL "${SERVERS[@]}" 2>/dev/null || true
    wait "${SERVERS[@]}" 2>/dev/null || true
    SERVERS=()
}
start_cluster() {   # true once healthy; false if a process died or it took too long
    local i m p end
    rm -rf "${DATA:?}"/*
    for i in 0 1 2; do
        "$ETCD" gateway start --endpoints="$GW_ENDPOINTS" --listen-addr="127.0.0.1:${GPORT[i]}" \
            >"$SCRATCH/gateway$((i + 1)).log" 2>&1 &
        SERVERS+=($!)
    done
    end=$(( $(now_us) + STARTUP_TIMEOUT * 1000000 ))
    until listening "${GPORT[@]}"; do
        for p in "${SERVERS[@]}"; do alive "$p" || return 1; done
        (( $(now_us) < end )) || return 1
        sleep 0.05
    done
    for i in 0 1 2; do
        m=m$((i + 1))
        "$ETCD" --name "$m" --data-dir "$DATA/$m" \
            --listen-client-urls "${MEMBER[i]}" --advertise-client-urls "${MEMBER[i]}" \
            --listen-peer-urls "http://127.0.0.1:${PPORT[i]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${PPORT[i]}" \
            --initial-cluster "$IC" --initial-cluster-state new \
            --initial-cluster-token "baton-bench-$$" \
            --heartbeat-interval 100 --election-timeout 1000 \
            >"$SCRATCH/$m.log" 2>&1 &
        SERVERS+=($!)
    done
    until healthy; do
        for p in "${SERVERS[@]}"; do alive "$p" || return 1; done
        (( $(now_us) < end )) || return 1
        sleep 0.1
    done
    for p in "${SERVERS[@]}"; do alive "$p" || return 1; done
}
say "starting a 3-member etcd cluster (clients ${CPORT[*]}, peers ${PPORT[*]}) and 3 gateways (${GPORT[*]}), data in $DATA"
for attempt in 1 2 3; do
    start_cluster && break
    stop_servers
    if (( attempt < 3 )) && grep -q "address already in use" "$SCRATCH"/m?.log "$SCRATCH"/gateway?.log 2>/dev/null; then
        say "a port was taken meanwhile (address already in use): trying again"
        sleep 1
        for p in "${CPORT[@]}" "${PPORT[@]}" "${GPORT[@]}"; do
            port_busy "$p" && die "port $p is in use (PORT_BASE=$PORT_BASE; set another PORT_BASE)"
        done
        continue
    fi
    for f in "$SCRATCH"/gateway?.log "$SCRATCH"/m?.log; do
        [[ -e $f ]] || continue
        say "--- $f (last lines)"; tail -n 5 "$f" >&2
    done
    die "the etcd cluster and its gateways did not become healthy within ${STARTUP_TIMEOUT}s"
done
ETCD_VERSION=$("$ETCD" --version | head -n 1)
say "cluster healthy; baton: $BATON; scratch: $SCRATCH"
load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')

# keys PREFIX: the keys under PREFIX, one a line.
keys() { "$ETCDCTL" --endpoints="$MEMBERS" get --prefix "$1" --keys-only | grep . || true; }
# counts TOOL PREFIX NAME: "HOLDERS WAITERS" of lock NAME.
counts() {
    local tool=$1 prefix=$2 name=$3
    if [[ $tool == baton ]]; then
        "$BATON" status --etcd "${GW[0]}" --etcd-prefix "$prefix" --json 2>/dev/null |
            python3 "$PY" status "$name"
    else
        # etcdctl lock: one key per job under NAME/, the oldest holds.
        local k
        k=$(keys "$name/" | wc -l)
        (( k > 0 )) && echo "1 $(( k - 1 ))" || echo "0 0"
    fi
}
has_counts() {   # has_counts TOOL PREFIX NAME HOLDERS WAITERS
    local c
    c=$(counts "$1" "$2" "$3") || return 1
    [[ $c == "$4 $5" ]]
}
statuscmd() {    # statuscmd TAG PREFIX: the command a watchdog runs on a hang
    printf '%s\n' "$BATON" status --etcd "${GW[0]}" --etcd-prefix "$2" >"$SCRATCH/$1.statuscmd"
}

# cpu_snap FILE: CPU ticks (utime stime) of each gateway and member, of this
# shell's reaped children (the jobs of a drain: fields 16-17 of its stat),
# and the machine's busy/idle ticks (/proc/stat).
cpu_snap() {
    local i p s
    {
        for i in "${!SERVERS[@]}"; do
            p=${SERVERS[i]}
            { read -r s <"/proc/$p/stat"; } 2>/dev/null || continue
            s=${s##*) }; read -r -a f <<<"$s"
            printf '%s %s %s\n' "$( (( i < 3 )) && echo "gateway$(( i + 1 ))" || echo "m$(( i - 2 ))")" "${f[11]}" "${f[12]}"
        done
        read -r s <"/proc/$$/stat"; s=${s##*) }; read -r -a f <<<"$s"
        printf 'jobs %s %s\n' "${f[13]}" "${f[14]}"
        read -r _ u n sy id io irq sirq st _ </proc/stat
        printf 'machine %s %s\n' "$(( u + n + sy + irq + sirq ))" "$(( id + io ))"
        # Time the hypervisor ran others on this VM's cores (a noisy host).
        printf 'stolen %s 0\n' "${st:-0}"
    } >"$1"
}

snap() {   # snap DIR TAG: the members' metrics, and when they were read
    local d=$1 tag=$2 i
    now_us >"$d/$tag.t"
    for i in 0 1 2; do
        curl -s --max-time 5 "${MEMBER[i]}/metrics" >"$d/$tag.m$((i + 1))" ||
            fail "could not read ${MEMBER[i]}/metrics"
    done
}

# --- drain ------------------------------------------------------------------------
# drain TOOL ROUND: N jobs at once on one lock, split over the hosts. Round 0
# is the warm-up (not recorded).
drain() {
    local tool=$1 round=$2
    local tag=drain-$tool-$round log=$SCRATCH/drain-$tool-$round.log
    local prefix=bench/d$round/ name=bench-d$round
    local i p rc t0 t1 wall fails=0 first_rc=0
    local -a pids=()
    local md=$SCRATCH/drainm/$tool-$round
    [[ $tool == baton ]] && statuscmd "$tag" "$prefix"
    # The cluster's request counters around the drain (outside the timing).
    mkdir -p "$md"; printf 'tool=%s\nround=%s\nn=%s\n' "$tool" "$round" "$N" >"$md/meta"
    snap "$md" pre
    cpu_snap "$md/pre.cpu"
    t0=$(now_us)
    if [[ $tool == baton || $tool == baton-before ]]; then
        local bin=$BATON
        [[ $tool == baton-before ]] && bin=$BEFORE prefix=bench/d$round-before/
        for (( i = 0; i < N; i++ )); do
            "$bin" run -q --etcd "${GW[i % 3]}" --etcd-prefix "$prefix" -l x -- true >>"$log" 2>&1 &
            pids+=($!)
        done
    elif [[ $tool == etcdctl ]]; then
        for (( i = 0; i < N; i++ )); do
            "$ETCDCTL" --endpoints="${GW[i % 3]}" lock "$name" true >>"$log" 2>&1 &
            pids+=($!)
        done
    else
        # recipe-API[-reads]: bench/floor's recipe, on its own lock name.
        local api=${tool#recipe-}; api=${api%-reads}
        local reads=(); [[ $tool == *-reads ]] && reads=(--reads)
        name=bench-$tool-$round
        for (( i = 0; i < N; i++ )); do
            "$RECIPE" "$api" "${reads[@]}" "${GW[i % 3]}" "$name" -- true >>"$log" 2>&1 &
            pids+=($!)
        done
    fi
    LIVE=("${pids[@]}")
    watch_start "$DRAIN_TIMEOUT" "$tag" "${pids[@]}"
    for p in "${pids[@]}"; do
        if wait "$p"; then :; else
            rc=$?; fails=$(( fails + 1 )); (( first_rc )) || first_rc=$rc
        fi
    done
    t1=$(now_us)
    cpu_snap "$md/post.cpu"
    watch_stop
    LIVE=()
    snap "$md" post
    (( round > 0 && fails == 0 )) || rm -rf "$md"
    wall=$(( t1 - t0 ))
    if hung "$tag"; then
        fail "$tool drain round $round (N=$N) did not finish within ${DRAIN_TIMEOUT}s; $fails jobs stopped"
        show_status "$tag"
    elif (( fails )); then
        fail "$tool drain round $round: $fails of $N jobs exited non-zero (first status $first_rc)"
    fi
    if [[ -s $log ]]; then
        note "ODD OUTPUT: $tool drain round $round printed (count, line):"
        sort "$log" | uniq -c | sort -rn | head -n 5 | sed 's/^/    /' | tee -a "$NOTES" >&2
    fi
    # Left in etcd: baton keeps one grant guard per lock name (g/...);
    # anything else (a record, a job's details) outlived its job.
    local left
    if [[ $tool == baton ]]; then
        left=$(keys "$prefix" | grep -v -c "^${prefix}g/" || true)
    else
        left=$(keys "$name/" | wc -l)
    fi
    (( left == 0 )) || note "LEFTOVER: $tool drain round $round left $left key(s) in etcd ($( [[ $tool == baton ]] && echo "under $prefix, besides g/" || echo "under $name/"))"
    (( round == 0 )) || printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$round" "$wall" \
        "$(( wall / N ))" "$(( fails > 0 ))" >>"$DRAIN_TSV"
    say "$(printf '%-8s N=%-4s %-9s %8.1f ms total, %7.3f ms/job%s' "$tool" "$N" \
        "$( (( round )) && echo "round $round:" || echo "warm-up:")" \
        "$wall"e-3 "$(( wall / N ))"e-3 "$( (( fails )) && echo ", $fails FAILED" || true)")"
}

if [[ $DRAIN == 1 ]]; then
    say "drain: N=$N over 3 hosts, $ROUNDS rounds (+1 warm-up), ${DRAIN_TOOLS[*]} interleaved"
    for tool in "${DRAIN_TOOLS[@]}"; do drain "$tool" 0; done
    for (( r = 1; r <= ROUNDS; r++ )); do
        # Rotate which tool goes first, so none always follows the same one.
        k=$(( (r - 1) % ${#DRAIN_TOOLS[@]} ))
        order=("${DRAIN_TOOLS[@]:k}" "${DRAIN_TOOLS[@]:0:k}")
        for tool in "${order[@]}"; do
            sleep "$PAUSE"
            drain "$tool" "$r"
        done
    done
fi

# --- uncontended ------------------------------------------------------------------
UNC_MODE=none
if [[ $UNCONTENDED == 1 ]]; then
    ub=("$BATON" run -q --etcd "${GW[0]}" --etcd-prefix bench/u/ -l u -- true)
    ue=("$ETCDCTL" --endpoints="${GW[0]}" lock bench-u true)
    if command -v hyperfine >/dev/null; then
        UNC_MODE=hyperfine
        say "uncontended: hyperfine -N, $UNC_WARMUP warmup, $UNC_RUNS runs each"
        line() { local a out=; for a in "$@"; do out+="$(q "$a") "; done; echo "${out% }"; }
        hyperfine -N --style basic --warmup "$UNC_WARMUP" --runs "$UNC_RUNS" \
            --export-json "$UNC_JSON" \
            -n baton "$(line "${ub[@]}")" -n etcdctl "$(line "${ue[@]}")" >&2 ||
            fail "uncontended: hyperfine failed (a command exited non-zero?)"
    else
        UNC_MODE=python
        say "hyperfine not available: timing with python3 (bench/uncontended.py)"
        python3 "$here/uncontended.py" --rounds 1 --runs "$UNC_RUNS" --warmup "$UNC_WARMUP" \
            --json "$UNC_JSON" "baton=$(printf '%q ' "${ub[@]}")" "etcdctl=$(printf '%q ' "${ue[@]}")" >&2 ||
            fail "uncontended: a command exited non-zero"
    fi
    [[ -s $UNC_JSON ]] || UNC_MODE=none
fi

# --- hand-over --------------------------------------------------------------------
# A holder's command: wait for the "go" line on a FIFO, then exec date, the
# stamp of its end. The script opens the FIFO read-write (never blocks),
# writes "go" and keeps it open until the holder has exited.
HOLD_CMD=(sh -c 'read x <"$1"; exec date +%s%N' sh)
release() {   # release FIFO: let the holder's command read its "go"
    exec {HOLD_FD}<>"$1"
    echo go >&"$HOLD_FD"
}
unrelease() { [[ -z $HOLD_FD ]] || exec {HOLD_FD}>&-; HOLD_FD=; }
stamp() {     # stamp FILE: the one nanosecond stamp it holds, or fail
    local s
    s=$(<"$1")
    [[ $s =~ ^[0-9]{19}$ ]] || return 1
    echo "$s"
}

handover() {   # handover TOOL SAMPLE
    local tool=$1 i=$2
    local a=$(( i % 3 )) b=$(( (i + 1) % 3 ))
    local tag=ho-$tool-$i d=$SCRATCH/ho-$tool-$i
    local prefix=bench/h/ name=h$i pa pb ra=0 rb=0 ta tb
    mkdir -p "$d"; mkfifo "$d/fifo"
    [[ $tool == etcdctl ]] && name=bench-h$i
    [[ $tool == baton ]] && statuscmd "$tag" "$prefix"
    if [[ $tool == baton ]]; then
        "$BATON" run -q --etcd "${GW[a]}" --etcd-prefix "$prefix" -l "$name" -- "${HOLD_CMD[@]}" "$d/fifo" \
            >"$d/a.out" 2>"$d/a.err" &
    else
        "$ETCDCTL" --endpoints="${GW[a]}" lock "$name" -- "${HOLD_CMD[@]}" "$d/fifo" \
            >"$d/a.out" 2>"$d/a.err" &
    fi
    pa=$!; LIVE=("$pa")
    watch_start "$STEP_TIMEOUT" "$tag" "$pa"
    if until_true "$STEP_TIMEOUT" "hand-over $tool sample $i: host $((a + 1))'s job holding" \
            has_counts "$tool" "$prefix" "$name" 1 0; then
        if [[ $tool == baton ]]; then
            "$BATON" run -q --etcd "${GW[b]}" --etcd-prefix "$prefix" -l "$name" -- date +%s%N \
                >"$d/b.out" 2>"$d/b.err" &
        else
            "$ETCDCTL" --endpoints="${GW[b]}" lock "$name" date +%s%N >"$d/b.out" 2>"$d/b.err" &
        fi
        pb=$!; LIVE+=("$pb")
        watch_stop; watch_start "$STEP_TIMEOUT" "$tag" "$pa" "$pb"
        if until_true "$STEP_TIMEOUT" "hand-over $tool sample $i: host $((b + 1))'s job seen waiting" \
                has_counts "$tool" "$prefix" "$name" 1 1; then
            sleep "$SETTLE"
        fi
        watch_stop; watch_start "$STEP_TIMEOUT" "$tag" "$pa" "$pb"
    fi
    release "$d/fifo"
    wait "$pa" || ra=$?
    [[ -z ${pb:-} ]] || wait "$pb" || rb=$?
    watch_stop; unrelease; LIVE=()
    if hung "$tag"; then
        fail "hand-over $tool sample $i hung (stopped after ${STEP_TIMEOUT}s)"; show_status "$tag"; return 0
    fi
    [[ -n ${pb:-} ]] || return 0
    if (( ra || rb )); then
        fail "hand-over $tool sample $i: exit status holder $ra, waiter $rb; stderr: $(head -c 300 "$d/a.err") / $(head -c 300 "$d/b.err")"
        return 0
    fi
    [[ -s $d/a.err || -s $d/b.err ]] &&
        note "ODD OUTPUT: hand-over $tool sample $i: $(head -c 200 "$d/a.err") / $(head -c 200 "$d/b.err")"
    if ! ta=$(stamp "$d/a.out") || ! tb=$(stamp "$d/b.out"); then
        fail "hand-over $tool sample $i: no stamp (holder printed '$(head -c 100 "$d/a.out")', waiter '$(head -c 100 "$d/b.out")')"
        return 0
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$i" "$((a + 1))" "$((b + 1))" "$(( (tb - ta) / 1000 ))" >>"$HO_TSV"
    [[ $KEEP == 1 ]] || rm -rf "$d"
}

if (( HANDOVER > 0 )); then
    say "hand-over: $HANDOVER samples per tool, host pairs rotating, tools alternating"
    for (( i = 0; i < HANDOVER; i++ )); do
        for tool in baton etcdctl; do handover "$tool" "$i"; done
        (( (i + 1) % 10 )) || say "hand-over: $(( i + 1 ))/$HANDOVER samples"
    done
fi

# --- idle waiting ----------------------------------------------------------------------
cpu() {    # cpu DIR TAG PID...: "pid utime stime" of each (clock ticks)
    local d=$1 tag=$2 p s; shift 2
    : >"$d/$tag.cpu"
    for p in "$@"; do
        if { read -r s <"/proc/$p/stat"; } 2>/dev/null; then
            s=${s##*) }
            read -r -a f <<<"$s"
            printf '%s %s %s\n' "$p" "${f[11]}" "${f[12]}" >>"$d/$tag.cpu"
        else
            fail "idle: waiter pid $p is gone before the end of the window"
        fi
    done
}

idle() {   # idle TOOL TTL (as 15s)
    local tool=$1 ttl=$2
    local tag=idle-$tool-$ttl d=$IDLE_DIR/$tool-$ttl
    local prefix=bench/i$ttl/ name=i$ttl p k rc bad=0
    local -a waiters=() all=()
    [[ $tool == etcdctl ]] && name=bench-i$ttl
    mkdir -p "$d"; mkfifo "$d/fifo"
    local settle=${IDLE_SETTLE:-$(( ${ttl%s} + 2 ))}
    printf 'tool=%s\nttl=%s\nwaiters=%s\nsettle=%s\n' "$tool" "${ttl%s}" "$IDLE_WAITERS" "$settle" >"$d/meta"
    [[ $tool == baton ]] && statuscmd "$tag" "$prefix"
    if [[ $tool == baton ]]; then
        "$BATON" run -q --etcd "${GW[0]}" --etcd-prefix "$prefix" --etcd-ttl "$ttl" -l "$name" -- \
            "${HOLD_CMD[@]}" "$d/fifo" >"$d/holder.out" 2>"$d/holder.err" &
    else
        "$ETCDCTL" --endpoints="${GW[0]}" lock --ttl "${ttl%s}" "$name" -- \
            "${HOLD_CMD[@]}" "$d/fifo" >"$d/holder.out" 2>"$d/holder.err" &
    fi
    all=($!); LIVE=("${all[@]}")
    local total=$(( 4 * STEP_TIMEOUT + 2 * IDLE_SECS + settle + 10 ))
    watch_start "$total" "$tag" "${all[@]}"
    if until_true "$STEP_TIMEOUT" "idle $tool ttl $ttl: the holder holding" \
            has_counts "$tool" "$prefix" "$name" 1 0; then
        sleep 1
        say "idle $tool --ttl $ttl: holder alone for ${IDLE_SECS}s"
        snap "$d" a0; sleep "$IDLE_SECS"; snap "$d" a1
        for (( k = 0; k < IDLE_WAITERS; k++ )); do
            if [[ $tool == baton ]]; then
                "$BATON" run -q --etcd "${GW[(k + 1) % 3]}" --etcd-prefix "$prefix" --etcd-ttl "$ttl" \
                    -l "$name" -- true >>"$d/waiters.log" 2>&1 &
            else
                "$ETCDCTL" --endpoints="${GW[(k + 1) % 3]}" lock --ttl "${ttl%s}" "$name" true \
                    >>"$d/waiters.log" 2>&1 &
            fi
            waiters+=($!)
        done
        all+=("${waiters[@]}"); LIVE=("${all[@]}")
        watch_stop; watch_start "$total" "$tag" "${all[@]}"
        if until_true "$STEP_TIMEOUT" "idle $tool ttl $ttl: $IDLE_WAITERS jobs seen waiting" \
                has_counts "$tool" "$prefix" "$name" 1 "$IDLE_WAITERS"; then
            say "idle $tool --ttl $ttl: $IDLE_WAITERS waiters seen waiting; ${settle}s of settling, then ${IDLE_SECS}s"
            snap "$d" s0; sleep "$settle"
            snap "$d" b0; cpu "$d" b0 "${waiters[@]}"
            sleep "$IDLE_SECS"
            snap "$d" b1; cpu "$d" b1 "${waiters[@]}"
            has_counts "$tool" "$prefix" "$name" 1 "$IDLE_WAITERS" ||
                fail "idle $tool ttl $ttl: after the window, status shows $(counts "$tool" "$prefix" "$name" || true) (holders waiters), not 1 $IDLE_WAITERS"
        fi
    fi
    release "$d/fifo"
    for p in "${all[@]}"; do
        if wait "$p"; then :; else rc=$?; bad=$(( bad + 1 )); fi
    done
    watch_stop; unrelease; LIVE=()
    if hung "$tag"; then
        fail "idle $tool ttl $ttl hung (stopped after ${total}s)"; show_status "$tag"
    elif (( bad )); then
        fail "idle $tool ttl $ttl: $bad of $(( ${#all[@]} )) jobs exited non-zero (last status $rc)"
    fi
    [[ -s $d/waiters.log || -s $d/holder.err ]] &&
        note "ODD OUTPUT: idle $tool ttl $ttl: $(cat "$d/holder.err" "$d/waiters.log" | sort | uniq -c | sort -rn | head -n 3 | tr '\n' ' ')"
    return 0
}

if [[ $IDLE == 1 ]]; then
    idle_tools=(baton); [[ $IDLE_ETCDCTL == 1 ]] && idle_tools+=(etcdctl)
    for ttl in $IDLE_TTLS; do
        for tool in "${idle_tools[@]}"; do idle "$tool" "$ttl"; done
    done
fi

# --- report ------------------------------------------------------------------------
hist_meta="off (BATON_HISTORY= empty)"
[[ $HISTORY == 1 ]] && hist_meta="on, one file in the scratch directory"
floor_meta=()
if [[ -n ${RECIPE:-} ]]; then
    fv=$(grep -A1 '^name = "etcd-client"' "$repo/bench/floor/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p')
    floor_meta=(--meta "floor=$RECIPE (bench/floor: etcd's lock recipe in Rust; etcd-client $fv over gRPC, ureq over the JSON gateway)")
fi
unc_timer=$UNC_MODE; [[ $UNC_MODE == hyperfine ]] && unc_timer=$(hyperfine --version)
python3 "$PY" report \
    --drain "$DRAIN_TSV" --drain-metrics "$SCRATCH/drainm" --handover "$HO_TSV" --idle "$IDLE_DIR" --notes "$NOTES" \
    --uncontended "$( [[ $UNC_MODE != none ]] && echo "$UNC_JSON" || true)" --uncontended-mode "$UNC_MODE" \
    --n "$N" --rounds "$ROUNDS" --drain-ran "$DRAIN" --unc-runs "$UNC_RUNS" --samples "$HANDOVER" \
    --idle-secs "$IDLE_SECS" --clk-tck "$(getconf CLK_TCK)" --settle "$SETTLE" \
    --command "$(env | grep -E '^(ROUNDS|N|DRAIN|FLOOR|BEFORE|UNCONTENDED|UNC_RUNS|UNC_WARMUP|HANDOVER|SETTLE|IDLE|IDLE_SECS|IDLE_WAITERS|IDLE_TTLS|IDLE_ETCDCTL|PORT_BASE|HISTORY|BUILD|TARGET|BATON_BIN)=' | sort | sed -E "s/=(.*)/='\1'/" | tr '\n' ' ')bash bench/etcd.sh" \
    --meta "baton=$BATON (sha256 $BATON_SUM…, $BATON_KIND)" \
    --meta "built from=$BUILT_FROM" \
    --meta "etcd=$ETCD_VERSION; $("$ETCDCTL" version | head -n 1)" \
    --meta "cluster=3 members on loopback (clients ${CPORT[*]}), data on $(findmnt -n -o FSTYPE -T "$DATA" 2>/dev/null | head -n 1 || stat -f -c %T "$DATA") ($DATA_ROOT), --heartbeat-interval 100 --election-timeout 1000; 3 hosts = 3 \`etcd gateway start\` (${GPORT[*]}), each host's jobs on its own gateway's URL" \
    --meta "baton history=$hist_meta" \
    "${floor_meta[@]}" \
    --meta "uncontended timer=$unc_timer" \
    --meta "machine=$(nproc) cores, $(uname -sr), load before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')" \
    --meta "date=$(date -u +%Y-%m-%dT%H:%MZ)"

if (( FAILED )); then
    say "FAILED: a job exited non-zero or something hung (see above)"
    exit 1
fi
