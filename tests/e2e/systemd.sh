#!/usr/bin/env bash
# End-to-end test under a real systemd: the seed's two mail syncs (and a
# third job at another priority) as units that run `baton`, in a container
# booted with systemd-nspawn over an overlay of this machine's own root.
#
# Asserts: no overlap; no sync killed; nothing stuck activating (no
# deadlock); `systemctl stop` of a waiting unit takes under 1 s; a container
# shutdown with a waiting unit is not delayed; `systemctl show` carries
# baton's STATUS= line; a quick sync is served before a queued
# lower-priority job. Fails (exit 1) if it cannot run.
#
# Usage: sudo bash tests/e2e/systemd.sh [path/to/baton]   (root, Linux, systemd-container)
set -euo pipefail

BATON=${1:-$(dirname "$0")/../../target/release/baton}
BATON=$(readlink -f "$BATON")
DURATION=${E2E_SECONDS:-60}
fail() { echo "e2e: FAIL: $*" >&2; exit 1; }
say() { echo "e2e: $*" >&2; }

[[ $(id -u) == 0 ]] || fail "needs root"
[[ -x $BATON ]] || fail "no baton binary at $BATON"
command -v systemd-nspawn >/dev/null || fail "systemd-nspawn missing (apt-get install systemd-container)"

# shellcheck source=tests/e2e/nspawn.sh
. "$(dirname "$0")/nspawn.sh"
ct_setup baton-e2e

# --- what runs inside ---------------------------------------------------------
install -m 0755 "$BATON" "$ROOT/usr/local/bin/baton"
mkdir -p "$ROOT/var/lib/e2e"
cat > "$ROOT/usr/local/bin/fake-mbsync" <<'EOF'
#!/bin/bash
# fake-mbsync KIND SECONDS: holds a non-blocking flock on a checker file for
# its whole run, so any overlap is caught; logs start and end.
kind=$1; secs=$2; log=/var/lib/e2e/log
exec 9>/var/lib/e2e/check
if ! flock -n 9; then echo "OVERLAP $kind" >> $log; exit 3; fi
echo "start $kind $(date +%s.%N)" >> $log
trap 'echo "killed $kind" >> $log; exit 143' TERM
sleep "$secs" & wait $!
echo "end $kind $(date +%s.%N)" >> $log
EOF
chmod 0755 "$ROOT/usr/local/bin/fake-mbsync"
unit() {  # unit NAME PRIORITY SECONDS
    cat > "$ROOT/etc/systemd/system/$1.service" <<EOF
[Unit]
Description=$1 through baton

[Service]
Type=oneshot
NotifyAccess=main
ExecStart=/usr/local/bin/baton run --lock maildir --priority $2 -- /usr/local/bin/fake-mbsync $1 $3
SuccessExitStatus=143
EOF
}
unit mbsync 0 1.5
unit mbsync-quick 10 0.2
unit other 5 0.5
cat > "$ROOT/etc/systemd/system/mbsync.timer" <<'EOF'
[Unit]
Description=full sync timer

[Timer]
OnActiveSec=1s
OnUnitActiveSec=2s
AccuracySec=100ms
Unit=mbsync.service
EOF
# A small boot target keeps the boot fast.
cat > "$ROOT/etc/systemd/system/e2e.target" <<'EOF'
[Unit]
Description=baton e2e
Requires=basic.target
After=basic.target
AllowIsolate=yes
EOF

# --- boot ---------------------------------------------------------------------
say "booting systemd in a container"
ct_boot
say "booted ($state)"

# --- 1. STATUS= and stop of a waiting unit ---------------------------------------
in_ct systemctl start --no-block other.service
for _ in $(seq 100); do grep -q "start other" "$ROOT/var/lib/e2e/log" 2>/dev/null && break; sleep 0.05; done
in_ct systemctl start --no-block mbsync-quick.service
status=
for _ in $(seq 100); do
    status=$(in_ct systemctl show -p StatusText --value mbsync-quick.service)
    [[ $status == "waiting for maildir: held by other.service"* ]] && break
    sleep 0.05
done
[[ $status == "waiting for maildir: held by other.service"* ]] || fail "no STATUS= line: '$status'"
say "STATUS= seen: $status"
t0=$(date +%s%N)
in_ct systemctl stop mbsync-quick.service
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
(( ms < 1000 )) || fail "stopping a waiting unit took $ms ms"
say "stop of a waiting unit: $ms ms"
idle mbsync-quick.service || fail "the stopped unit is $(state_of mbsync-quick.service)"
for _ in $(seq 200); do idle other.service && break; sleep 0.05; done

# --- 2. the quick sync goes ahead of a queued lower-priority job ----------------
: > "$ROOT/var/lib/e2e/log"
in_ct systemctl start --no-block mbsync.service
for _ in $(seq 100); do grep -q "start mbsync " "$ROOT/var/lib/e2e/log" && break; sleep 0.05; done
in_ct systemctl start --no-block other.service
for _ in $(seq 100); do [[ $(in_ct baton status --json maildir | grep -c '"id"') == 2 ]] && break; sleep 0.05; done
in_ct systemctl start --no-block mbsync-quick.service
for _ in $(seq 100); do [[ $(in_ct baton status --json maildir | grep -c '"id"') == 3 ]] && break; sleep 0.05; done
for _ in $(seq 200); do grep -q "end other" "$ROOT/var/lib/e2e/log" && break; sleep 0.05; done
order=$(grep '^start' "$ROOT/var/lib/e2e/log" | cut -d' ' -f2 | tr '\n' ' ')
[[ $order == "mbsync mbsync-quick other " ]] || { cat "$ROOT/var/lib/e2e/log" >&2; in_ct baton status >&2; in_ct systemctl status mbsync-quick.service other.service --no-pager >&2; fail "service order was: $order"; }
say "served in order: $order"

# --- 3. the timer plus random bursts of quick syncs -----------------------------
: > "$ROOT/var/lib/e2e/log"
in_ct systemctl start mbsync.timer
end=$(( $(date +%s) + DURATION ))
bursts=0
while (( $(date +%s) < end )); do
    for _ in $(seq $(( RANDOM % 4 + 1 ))); do in_ct systemctl start --no-block mbsync-quick.service; done
    (( RANDOM % 3 == 0 )) && in_ct systemctl start --no-block other.service
    bursts=$((bursts + 1))
    sleep "0.$(( RANDOM % 9 + 1 ))"
done
in_ct systemctl stop mbsync.timer
say "$bursts bursts over ${DURATION}s; waiting for the queue to drain"
drained=
for _ in $(seq 600); do
    if idle mbsync.service mbsync-quick.service other.service; then
        [[ $(in_ct systemctl list-jobs --no-legend | wc -l) == 0 ]] && { drained=1; break; }
    fi
    sleep 0.1
done
[[ -n $drained ]] || { in_ct systemctl list-jobs >&2; in_ct baton status >&2; fail "units stuck activating"; }
log=$ROOT/var/lib/e2e/log
grep -q OVERLAP "$log" && fail "overlap: $(grep OVERLAP "$log" | head -3)"
grep -q killed "$log" && fail "a sync was killed: $(grep killed "$log" | head -3)"
starts=$(grep -c '^start' "$log"); ends=$(grep -c '^end' "$log")
(( starts == ends && starts > 10 )) || fail "$starts starts, $ends ends"
for u in mbsync mbsync-quick other; do
    r=$(in_ct systemctl show -p Result --value $u.service)
    [[ $r == success ]] || fail "$u.service result: $r"
done
say "no overlap, no kill, no deadlock: $starts syncs ($(grep -c '^start mbsync ' "$log") full)"

# --- 4. shutdown with a waiting unit is not delayed -----------------------------
in_ct systemctl start --no-block mbsync.service
for _ in $(seq 100); do grep -q "start mbsync " <(tail -n 1 "$log") && break; sleep 0.05; done
in_ct systemctl start --no-block mbsync-quick.service
for _ in $(seq 100); do [[ $(in_ct systemctl show -p StatusText --value mbsync-quick.service) == waiting* ]] && break; sleep 0.05; done
t0=$(date +%s%N)
in_ct systemctl poweroff || true
wait "$NSPAWN_PID" || true
NSPAWN_PID=
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
(( ms < 5000 )) || fail "shutdown took $ms ms"
say "shutdown with a waiting unit: $ms ms"
echo "e2e: 6 passed, 0 failed"
