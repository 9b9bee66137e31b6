#!/usr/bin/env bash
# The mail e2e (tests/e2e/mail.sh: real mbsync against a real dovecot
# behind a delay, under a real systemd) once in each mode, and a Markdown
# table of its figures in bench/mail/last-run.md (also on stdout).
#
#   examples  examples/mbsync as shipped: baton --lock, quick sync
#             --priority 10, the notifier through --coalesce
#   preempt   with examples/mbsync/preempt/: --preemptible full sync,
#             --preempt quick sync and notifier
#   lock      as examples, the notifier without --coalesce
#   flock     flock(1) on one lock file instead of baton
#   none      no protection
#
# Usage: sudo bash bench/mail.sh   (root; as tests/e2e/mail.sh needs)
# Knobs: E2E_SECONDS=90 (injection time per mode), MODES="examples preempt
# lock flock none", BATON_BIN=path (else cargo build --release --target
# x86_64-unknown-linux-musl), E2E_DELAY_MS, E2E_SEED_INBOX, E2E_SEED_ARCHIVE
# (as in tests/e2e/mail.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export E2E_SECONDS=${E2E_SECONDS:-90}
MODES=${MODES:-examples preempt lock flock none}
TARGET=x86_64-unknown-linux-musl
if [[ -z ${BATON_BIN:-} ]]; then
    cargo build --release --locked --target "$TARGET" >&2
    BATON_BIN=target/$TARGET/release/baton
fi
OUT=bench/mail/last-run.md
ROWS=$(mktemp)
LOGS=$(mktemp -d)
trap 'rm -rf "$ROWS" "$LOGS"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A result took
for m in $MODES; do
    echo "bench/mail: mode $m (${E2E_SECONDS}s of mail)" >&2
    t0=$(date +%s)
    if E2E_ROW=$ROWS bash tests/e2e/mail.sh "$BATON_BIN" "$m" >"$LOGS/$m" 2>&1; then result[$m]=pass; else result[$m]=FAIL; fi
    took[$m]=$(( $(date +%s) - t0 ))
    grep '^mail-e2e: \(figures\|FAIL\|expected\|[0-9]* injected\|initial\|a quiet\)' "$LOGS/$m" >&2 || true
    grep -q "^| $m |" "$ROWS" || echo "| $m | (no figures: $(grep -m1 'FAIL' "$LOGS/$m" | sed 's/^mail-e2e: FAIL: //' | tr '|' '/')) |" >> "$ROWS"
done
{
    echo "# mail e2e: mbsync + dovecot under systemd, each mode once"
    echo
    echo "Command:"
    echo
    echo '```'
    echo "bash bench/mail.sh   # E2E_SECONDS=$E2E_SECONDS MODES=\"$MODES\""
    echo '```'
    echo
    echo "- **baton**: $BATON_BIN (sha256 $(sha256sum "$BATON_BIN" | cut -c1-12)…), built from $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' + local changes')"
    echo "- **mbsync**: $(/usr/bin/mbsync --version 2>&1 | head -1); **dovecot**: $(/usr/sbin/dovecot --version 2>&1 | head -1); $(systemd --version | head -1)"
    echo "- **setup**: $(grep -h '^mail-e2e: initial sync' "$LOGS"/* | head -1 | sed 's/^mail-e2e: //'); $(grep -h '^mail-e2e: a quiet full sync' "$LOGS"/* | head -1 | sed 's/^mail-e2e: //'); proxy delay ${E2E_DELAY_MS:-20} ms each way; timer every 3 s; injection ${E2E_SECONDS} s per mode at random intervals (0.2-3 s); then one final quiet sync"
    echo "- **machine**: $(nproc) cores, $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- **date**: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "| mode | full done/started | quick done/started | mbsync failures | syncs killed full/quick | overlapping runs | lost/dup | inbox latency p50/p95 ms | longest gap without a full sync s | injected | notifications |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    cat "$ROWS"
    echo
    echo "Test result per mode (the \`none\` mode only reports; the others fail on any mbsync failure, overlap, lost or duplicated message, failed unit, or a kill without preemption):"
    echo
    for m in $MODES; do echo "- $m: ${result[$m]} (${took[$m]} s)"; done
    echo
    echo "Figures: *done/started* counts mbsync runs (a preempted full sync is started again by baton); *failures* are mbsync runs that exited non-zero, with how often its stderr said \"is locked\"; *overlapping runs* started while another mbsync ran; *lost/dup* compares the local Maildir with every seeded and injected Message-ID after the final sync; *inbox latency* is from the injector's APPEND being acknowledged to the file appearing in the local INBOX (inotify); the *gap* is the longest stretch without a full sync completing, from the timer's start to the end of the injection. Quick syncs are the notifier's runs; the final syncs are not counted."
} > "$OUT"
cat "$OUT"
