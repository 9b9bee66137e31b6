#!/usr/bin/env bash
# Benchmark harness for baton: drain throughput and uncontended overhead,
# side by side with util-linux flock(1) and a mkdir/sleep-0.5 busy-wait loop;
# the cost of the history (a record per ended job) and of reading it.
# See BENCHMARKS.md for what is measured and how to read the output.
#
# Usage:  bash bench/run.sh            (from anywhere; Markdown on stdout,
#                                       progress and diagnostics on stderr)
#
# Knobs (environment):
#   ROUNDS=5            drain repetitions per size (tools interleaved per round)
#   SIZES="200 2000"    queue sizes N for the drain
#   BUSY=1              include the busy-wait loop (0: leave it out)
#   BUSY_MAX=200        busy-wait only for N <= BUSY_MAX (it polls every 0.5 s)
#   BASELINE=1          also drain plain `true` (no lock): the launch-loop floor
#   UNCONTENDED=1       run the uncontended (sequential) comparison
#   UNC_ROUNDS=3        hyperfine repetitions of the uncontended comparison
#   HF_RUNS=300         hyperfine runs per command per repetition
#   HF_WARMUP=30        hyperfine warmup runs per command per repetition
#   DRAIN_TIMEOUT=900   seconds before one drain is declared hung (a failure)
#   PAUSE=1             seconds of rest between two drain measurements
#   BUILD=1             cargo build --release first (0: use the existing binaries)
#   TARGET=x86_64-unknown-linux-musl   the build measured as "baton": the
#                       static build the README installs ($(uname -m) on other
#                       machines); TARGET= (empty) measures the default build
#   GLIBC=1             also measure the default (glibc, dynamic) build as
#                       "baton-glibc" (0: leave it out)
#   FRESH=1             also measure baton in a fresh, empty state directory
#                       for every drain, as "baton-fresh" (0: leave it out).
#                       "baton" and "baton-glibc" each keep one state
#                       directory for the whole run, as /run/baton is kept on
#                       a real machine (its spare job files are reused).
#   BATON_BIN=path      use this baton binary (implies BUILD=0, GLIBC=0)
#   BEFORE=path         also measure this baton binary as "baton-before", in
#                       the same rounds (a before/after comparison of builds)
#                       baton, baton-fresh, baton-glibc and baton-before run
#                       with the history off (BATON_HISTORY= empty, exported
#                       for their commands only), comparable with the figures
#                       from before the history; none of them writes to
#                       /var/lib/baton or ~/.local/state.
#   HISTORY=1           also measure "baton-history": the same binary as
#                       "baton", history on, in the same rounds (drain and
#                       uncontended), its file on the real disk under
#                       HISTORY_TMP; after each of its drains, the file must
#                       have gained exactly N records of outcome "ok"
#                       (0: leave the row out)
#   HISTREAD=1          time `baton history` (--limit 50, --limit 50 --json,
#                       --limit 50 NAME, --since 10m; for reference a name in
#                       no record, which reads both files whole, and
#                       `tail -n 50` as the floor) on a generated full 16 MiB
#                       history (bench/history.py), each output checked
#                       first (0: skip)
#   HISTREAD_RUNS=50    hyperfine runs per history command
#   HISTREAD_WARMUP=5   hyperfine warmup runs per history command
#   HISTORY_TMP=/var/tmp  where the history files go: a directory of the
#                       script's own is made there and removed at the end.
#                       A real disk, as ~/.local/state is (not tmpfs)
#   DRAIN=1             run the drain comparison (0: skip it)
#   FLOCK=/usr/bin/flock
#   KEEP=0              1: keep the scratch directory (raw data, job logs)
#                       and the history directory under HISTORY_TMP
#
# Exit status: 0 unless a job failed, a drain hung, a history record is
# missing or malformed, `baton history` printed a wrong result, or the tools
# are missing.
# Claims that do not hold are reported in the output, not as an exit status.

set -euo pipefail
export LC_ALL=C

ROUNDS=${ROUNDS:-5}
SIZES=${SIZES:-"200 2000"}
BUSY=${BUSY:-1}
BUSY_MAX=${BUSY_MAX:-200}
BASELINE=${BASELINE:-1}
UNCONTENDED=${UNCONTENDED:-1}
UNC_ROUNDS=${UNC_ROUNDS:-3}
HF_RUNS=${HF_RUNS:-300}
HF_WARMUP=${HF_WARMUP:-30}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-900}
PAUSE=${PAUSE:-1}
BUILD=${BUILD:-1}
TARGET=${TARGET-$(uname -m)-unknown-linux-musl}
GLIBC=${GLIBC:-1}
FRESH=${FRESH:-1}
FLOCK=${FLOCK:-/usr/bin/flock}
KEEP=${KEEP:-0}
HISTORY=${HISTORY:-1}
HISTREAD=${HISTREAD:-1}
HISTREAD_RUNS=${HISTREAD_RUNS:-50}
HISTREAD_WARMUP=${HISTREAD_WARMUP:-5}
HISTORY_TMP=${HISTORY_TMP:-/var/tmp}
DRAIN=${DRAIN:-1}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

for v in ROUNDS BUSY_MAX UNC_ROUNDS HF_RUNS HF_WARMUP DRAIN_TIMEOUT HISTREAD_RUNS; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || die "$v must be a positive whole number (got '${!v}')"
done
[[ $HF_WARMUP =~ ^[0-9]+$ ]] || die "HF_WARMUP must be a whole number"
[[ $HISTREAD_WARMUP =~ ^[0-9]+$ ]] || die "HISTREAD_WARMUP must be a whole number"
for v in HISTORY HISTREAD DRAIN; do
    [[ ${!v} == [01] ]] || die "$v must be 0 or 1 (got '${!v}')"
done
for n in $SIZES; do
    [[ $n =~ ^[0-9]+$ && $n -gt 0 ]] || die "SIZES must be positive whole numbers (got '$n')"
done
[[ -n ${SIZES// /} ]] || die "SIZES is empty"
[[ -n ${EPOCHREALTIME:-} ]] || die "needs bash >= 5 (EPOCHREALTIME, a fork-free microsecond clock)"
[[ -x $FLOCK ]] || die "flock(1) not found at $FLOCK"
command -v python3 >/dev/null || die "python3 is needed for the statistics"
TRUE_BIN=$(type -P true) || die "no true(1) binary on PATH"

# --- build --------------------------------------------------------------
BATON_GLIBC=
if [[ -n ${BATON_BIN:-} ]]; then
    BATON=$BATON_BIN
    GLIBC=0
else
    cd "$repo"
    target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$repo/$target
    if [[ $BUILD == 1 ]]; then
        if [[ -n $TARGET ]]; then
            say "cargo build --release --target $TARGET"
            if ! cargo build --release --quiet --target "$TARGET" >&2; then
                command -v rustup >/dev/null && say "hint: rustup target add $TARGET"
                die "could not build for $TARGET (TARGET= measures the default build)"
            fi
        fi
        if [[ -z $TARGET || $GLIBC == 1 ]]; then
            say "cargo build --release"
            cargo build --release --quiet >&2
        fi
    fi
    if [[ -n $TARGET ]]; then
        BATON=$target/$TARGET/release/baton
        [[ $GLIBC == 1 ]] && BATON_GLIBC=$target/release/baton
    else
        BATON=$target/release/baton
        GLIBC=0
    fi
fi
[[ -x $BATON ]] || die "baton binary not found at $BATON"
[[ -z $BATON_GLIBC || -x $BATON_GLIBC ]] || die "glibc baton binary not found at $BATON_GLIBC"
BATON=$(cd "$(dirname "$BATON")" && pwd)/$(basename "$BATON")
BEFORE=${BEFORE:-}
[[ -z $BEFORE || -x $BEFORE ]] || die "BEFORE binary not found at $BEFORE"
# What was measured, taken now: the work tree may change while the run goes on.
BUILT_FROM="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
git -C "$repo" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null ||
    BUILT_FROM+=" + uncommitted changes to src/Cargo"
[[ -n ${BATON_BIN:-} ]] && BUILT_FROM="given binary (BATON_BIN); work tree at $BUILT_FROM"
BATON_SUM=$(sha256sum "$BATON" | cut -c1-12)
BATON_KIND=$(file -b "$BATON" 2>/dev/null | cut -d, -f1-2 || echo '?')

# --- limits ---------------------------------------------------------------
max_n=0
for n in $SIZES; do (( n > max_n )) && max_n=$n; done
# Each waiting baton is a process plus one waiter thread, and the command
# it runs is a third task; flock and the shells need one or two.
need_procs=$(( 3 * max_n + 1024 ))
need_files=$(( max_n + 1024 ))
raise() { # raise FLAG NEED: soft limit up to the hard one (or past it as root)
    local flag=$1 want=$2 soft hard
    soft=$(ulimit -S"$flag"); hard=$(ulimit -H"$flag")
    [[ $soft == unlimited ]] && return 0
    (( soft >= want )) && return 0
    if [[ $hard == unlimited ]] || (( hard >= want )); then
        ulimit -S"$flag" "$want"
    else
        ulimit -"$flag" "$want" 2>/dev/null || ulimit -S"$flag" "$hard"
    fi
    soft=$(ulimit -S"$flag")
    [[ $soft == unlimited ]] || (( soft >= want )) ||
        say "warning: ulimit -$flag is $soft, below the $want this run may need"
}
raise n "$need_files"
raise u "$need_procs"
pid_max=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 0)
if (( pid_max > 0 && pid_max < need_procs )); then
    say "warning: kernel.pid_max is $pid_max, below the $need_procs this run may need"
fi

# --- scratch space and cleanup --------------------------------------------
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/baton-bench.XXXXXX")
HDIR=                # the history files' directory (real disk), for the trap
declare -a LIVE=()   # pids of the drain in flight, for the trap
WATCHDOG=            # pid of the drain's watchdog, for the trap
cleanup() {
    local rc=$?
    # A subshell (the watchdog) can run this trap if it is signalled before
    # bash resets the traps it inherited: only the script itself cleans up.
    [[ $BASHPID == "$$" ]] || exit "$rc"
    [[ -z $WATCHDOG ]] || kill -TERM "$WATCHDOG" 2>/dev/null || true
    if (( ${#LIVE[@]} )); then
        kill -TERM "${LIVE[@]}" 2>/dev/null || true
        sleep 0.2
        kill -KILL "${LIVE[@]}" 2>/dev/null || true
    fi
    if [[ $KEEP == 1 ]]; then
        say "scratch directory kept: $SCRATCH"
        [[ -z $HDIR ]] || say "history directory kept: $HDIR"
    else
        rm -rf "$SCRATCH"
        [[ -z $HDIR ]] || rm -rf "$HDIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

WD_FIFO=$SCRATCH/watchdog.fifo
mkfifo "$WD_FIFO"
RESULTS=$SCRATCH/drain.tsv       # tool n round wall_us per_job_us failed
NOTES=$SCRATCH/notes.txt         # odd things seen, one per line
printf 'tool\tn\tround\twall_us\tper_job_us\tfailed\n' >"$RESULTS"
: >"$NOTES"
FAILED=0

note() { say "$*"; printf '%s\n' "$*" >>"$NOTES"; }
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }   # single-quote for hyperfine -N
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $(( 10#$t / 1000 )); }

# hyperfine, installed with apt-get if it is missing and we may (root).
HF_TRIED=0
have_hyperfine() {
    command -v hyperfine >/dev/null && return 0
    if (( ! HF_TRIED )) && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        HF_TRIED=1
        say "hyperfine missing: apt-get install -y hyperfine"
        { apt-get update -qq && apt-get install -y -qq hyperfine; } >&2 || say "warning: could not install hyperfine"
    fi
    command -v hyperfine >/dev/null
}

# --- the history's files ------------------------------------------------------
# On the real disk (HISTORY_TMP), not in SCRATCH (TMPDIR may be tmpfs): the
# cost of a record is that of ~/.local/state or /var/lib/baton.
HIST_FILE=            # baton-history's file in the drains (kept for the run)
HIST_FS=
if [[ $HISTORY == 1 || $HISTREAD == 1 ]]; then
    [[ -d $HISTORY_TMP ]] || die "HISTORY_TMP=$HISTORY_TMP is not a directory"
    HDIR=$(mktemp -d "$HISTORY_TMP/baton-bench-history.XXXXXX")
    HIST_FILE=$HDIR/drain/history
    HIST_FS=$(findmnt -n -o FSTYPE,SOURCE -T "$HDIR" 2>/dev/null | tr -s ' ' || stat -f -c %T "$HDIR")
    [[ -n $HIST_FS ]] || HIST_FS=$(stat -f -c %T "$HDIR")
    case $HIST_FS in
        tmpfs*|ramfs*) note "NOTE: the history files are on $HIST_FS ($HDIR), not a real disk: set HISTORY_TMP to a directory on disk" ;;
    esac
fi

# --- one drain --------------------------------------------------------------
# drain TOOL N ROUND: launch N jobs at once on one lock, wait for all of them,
# record the wall time. ROUND 0 is a warm-up and is not recorded.
drain() {
    local tool=$1 n=$2 round=$3
    local work log t0 t1 wall i p rc fails=0 first_rc=0 wd
    local -a cmd pids=()
    work=$(mktemp -d "$SCRATCH/$tool-$n-$round.XXXXXX")   # mode 0700, fresh
    log=$work.log
    # baton's state directory: kept across drains (one per build), or, for
    # baton-fresh, the drain's own new directory.
    local state=$SCRATCH/state-$tool
    case $tool in
        baton) cmd=("$BATON" run -l x -- true) ;;
        baton-history) cmd=("$BATON" run -l x -- true) ;;
        baton-fresh) cmd=("$BATON" run -l x -- true); state=$work ;;
        baton-glibc) cmd=("$BATON_GLIBC" run -l x -- true) ;;
        baton-before) cmd=("$BEFORE" run -l x -- true) ;;
        flock) mkdir -p "$state"; cmd=("$FLOCK" "$state/lockfile" true) ;;
        busy)  cmd=(sh -c 'until mkdir "$1" 2>/dev/null; do sleep 0.5; done; true; rmdir "$1"' sh "$work/lockdir") ;;
        none)  cmd=("$TRUE_BIN") ;;   # fork+exec, no lock: the launch floor
        *) die "unknown tool $tool" ;;
    esac
    export BATON_DIR=$state   # only baton reads it
    # The history: off for every baton row but baton-history. Where its
    # file stood before the drain, to count the records the drain added.
    local h_ino=0 h_off=0
    case $tool in
        baton-history)
            export BATON_HISTORY=$HIST_FILE
            [[ ! -e $HIST_FILE ]] || read -r h_ino h_off < <(stat -c '%i %s' "$HIST_FILE")
            ;;
        baton*) export BATON_HISTORY= ;;
    esac

    t0=${EPOCHREALTIME/[.,]/}
    {
        for (( i = 0; i < n; i++ )); do
            "${cmd[@]}" &
            pids+=($!)
        done
    } >"$log" 2>&1
    LIVE=("${pids[@]}")
    # Watchdog: a drain that outlives DRAIN_TIMEOUT is a hang. Keep what
    # baton status says, then stop the jobs so that the wait below returns.
    # It sleeps in bash's own `read -t` on a FIFO that never gets data, so it
    # has no child that could outlive it when it is stopped early.
    (
        trap - EXIT INT TERM
        read -r -t "$DRAIN_TIMEOUT" _ <>"$WD_FIFO" && exit 0
        kill -0 "$$" 2>/dev/null || exit 0   # the script is gone: touch nothing
        : >"$work.hung"
        if [[ $tool == baton* ]]; then
            timeout -k 2 10 "$BATON" status --dir "$state" >"$work.status" 2>&1 || true
        fi
        kill -TERM "${pids[@]}" 2>/dev/null || true
        read -r -t 5 _ <>"$WD_FIFO" || true
        kill -KILL "${pids[@]}" 2>/dev/null || true
    ) &
    wd=$!
    WATCHDOG=$wd
    for p in "${pids[@]}"; do
        if wait "$p"; then :; else
            rc=$?
            fails=$((fails + 1))
            (( first_rc )) || first_rc=$rc
        fi
    done
    t1=${EPOCHREALTIME/[.,]/}
    LIVE=()
    kill -TERM "$wd" 2>/dev/null || true
    wait "$wd" 2>/dev/null || true
    WATCHDOG=
    unset BATON_DIR BATON_HISTORY

    wall=$(( 10#$t1 - 10#$t0 ))
    if [[ -e $work.hung ]]; then
        note "HANG: $tool N=$n round $round did not finish within ${DRAIN_TIMEOUT}s; $fails jobs stopped"
        [[ -s $work.status ]] && { say "baton status at the time:"; head -n 40 "$work.status" >&2; }
        FAILED=1
    elif (( fails )); then
        note "FAIL: $tool N=$n round $round: $fails of $n jobs exited non-zero (first status $first_rc)"
        FAILED=1
    fi
    # Anything a job printed that is not baton's normal waiting/granted line.
    local odd
    odd=$(grep -v -E '^baton: (waiting for x[:,]|got x after [0-9])' "$log" | sort | uniq -c | sort -rn | head -n 5 || true)
    if [[ -n $odd ]]; then
        note "ODD OUTPUT: $tool N=$n round $round printed unexpected lines (count, line):"
        printf '%s\n' "$odd" | sed 's/^/    /' | tee -a "$NOTES" >&2
    fi
    # baton should leave nothing but its mutex file, spare job files (s.N)
    # and empty queue files (one free record, kept for the next job).
    if [[ $tool == baton* ]]; then
        local left
        left=$(cd "$state" && find . -mindepth 1 ! -name lock ! -name 's.[0-9]*' ! \( -name 'q.*' -size -65c \) | head -n 5)
        [[ -z $left ]] || note "LEFTOVER: baton left entries in its state directory after N=$n round $round: ${left//$'\n'/ }"
    fi
    if [[ $tool == busy && -e $work/lockdir ]]; then
        note "LEFTOVER: busy-wait lock directory still present after N=$n round $round"
    fi
    if (( round > 0 )); then
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$n" "$round" "$wall" \
            "$(( wall / n ))" "$(( fails > 0 ))" >>"$RESULTS"
    fi
    say "$(printf '%-13s N=%-5s %-9s %8.1f ms total, %7.3f ms/job%s' \
        "$tool" "$n" "$( (( round )) && echo "round $round:" || echo "warm-up:")" \
        "$(( wall ))e-3" "$(( wall / n ))e-3" \
        "$( (( fails )) && echo ", $fails FAILED" || true)")"
    # baton-history: the file gained one well-formed "ok" record per job.
    if [[ $tool == baton-history && ! -e $work.hung ]]; then
        local why
        if ! why=$(python3 "$here/history.py" drain-check --file "$HIST_FILE" \
                --inode "$h_ino" --offset "$h_off" --expect "$n" 2>&1); then
            note "FAIL: baton-history N=$n round $round: the history did not gain $n well-formed \"ok\" records: ${why//$'\n'/ }"
            FAILED=1
        fi
    fi
    rm -rf "$work"
    [[ $KEEP == 1 ]] || rm -f "$log" "$work.status" "$work.hung"
}

# --- header ------------------------------------------------------------------
tools=(baton)
[[ $HISTORY == 1 ]] && tools+=(baton-history)
[[ -n $BEFORE ]] && tools+=(baton-before)
[[ $FRESH == 1 ]] && tools+=(baton-fresh)
[[ $GLIBC == 1 ]] && tools+=(baton-glibc)
tools+=(flock)
[[ $BUSY == 1 ]] && tools+=(busy)
[[ $BASELINE == 1 ]] && tools+=(none)
say "baton: $BATON"
say "scratch: $SCRATCH"
if [[ $DRAIN == 1 ]]; then
    say "sizes: $SIZES; rounds: $ROUNDS; tools: ${tools[*]}"
else
    say "drain: skipped (DRAIN=0)"
fi
[[ -z $HDIR ]] || say "history files: $HDIR ($HIST_FS)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')

# --- drain -------------------------------------------------------------------
if [[ $DRAIN == 1 ]]; then
    for n in $SIZES; do
        # One unrecorded warm-up per tool, so the first measured round does not
        # pay for cold page cache; at full size for baton in its kept directory,
        # which then holds the spare job files a drain of N leaves, as a real
        # state directory would after its first burst.
        for tool in "${tools[@]}"; do
            [[ $tool == busy ]] && (( n > BUSY_MAX )) && continue
            w=$(( n < 50 ? n : 50 ))
            [[ $tool == baton || $tool == baton-history || $tool == baton-glibc || $tool == baton-before ]] && w=$n
            drain "$tool" "$w" 0
        done
        for (( r = 1; r <= ROUNDS; r++ )); do
            for tool in "${tools[@]}"; do
                if [[ $tool == busy ]] && (( n > BUSY_MAX )); then
                    (( r == 1 )) && say "busy   N=$n skipped: polling every 0.5 s would take far too long (BUSY_MAX=$BUSY_MAX)"
                    continue
                fi
                sleep "$PAUSE"
                drain "$tool" "$n" "$r"
            done
        done
    done
fi

# --- uncontended ---------------------------------------------------------------
# History off (BATON_HISTORY=) for every command of the comparison; with
# HISTORY=1, baton-history (history on, its own file on disk) right after
# it in each round, in a hyperfine run of its own (hyperfine -N gives all
# the commands of one run the same environment).
UNC_JSON=()
UNC_MODE=none
if [[ $UNCONTENDED == 1 ]]; then
    udir=$(mktemp -d "$SCRATCH/uncontended.XXXXXX")
    ulock=$udir/lockfile
    ustate=$udir/state
    uhist=
    [[ $HISTORY == 1 ]] && uhist=$HDIR/uncontended/history
    if have_hyperfine; then
        UNC_MODE=hyperfine
        for (( r = 1; r <= UNC_ROUNDS; r++ )); do
            say "uncontended round $r/$UNC_ROUNDS (hyperfine -N, $HF_WARMUP warmup, $HF_RUNS runs each)"
            BATON_DIR=$ustate BATON_HISTORY= hyperfine -N --style basic \
                --warmup "$HF_WARMUP" --runs "$HF_RUNS" \
                --export-json "$SCRATCH/uncontended-$r.json" \
                -n true "true" \
                -n flock "$(q "$FLOCK") $(q "$ulock") true" \
                -n timeout "timeout 60 true" \
                -n baton "$(q "$BATON") run -l x -- true" \
                ${BATON_GLIBC:+-n baton-glibc "$(q "$BATON_GLIBC") run -l x -- true"} \
                ${BEFORE:+-n baton-before "$(q "$BEFORE") run -l x -- true"} >&2
            UNC_JSON+=("$SCRATCH/uncontended-$r.json")
            if [[ -n $uhist ]]; then
                BATON_DIR=$ustate BATON_HISTORY=$uhist hyperfine -N --style basic \
                    --warmup "$HF_WARMUP" --runs "$HF_RUNS" \
                    --export-json "$SCRATCH/uncontended-history-$r.json" \
                    -n baton-history "$(q "$BATON") run -l x -- true" >&2
                UNC_JSON+=("$SCRATCH/uncontended-history-$r.json")
            fi
        done
        unc_records=$(( UNC_ROUNDS * (HF_WARMUP + HF_RUNS) ))
    else
        UNC_MODE=python
        say "hyperfine not available: timing with python3 (bench/uncontended.py) instead"
        BATON_DIR=$ustate BATON_HISTORY= python3 "$here/uncontended.py" \
            --rounds "$UNC_ROUNDS" --runs "$HF_RUNS" --warmup "$HF_WARMUP" \
            --json "$SCRATCH/uncontended-py.json" \
            true="true" \
            flock="$FLOCK $ulock true" \
            timeout="timeout 60 true" \
            baton="$BATON run -l x -- true" \
            ${BATON_GLIBC:+baton-glibc="$BATON_GLIBC run -l x -- true"} \
            ${BEFORE:+baton-before="$BEFORE run -l x -- true"} >&2
        UNC_JSON+=("$SCRATCH/uncontended-py.json")
        if [[ -n $uhist ]]; then
            BATON_DIR=$ustate BATON_HISTORY=$uhist python3 "$here/uncontended.py" \
                --rounds "$UNC_ROUNDS" --runs "$HF_RUNS" --warmup "$HF_WARMUP" \
                --json "$SCRATCH/uncontended-history-py.json" \
                baton-history="$BATON run -l x -- true" >&2
            UNC_JSON+=("$SCRATCH/uncontended-history-py.json")
        fi
        unc_records=$(( HF_WARMUP + UNC_ROUNDS * HF_RUNS ))
    fi
    if [[ -n $uhist ]] && ! why=$(python3 "$here/history.py" drain-check --file "$uhist" \
            --expect "$unc_records" 2>&1); then
        note "FAIL: baton-history uncontended: the history did not gain $unc_records well-formed \"ok\" records: ${why//$'\n'/ }"
        FAILED=1
    fi
    left=$( [[ -d $ustate ]] && cd "$ustate" && find . -mindepth 1 ! -name lock ! -name 's.[0-9]*' ! \( -name 'q.*' -size -65c \) | head -n 5 || true)
    [[ -z $left ]] || note "LEFTOVER: baton left entries in its state directory after the uncontended runs: ${left//$'\n'/ }"
fi

# --- reading the history ------------------------------------------------------------
# A full history (history.1 of 8 MiB as a rotation leaves it, history just
# under 8 MiB) of generated records, in the format of the lines the binary
# itself writes here first (history.py refuses to go on if they differ).
# Each command's output is checked once, then hyperfine times them all.
HR_JSON=
HR_GEN=$SCRATCH/histread-gen.json      # the generator's summary
HR_CHECKS=$SCRATCH/histread-checks.tsv # name, the check's result (JSON)
HR_MODE=none
: >"$HR_CHECKS"
: >"$HR_GEN"
if [[ $HISTREAD == 1 ]]; then
    hr=$HDIR/read
    mkdir -p "$hr/gen"
    for i in 1 2 3; do
        BATON_DIR=$hr/state BATON_HISTORY=$hr/real "$BATON" run -q -l x -- true ||
            die "baton run (for a real history line) failed"
    done
    say "history: generating a full 16 MiB history in $hr/gen"
    if ! python3 "$here/history.py" generate --dir "$hr/gen" --now-ms "$(now_ms)" \
            --template "$hr/real" >"$HR_GEN"; then
        note "FAIL: history: could not generate a history in baton's format (see above)"
        FAILED=1
        : >"$HR_GEN"
    else
        hfile=$hr/gen/history
        hname=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["name"])' <"$HR_GEN")
        # Each command: its line (for hyperfine -N), how its output is checked.
        hr_names=(since limit limit-json limit-name full-scan tail)
        declare -A hr_cmd=(
            [since]="$(q "$BATON") history --since 10m"
            [limit]="$(q "$BATON") history --limit 50"
            [limit-json]="$(q "$BATON") history --limit 50 --json"
            [limit-name]="$(q "$BATON") history --limit 50 $(q "$hname")"
            [full-scan]="$(q "$BATON") history --limit 50 no-such-job"
            [tail]="tail -n 50 $(q "$hfile")"
        )
        declare -A hr_check=(
            [since]="--kind since"
            [limit]="--kind table"
            [limit-json]="--kind json"
            [limit-name]="--kind table --name $hname"
            [full-scan]="--kind table --name no-such-job"
            [tail]="--kind tail"
        )
        export BATON_HISTORY=$hfile
        hr_ran=()   # the commands that exited 0: only those are timed
        for name in "${hr_names[@]}"; do
            out=$hr/out-$name
            eval "argv=(${hr_cmd[$name]})"
            t0=$(now_ms)
            if ! "${argv[@]}" >"$out" 2>"$out.err"; then
                note "FAIL: history: \`${hr_cmd[$name]}\` exited non-zero: $(head -c 300 "$out.err")"
                FAILED=1
                continue
            fi
            t1=$(now_ms)
            hr_ran+=("$name")
            [[ -s $out.err ]] && note "ODD OUTPUT: history: \`${hr_cmd[$name]}\` wrote on stderr: $(head -c 300 "$out.err")"
            # shellcheck disable=SC2086  # the check's arguments are words
            if res=$(python3 "$here/history.py" read-check --dir "$hr/gen" --output "$out" \
                    ${hr_check[$name]} --window "$t0" "$t1"); then
                say "history: $name output checked: $res"
            else
                note "FAIL: history: \`${hr_cmd[$name]}\` printed a wrong result: $res"
                FAILED=1
            fi
            printf '%s\t%s\n' "$name" "$res" >>"$HR_CHECKS"
        done
        hf_args=()
        for name in "${hr_ran[@]}"; do hf_args+=(-n "$name" "${hr_cmd[$name]}"); done
        if (( ${#hr_ran[@]} == 0 )); then
            :
        elif have_hyperfine; then
            HR_MODE=hyperfine
            say "history: hyperfine -N, $HISTREAD_WARMUP warmup, $HISTREAD_RUNS runs each"
            HR_JSON=$SCRATCH/histread.json
            hyperfine -N --style basic --warmup "$HISTREAD_WARMUP" --runs "$HISTREAD_RUNS" \
                --export-json "$HR_JSON" "${hf_args[@]}" >&2
        else
            HR_MODE=python
            say "hyperfine not available: timing the history with python3 (bench/uncontended.py)"
            HR_JSON=$SCRATCH/histread-py.json
            py_args=()
            for name in "${hr_ran[@]}"; do
                eval "argv=(${hr_cmd[$name]})"
                py_args+=("$name=$(printf '%q ' "${argv[@]}")")
            done
            python3 "$here/uncontended.py" --rounds 1 --runs "$HISTREAD_RUNS" \
                --warmup "$HISTREAD_WARMUP" --json "$HR_JSON" "${py_args[@]}" >/dev/null
        fi
        unset BATON_HISTORY
    fi
fi

# --- report ----------------------------------------------------------------------
if [[ $HISTORY == 1 ]]; then
    history_meta="off (BATON_HISTORY= empty) for every baton row but baton-history; baton-history: on, one file for the run on $HIST_FS under $HISTORY_TMP (removed at the end)"
else
    history_meta="off (BATON_HISTORY= empty) for every baton row (HISTORY=0: no baton-history row)"
fi
[[ $HISTREAD == 1 ]] && history_meta+="; the generated history read: on $HIST_FS under $HISTORY_TMP"
python3 "$here/report.py" \
    --drain "$RESULTS" --notes "$NOTES" --drain-ran "$DRAIN" \
    --sizes "$SIZES" --rounds "$ROUNDS" --busy "$BUSY" --busy-max "$BUSY_MAX" \
    --uncontended-mode "$UNC_MODE" \
    --histread-mode "$HR_MODE" ${HR_JSON:+--histread-json "$HR_JSON"} \
    --histread-gen "$HR_GEN" --histread-checks "$HR_CHECKS" \
    --histread-runs "$HISTREAD_RUNS" --histread-warmup "$HISTREAD_WARMUP" \
    --meta "history=$history_meta" \
    --meta "baton=$BATON (sha256 $BATON_SUM…, $BATON_KIND)" \
    ${BATON_GLIBC:+--meta "baton-glibc=$BATON_GLIBC ($(file -b "$BATON_GLIBC" | cut -d, -f1-2))"} \
    --meta "built from=$BUILT_FROM" \
    ${BEFORE:+--meta "baton-before=$BEFORE (sha256 $(sha256sum "$BEFORE" | cut -c1-12)…)"} \
    --meta "flock=$("$FLOCK" --version 2>&1 | head -n 1)" \
    --meta "uncontended timer=$( [[ $UNC_MODE == hyperfine ]] && hyperfine --version || echo "$UNC_MODE")" \
    --meta "machine=$(nproc) cores, $(uname -sr), load before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')" \
    --meta "date=$(date -u +%Y-%m-%dT%H:%MZ)" \
    "${UNC_JSON[@]}"

if (( FAILED )); then
    say "FAILED: at least one job failed, a drain hung, or a history check failed (see above)"
    exit 1
fi
