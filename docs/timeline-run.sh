#!/usr/bin/env bash
# docs/timeline-run.sh: redraw docs/timeline.svg and docs/timeline.png, the
# README's timeline picture, from a real run of examples/mbsync-like jobs.
#
# Usage: bash docs/timeline-run.sh [BATON]
#
#   BATON     the baton binary (default: the release build,
#             target/x86_64-unknown-linux-musl/release/baton, else `baton`
#             on $PATH)
#
# Environment (all optional):
#   DURATION  seconds during which jobs are started (default 95); the script
#             then waits for the jobs still queued or running (at most
#             DRAIN seconds, default 60), so a run takes about two minutes
#   SEED      seeds bash's $RANDOM (default 11): the same plan of jobs each
#             run (what baton then does with them varies a little)
#   CHROMIUM  the browser for the PNG (default /usr/bin/chromium); if it is
#             missing only the SVG is drawn
#
# What it replays (see examples/mbsync): in a fresh state directory
# ($BATON_DIR) and a fresh history ($BATON_HISTORY), both in a temporary
# directory removed at the end,
#   - the full sync, mbsync.service, started every 20 s as mbsync.timer
#     would (there every 5 min), a fake mbsync of 8-13 s:
#       baton run --preemptible --lock maildir --name mbsync.service -- ...
#     the first one hangs and is stopped by --timeout 3s;
#   - the quick sync, mbsync-quick.service, from an IMAP IDLE notifier
#     (goimapnotify.yaml): every 3-10 s a burst of 1-4 new-mail
#     notifications within 0.3 s, each one
#       baton run --coalesce --preempt --priority 10 --lock maildir \
#         --name mbsync-quick.service -- sh -c 'sleep 0.4'
#     one of them fails (exit 1, after 1.5 s);
#   - after each sync that succeeded, `mu index` on the mail database, as
#     ExecStartPost / onNewMailPost do:
#       baton run --coalesce --lock mu-db --name mu-index -- sleep 1
#     (--coalesce: a coalesced quick sync ends all its triggers at once,
#     and each asks for an index; one queued index serves them all);
#   - a few bursts of overlapping searches from the mail client:
#       baton run --shared mu-db --name mu-find -- sleep 2
# Then `baton history --svg > docs/timeline.svg`, and a headless Chromium
# screenshot of it to docs/timeline.png, at the SVG's own width and height.
#
# Everything started here is stopped on exit (a trap), also on Ctrl-C.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

if [[ $# -gt 1 ]]; then
    echo "usage: bash docs/timeline-run.sh [BATON]" >&2
    exit 64
fi
if [[ $# -eq 1 ]]; then
    BATON=$1
elif [[ -x $root/target/x86_64-unknown-linux-musl/release/baton ]]; then
    BATON=$root/target/x86_64-unknown-linux-musl/release/baton
else
    BATON=baton
fi
BATON=$(command -v "$BATON") || { echo "timeline-run: no baton binary: $BATON" >&2; exit 69; }
[[ $BATON == /* ]] || BATON=$PWD/$BATON
if ! "$BATON" --help | grep -q '^ *history '; then
    echo "timeline-run: $BATON has no 'history' subcommand (an old build?)" >&2
    exit 69
fi

DURATION=${DURATION:-95}
DRAIN=${DRAIN:-60}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
RANDOM=${SEED:-11}

work=$(mktemp -d "${TMPDIR:-/tmp}/baton-timeline.XXXXXX")
export BATON_DIR=$work/state
export BATON_HISTORY=$work/history
log=$work/jobs.log
: >"$log"

# Each job below is started with `set -m` on, so it is a process group of
# its own: the trap stops it, its batons and their commands (a running baton
# passes SIGTERM on to its command's group, a waiting one leaves the queue).
# Job control is off otherwise, so Ctrl-C reaches this script at once.
cleanup() {
    local rc=$? pids
    trap - EXIT INT TERM
    pids=$(jobs -p)
    if [[ -n $pids ]]; then
        echo "timeline-run: stopping $(wc -w <<<"$pids") leftover job(s)" >&2
        for p in $pids; do kill -TERM -- "-$p" 2>/dev/null || true; done
        for _ in $(seq 50); do
            [[ -z $(jobs -pr) ]] && break
            sleep 0.1
        done
        for p in $(jobs -pr); do kill -KILL -- "-$p" 2>/dev/null || true; done
    fi
    rm -rf -- "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0=$(date +%s.%N)
# Seconds since the start, to one decimal.
now() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
# Sleep until DUR seconds after the start.
sleep_until() {
    local d
    d=$(awk -v a="$t0" -v b="$(date +%s.%N)" -v t="$1" 'BEGIN { d = t - (b - a); printf "%.2f", (d > 0 ? d : 0) }')
    sleep "$d"
}
note() { echo "$(now)s $*" >>"$log"; }

# `mu index` after a sync, on the mail database (ExecStartPost). Every
# trigger of a coalesced quick sync asks for one; --coalesce folds those
# that find one already queued into it (one queued index covers them all).
mu_index() {
    "$BATON" run --quiet --coalesce --lock mu-db --name mu-index -- sleep 1 || note "mu-index exit $?"
}

# The full sync (mbsync.service); $1 the fake sync's seconds, $2... more
# options of baton's (--timeout).
full_sync() {
    local secs=$1 rc=0
    shift
    "$BATON" run --quiet --preemptible --lock maildir --name mbsync.service "$@" \
        -- sh -c 'sleep "$1"' mbsync "$secs" || rc=$?
    note "mbsync.service ($secs s $*) exit $rc"
    if [[ $rc -eq 0 ]]; then mu_index; fi
}

# One new-mail notification (mbsync-quick.service); $1 the quick sync's exit
# (a failing one takes longer: a connection that times out).
quick_sync() {
    local code=${1:-0} secs=0.4 rc=0
    [[ $code -eq 0 ]] || secs=1.5
    "$BATON" run --quiet --coalesce --preempt --priority 10 --lock maildir \
        --name mbsync-quick.service -- sh -c 'sleep "$1"; exit "$2"' mbsync "$secs" "$code" || rc=$?
    note "mbsync-quick.service exit $rc"
    if [[ $rc -eq 0 ]]; then mu_index; fi
}

# A search from the mail client.
mu_find() {
    "$BATON" run --quiet --shared mu-db --name mu-find -- sleep 2 || note "mu-find exit $?"
}

echo "timeline-run: $BATON, $DURATION s of jobs, then at most $DRAIN s for the last ones" >&2

# The events, in time order: every line "SECONDS WHAT [ARG]". The timer's
# full syncs, the notifier's bursts, the searches.
events=$work/events
{
    for ((t = 0; t < DURATION - 10; t += 20)); do
        secs=$((8 + RANDOM % 6))
        if ((t == 0)); then
            echo "$t full $secs --timeout 3s"
        else
            echo "$t full $secs"
        fi
    done
    # The notifier: its first burst after the first full sync has timed
    # out (so that one is not preempted first); the burst after 50 s is one
    # notification whose sync fails.
    t=5
    failed=
    while ((t < DURATION - 2)); do
        if [[ -z $failed ]] && ((t >= 50)); then
            echo "$t quick 1"
            failed=1
        else
            n=$((1 + RANDOM % 4))
            for ((i = 0; i < n; i++)); do
                echo "$t.$i quick 0"
            done
        fi
        t=$((t + 3 + RANDOM % 8))
    done
    # Searches: two or three at a time, 0.7 s apart.
    for t in 13 34 71; do
        n=$((2 + RANDOM % 2))
        for ((i = 0; i < n; i++)); do
            tenths=$((t * 10 + i * 7))
            echo "$((tenths / 10)).$((tenths % 10)) find"
        done
    done
} | sort -n -k1,1 >"$events"

while read -r at what arg rest; do
    sleep_until "$at"
    set -m
    case $what in
        full) full_sync "$arg" $rest </dev/null & ;;
        quick) quick_sync "$arg" </dev/null & ;;
        find) mu_find </dev/null & ;;
    esac
    set +m
done <"$events"

# Wait for the jobs still queued or running, at most DRAIN seconds.
deadline=$((SECONDS + DRAIN))
while [[ -n $(jobs -pr) ]] && ((SECONDS < deadline)); do
    sleep 0.5
done
if [[ -n $(jobs -pr) ]]; then
    echo "timeline-run: jobs still running after $DRAIN s; they are stopped" >&2
    "$BATON" status >&2 || true
fi
echo "timeline-run: the jobs took $(now) s" >&2

# The picture.
svg=$here/timeline.svg
png=$here/timeline.png
"$BATON" history --svg >"$work/timeline.svg"
mv -- "$work/timeline.svg" "$svg"
"$BATON" history >&2
read -r width height < <(sed -n 's/^<svg [^>]*width="\([0-9]*\)" height="\([0-9]*\)".*/\1 \2/p' "$svg" | head -n 1)
if [[ -z ${width:-} || -z ${height:-} ]]; then
    echo "timeline-run: no width and height in $svg" >&2
    exit 70
fi

if [[ ! -x $CHROMIUM ]]; then
    echo "timeline-run: $CHROMIUM is missing: $svg drawn, $png left as it was" >&2
    exit 0
fi
# The file:// URL, percent-encoded (a space or # in the path).
url=file://
path=$svg
for ((i = 0; i < ${#path}; i++)); do
    c=${path:i:1}
    case $c in
        [A-Za-z0-9/._~-]) url+=$c ;;
        *) url+=$(printf '%%%02X' "'$c") ;;
    esac
done
timeout 60 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic \
    --no-first-run --disable-background-networking --disable-component-update \
    --disable-sync --user-data-dir="$work/chromium" --hide-scrollbars \
    --force-device-scale-factor=1 --window-size="$width,$height" \
    --screenshot="$work/timeline.png" "$url" </dev/null >"$work/chromium.log" 2>&1 || {
    echo "timeline-run: chromium failed:" >&2
    cat "$work/chromium.log" >&2
    exit 70
}
mv -- "$work/timeline.png" "$png"
echo "timeline-run: wrote $svg and $png (${width}x$height)" >&2
