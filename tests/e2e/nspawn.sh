# shellcheck shell=bash
# The container of the end-to-end tests, sourced by systemd.sh and mail.sh
# (which define fail and say first): an overlay of this machine's own root,
# booted by systemd-nspawn into e2e.target (which the caller writes).
#
#   ct_setup PREFIX    a work directory /var/tmp/PREFIX.XXXXXX ($W), the
#                      overlay at $ROOT with a machine id of its own, and an
#                      EXIT trap that stops the container and removes both
#   ct_boot [ARG...]   boot it (extra systemd-nspawn arguments: ARG...) and
#                      wait until systemd reports running or degraded
#                      ($state); then in_ct CMD... runs CMD inside, state_of
#                      UNIT prints its ActiveState, idle UNIT... is true when
#                      each is inactive or failed

NSPAWN_PID=
ct_cleanup() {
    if [[ -n $NSPAWN_PID ]]; then
        kill "$NSPAWN_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NSPAWN_PID" 2>/dev/null || true
        wait "$NSPAWN_PID" 2>/dev/null || true
    fi
    umount "$ROOT" 2>/dev/null || umount -l "$ROOT" 2>/dev/null || true
    rm -rf "$W"
}

ct_setup() {
    W=$(mktemp -d "/var/tmp/$1.XXXXXX")
    ROOT=$W/root
    trap ct_cleanup EXIT
    mkdir -p "$W"/{upper,work,root}
    mount -t overlay overlay -o "lowerdir=/,upperdir=$W/upper,workdir=$W/work" "$ROOT" || fail "cannot mount an overlay of /"
    rm -f "$ROOT/etc/machine-id"
    systemd-machine-id-setup --root="$ROOT" >/dev/null
}

in_ct() { nsenter -t "$PID1" -a "$@"; }
# (`systemctl is-active` is false for an activating oneshot: ask for the state.)
state_of() { in_ct systemctl show -p ActiveState --value "$1"; }
idle() { for u in "$@"; do [[ $(state_of "$u") == inactive || $(state_of "$u") == failed ]] || return 1; done; }

ct_boot() {
    systemd-nspawn -q -D "$ROOT" --register=no --keep-unit "$@" --boot systemd.unit=e2e.target \
        >"$W/console.log" 2>&1 </dev/null &
    NSPAWN_PID=$!
    PID1=
    for _ in $(seq 300); do
        PID1=$(pgrep -P "$NSPAWN_PID" -x systemd || true)
        [[ -n $PID1 ]] && break
        kill -0 "$NSPAWN_PID" 2>/dev/null || { cat "$W/console.log" >&2; fail "systemd-nspawn exited"; }
        sleep 0.1
    done
    [[ -n $PID1 ]] || fail "no systemd in the container"
    state=
    for _ in $(seq 300); do
        state=$(in_ct systemctl is-system-running 2>/dev/null || true)
        [[ $state == running || $state == degraded ]] && break
        sleep 0.1
    done
    [[ $state == running || $state == degraded ]] || fail "container did not boot ($state)"
}
