#!/usr/bin/env bash
# The Debian package as a user gets it (CI, as root): build it with
# pkg/deb.sh, install it with dpkg, check that `man -w baton` finds the page,
# that `baton --version` runs from /usr/bin, that bash completion (with
# bash-completion loaded) completes `baton r` to `run`, that nothing was
# enabled or started, and remove it again. Prints "deb: N passed, 0 failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "deb: needs root (dpkg -i)" >&2; exit 1; }
passed=0
check() { echo "ok: $1"; passed=$((passed + 1)); }
fail() { echo "FAIL: $1" >&2; echo "deb: $passed passed, 1 failed"; exit 1; }

deb=$(bash pkg/deb.sh | tail -n 1)
[ -f "$deb" ] || fail "pkg/deb.sh made no package"
dpkg-deb -I "$deb" | grep -q "postinst\|prerm\|postrm\|preinst" && fail "the package has maintainer scripts"
check "built $deb, with no maintainer scripts"

trap 'dpkg -r baton >/dev/null 2>&1 || true' EXIT
dpkg -i "$deb" >/dev/null || fail "dpkg -i"
check "installed"
man -w baton | grep -q '/usr/share/man/man1/baton.1' || fail "man -w baton: $(man -w baton 2>&1)"
man -w baton-run >/dev/null || fail "man -w baton-run"
check "man -w baton finds $(man -w baton)"
/usr/bin/baton --version | grep -q '^baton ' || fail "baton --version"
check "$(/usr/bin/baton --version)"
completed=$(bash -c '
    source /usr/share/bash-completion/bash_completion
    source /usr/share/bash-completion/completions/baton
    COMP_WORDS=(baton r); COMP_CWORD=1; COMP_LINE="baton r"; COMP_POINT=${#COMP_LINE}
    _baton baton r baton
    echo "${COMPREPLY[*]}"')
[ "$completed" = run ] || fail "bash completion of 'baton r' gave '$completed'"
check "bash completes 'baton r' to 'run'"
for f in /usr/share/zsh/vendor-completions/_baton /usr/share/fish/vendor_completions.d/baton.fish \
    /usr/share/doc/baton/README.md /usr/share/doc/baton/examples/mbsync/mbsync.service; do
    [ -f "$f" ] || fail "missing $f"
done
check "zsh and fish completions, README and examples installed"
dpkg -r baton >/dev/null || fail "dpkg -r"
[ ! -e /usr/bin/baton ] || fail "/usr/bin/baton left after removal"
check "removed"
trap - EXIT
echo "deb: $passed passed, 0 failed"
