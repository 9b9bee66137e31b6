#!/usr/bin/env bash
# End-to-end test with the real thing: examples/mbsync's units running
# Debian's mbsync (isync 1.4) against a dovecot (2.3) IMAP server, under a
# real systemd booted with systemd-nspawn over an overlay of this machine's
# root, in a private network namespace.
#
# Inside: dovecot on loopback with one user and a seeded Maildir (INBOX and
# yearly archive folders); a proxy adding E2E_DELAY_MS (20) each way in
# front of it; mbsync's channels fastmail-inbox and fastmail-all through
# the proxy; the example's units as system units and its timer every 3 s;
# an IMAP IDLE notifier running the example's onNewMail command; an
# injector appending mail at random for E2E_SECONDS (60); then one final
# quiet sync. mbsync is wrapped so that every run is logged and any two
# runs at once are caught (tests/e2e/mail/mbsync-wrapper).
#
# Asserts (modes other than `none`, or any mode with E2E_STRICT=1): every
# mbsync run and every unit run succeeded, no "is locked"/"lost track" on
# mbsync's stderr, no two runs at once, every seeded and injected message
# in the local Maildir exactly once (by Message-ID), nothing stuck
# activating; and in the modes that ask for none, no sync was killed (with
# preemption, mbsync's "lost track" warning after a killed full sync is
# reported, not failed on: it pulls the message again).
# Reports the figures either way (one `mail-e2e: figures` line, and the
# table row in $E2E_ROW if set). Fails (exit 1) if it cannot run.
#
# Usage: sudo bash tests/e2e/mail.sh [path/to/baton] [MODE]
#   MODE: examples (default: examples/mbsync as shipped), preempt (with
#   examples/mbsync/preempt/), lock (the notifier without --coalesce),
#   flock (flock(1) instead of baton), none (no protection)
# Knobs: E2E_SECONDS=60 (injection), E2E_DELAY_MS=20 (each way),
#   E2E_SEED_INBOX=260 E2E_SEED_ARCHIVE=280 (messages in INBOX, in each of
#   the 10 archive folders), E2E_STRICT=1 (fail on failures/overlaps in mode
#   none too), E2E_BREAK=drop-message|dup-message (the checker pretends one
#   message lost or doubled: to see it fail), E2E_KEEP=DIR (on failure, keep
#   the logs and the container's journal there), E2E_DIAG=1 (on an overlap
#   the wrapper also logs who holds its checker file), E2E_ROW=FILE (append
#   the figures as a Markdown row: bench/mail.sh).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
EX=$HERE/../../examples/mbsync
BATON=$(readlink -f "${1:-$HERE/../../target/release/baton}")
MODE=${2:-examples}
DURATION=${E2E_SECONDS:-60}
DELAY_MS=${E2E_DELAY_MS:-20}
SEED_INBOX=${E2E_SEED_INBOX:-260}
SEED_ARCHIVE=${E2E_SEED_ARCHIVE:-280}
YEARS=(2015 2016 2017 2018 2019 2020 2021 2022 2023 2024)
fail() { echo "mail-e2e: FAIL: $*" >&2; exit 1; }
say() { echo "mail-e2e: $*" >&2; }

case $MODE in examples|preempt|lock|flock|none) ;; *) fail "unknown mode '$MODE' (examples, preempt, lock, flock, none)";; esac
[[ $(id -u) == 0 ]] || fail "needs root"
[[ -x $BATON ]] || fail "no baton binary at $BATON"
command -v systemd-nspawn >/dev/null || fail "systemd-nspawn missing (apt-get install systemd-container)"
[[ -x /usr/sbin/dovecot ]] || fail "dovecot missing (apt-get install dovecot-imapd)"
[[ -x /usr/bin/mbsync ]] || fail "mbsync missing (apt-get install isync)"
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || fail "no python3"
command -v flock >/dev/null || fail "flock missing (util-linux)"
STRICT=${E2E_STRICT:-}
[[ $MODE == none ]] || STRICT=1

T_START=$(date +%s)
# shellcheck source=tests/e2e/nspawn.sh
. "$(dirname "$0")/nspawn.sh"
ct_setup baton-mail-e2e

# --- what runs inside ---------------------------------------------------------
E=$ROOT/var/lib/e2e           # logs: the wrapper's, the notifier's, ...
LIB=/usr/local/lib/e2e-mail
install -m 0755 "$BATON" "$ROOT/usr/local/bin/baton"
mkdir -p "$E/err" "$ROOT$LIB" "$ROOT/etc/e2e-mail" "$ROOT/var/lib/e2e-mail/local"
: > "$E/log"; : > "$E/stderr"
[[ -n ${E2E_DIAG:-} ]] && touch "$E/diag"
install -m 0755 "$HERE"/mail/*.py "$ROOT$LIB/"
mv "$ROOT/usr/bin/mbsync" "$ROOT/usr/bin/mbsync.real"
install -m 0755 "$HERE/mail/mbsync-wrapper" "$ROOT/usr/bin/mbsync"
sed 's/^Port PORT/Port 10144/' "$HERE/mail/mbsyncrc" > "$ROOT/etc/e2e-mail/mbsyncrc"
sed 's/^Port PORT/Port 10143/' "$HERE/mail/mbsyncrc" > "$ROOT/etc/e2e-mail/mbsyncrc.direct"
chmod 0600 "$ROOT"/etc/e2e-mail/mbsyncrc*

# dovecot: the test's own instance; the package's units stay off.
cp "$HERE/mail/dovecot.conf" "$ROOT/etc/e2e-mail/dovecot.conf"
echo 'test:{PLAIN}test::::::' > "$ROOT/etc/e2e-mail/passwd"
useradd -R "$ROOT" -M -d /var/lib/e2e-mail/server -s /usr/sbin/nologin e2email
ln -sf /dev/null "$ROOT/etc/systemd/system/dovecot.service"
ln -sf /dev/null "$ROOT/etc/systemd/system/dovecot.socket"
$PY "$HERE/mail/seed.py" "$ROOT/var/lib/e2e-mail/server/Maildir" "$E/seeded" \
    "$SEED_INBOX" "$SEED_ARCHIVE" "${YEARS[@]}" >&2 || fail "cannot seed the server's Maildir"
chown -R "$(chroot "$ROOT" id -u e2email):$(chroot "$ROOT" id -g e2email)" "$ROOT/var/lib/e2e-mail/server"

svc() {  # svc NAME EXECSTART [AFTER]
    cat > "$ROOT/etc/systemd/system/$1.service" <<EOF
[Unit]
Description=mail e2e: $1
${3:+After=$3}

[Service]
ExecStart=$2
EOF
}
svc e2e-dovecot "/usr/sbin/dovecot -F -c /etc/e2e-mail/dovecot.conf"
svc e2e-proxy "$PY $LIB/proxy.py 10144 10143 $DELAY_MS"
svc e2e-watcher "$PY $LIB/watcher.py /var/lib/e2e-mail/local/INBOX /var/lib/e2e/arrived /var/lib/e2e/watcher.ready"
svc e2e-notifier "$PY $LIB/notifier.py 10144 test test /var/lib/e2e/notify.log /var/lib/e2e/notifier.ready /etc/e2e-mail/onNewMail" e2e-proxy.service

# The example's units as system units, for the mode; the mu4e index
# (ExecStartPost) is left out. The notifier's command is the example's
# onNewMail line.
U=$ROOT/etc/systemd/system
onnewmail=$(sed -n 's/^onNewMail: //p' "$EX/goimapnotify.yaml")
for u in mbsync.service mbsync-quick.service; do
    sed '/^ExecStartPost=/d' "$EX/$u" > "$U/$u"
done
case $MODE in
    preempt)
        cp -r "$EX"/preempt/*.service.d "$U/"
        onnewmail=$(sed -n 's/^onNewMail: //p' "$EX/preempt/goimapnotify.yaml") ;;
    lock)
        [[ $onnewmail == *" --coalesce "* ]] || fail "the example's onNewMail has no --coalesce: '$onnewmail'"
        onnewmail=${onnewmail/ --coalesce / } ;;
    flock|none)
        [[ $MODE == flock ]] && via="/usr/bin/flock /run/lock/maildir.lock " || via=
        sed -i -E "s#^ExecStart=baton run .* -- #ExecStart=$via#" "$U/mbsync.service" "$U/mbsync-quick.service"
        onnewmail="${via#/usr/bin/}mbsync fastmail-inbox" ;;
esac
[[ -n $onnewmail ]] || fail "no onNewMail line in the example"
echo "$onnewmail" > "$ROOT/etc/e2e-mail/onNewMail"
# The example's timer, every 3 s from its start.
sed -e '/graphical-session/d' -e '/^\[Install\]/d' -e 's/^OnBootSec=.*/OnActiveSec=1s/' \
    -e 's/^OnUnitActiveSec=.*/OnUnitActiveSec=3s\nAccuracySec=100ms/' "$EX/mbsync.timer" > "$U/mbsync.timer"
grep -q '^OnUnitActiveSec=3s' "$U/mbsync.timer" || fail "cannot adapt the example's timer"
cat > "$U/e2e.target" <<'EOF'
[Unit]
Description=baton mail e2e
Requires=basic.target
After=basic.target
AllowIsolate=yes
EOF
say "mode $MODE: full: $(sed -n 's/^ExecStart=//p' "$U/mbsync.service" "$U"/mbsync.service.d/*.conf 2>/dev/null | tail -1)"
say "mode $MODE: notifier: $onnewmail"

# --- boot ---------------------------------------------------------------------
say "booting systemd in a container"
ct_boot --private-network
in_ct ip link set lo up
port_open() { in_ct $PY -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null; }
wait_for() {  # wait_for TENTHS DESCRIPTION COMMAND...
    local n=$1 what=$2; shift 2
    for _ in $(seq "$n"); do "$@" && return 0; sleep 0.1; done
    fail "timed out waiting for $what"
}
in_ct systemctl start e2e-dovecot.service e2e-proxy.service
wait_for 100 "dovecot on 10143" port_open 10143
wait_for 100 "the delay proxy on 10144" port_open 10144
say "booted ($state); dovecot and a ${DELAY_MS} ms-each-way proxy on loopback"

# --- initial sync (straight to dovecot, not logged) ----------------------------
t0=$(date +%s%N)
in_ct /usr/bin/mbsync.real -q -c /etc/e2e-mail/mbsyncrc.direct -a || fail "the initial sync failed"
say "initial sync of $(wc -l < "$E/seeded") messages: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
t0=$(date +%s%N)
in_ct /usr/bin/mbsync.real -q -c /etc/e2e-mail/mbsyncrc fastmail-all || fail "a full sync through the proxy failed"
say "a quiet full sync through the proxy: $(( ($(date +%s%N) - t0) / 1000000 )) ms"

# --- the run --------------------------------------------------------------------
in_ct systemctl start e2e-watcher.service e2e-notifier.service
wait_for 100 "the watcher" test -e "$E/watcher.ready"
wait_for 100 "the notifier to IDLE" test -e "$E/notifier.ready"
echo "timer $(date +%s.%N)" >> "$E/log"
in_ct systemctl start mbsync.timer
say "injecting mail for ${DURATION}s"
in_ct $PY "$LIB/injector.py" 10143 test test "$DURATION" /var/lib/e2e/injected >&2 || fail "the injector failed"
echo "stop $(date +%s.%N)" >> "$E/log"
in_ct systemctl stop mbsync.timer
# The notifier has seen every message (the last ones' notification may
# still be on its way through the proxy).
inbox_total=$(( SEED_INBOX + $(wc -l < "$E/injected") ))
seen_all() { [[ $(awk '$2 == "exists" { n = $3 } END { print n + 0 }' "$E/notify.log") -ge $inbox_total ]]; }
wait_for 100 "the notifier to see all $inbox_total messages of INBOX" seen_all

# Drained: every notifier command has exited, the units are idle with no
# job queued, and no mbsync is running.
busy=
drained() {
    busy="notifier commands running"
    [[ $(grep -c ' exit ' "$E/notify.log") == $(grep -c ' trigger ' "$E/notify.log") ]] || return 1
    busy="units: mbsync.service $(state_of mbsync.service), mbsync-quick.service $(state_of mbsync-quick.service)"
    idle mbsync.service mbsync-quick.service || return 1
    busy="systemd jobs queued"
    [[ $(in_ct systemctl list-jobs --no-legend | wc -l) == 0 ]] || return 1
    busy="an mbsync still running"
    ! in_ct pgrep -x mbsync.real >/dev/null
}
stuck() {  # stuck WHEN
    in_ct systemctl list-jobs >&2 || true
    in_ct baton status >&2 || true
    in_ct ps -eo pid,ppid,etimes,args >&2 || true
    tail -n 5 "$E/log" >&2
    keep
    fail "$1 ($busy)"
}
keep() {
    [[ -n ${E2E_KEEP:-} ]] || return 0
    cp -r "$E" "$E2E_KEEP"
    in_ct journalctl -q -o short-precise > "$E2E_KEEP/journal" 2>&1 || true
    say "logs kept in $E2E_KEEP"
}
for _ in $(seq 600); do drained && break; sleep 0.1; done
drained || stuck "still busy 60 s after the injection stopped"
in_ct systemctl stop e2e-notifier.service

# --- the final quiet sync ----------------------------------------------------------
echo "final $(date +%s.%N)" >> "$E/log"
in_ct systemctl start mbsync-quick.service || true
in_ct systemctl start mbsync.service || true
for _ in $(seq 100); do drained && break; sleep 0.1; done
drained || stuck "still busy 10 s after the final sync"
if [[ $MODE != flock && $MODE != none ]]; then
    [[ $(in_ct baton status --json | grep -c '"id"') == 0 ]] || { in_ct baton status >&2; fail "baton still has jobs after the run"; }
fi
failed_units=
for u in mbsync.service mbsync-quick.service; do
    r=$(in_ct systemctl show -p Result --value $u)
    [[ $r == success ]] || failed_units+=" $u:$r"
done
unit_failures=$(in_ct journalctl -q -o cat -u mbsync.service -u mbsync-quick.service | grep -c 'Failed with result' || true)
in_ct systemctl stop e2e-watcher.service

# --- check and report ----------------------------------------------------------------
set +e
$PY "$HERE/mail/check.py" --mode "$MODE" ${STRICT:+--strict} --dir "$E" \
    --local "$ROOT/var/lib/e2e-mail/local" --server "$ROOT/var/lib/e2e-mail/server/Maildir" --unit-failures "$unit_failures" --failed-units "${failed_units# }" \
    ${E2E_ROW:+--row "$E2E_ROW"} ${E2E_BREAK:+--break "$E2E_BREAK"}
rc=$?
set -e
if (( rc != 0 )); then
    keep
    exit 1
fi
in_ct systemctl poweroff || true
for _ in $(seq 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
say "took $(( $(date +%s) - T_START )) s"
echo "mail-e2e: 1 passed, 0 failed"
