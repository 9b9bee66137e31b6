#!/usr/bin/python3
"""An IMAP IDLE notifier, as goimapnotify is for the example: it logs in,
selects INBOX, IDLEs (raw, over a socket: imaplib has no IDLE), and on each
`* N EXISTS` that grows the mailbox runs COMMAND with `sh -c` without
waiting for it (a new notification while a sync runs starts another), as
goimapnotify's onNewMail. Logs each new count, each trigger and each
command's exit.

Usage: notifier.py PORT USER PASS LOG READY COMMAND_FILE
(COMMAND_FILE holds the command line, e.g. the example's onNewMail.)
"""
import re
import socket
import subprocess
import sys
import threading
import time

port, user, password, logpath, ready, cmdfile = int(sys.argv[1]), *sys.argv[2:7]
command = open(cmdfile).read().strip()
log = open(logpath, "a", buffering=1)
lock = threading.Lock()


def note(line):
    with lock:
        log.write(f"{time.time():.6f} {line}\n")


sock = socket.create_connection(("127.0.0.1", port))
f = sock.makefile("rb")


def send(line):
    sock.sendall(line.encode() + b"\r\n")


def until(tag):
    lines = []
    while True:
        line = f.readline().decode(errors="replace").rstrip("\r\n")
        if not line:
            raise SystemExit("notifier: connection closed")
        lines.append(line)
        if line.startswith(tag + " "):
            if not line.startswith(tag + " OK"):
                raise SystemExit(f"notifier: {line}")
            return lines


until("*")  # the greeting
send(f"a1 LOGIN {user} {password}")
until("a1")
send("a2 SELECT INBOX")
exists = 0
for line in until("a2"):
    m = re.match(r"\* (\d+) EXISTS", line)
    if m:
        exists = int(m.group(1))


def run(n):
    t0 = time.time()
    p = subprocess.Popen(["sh", "-c", command], stdin=subprocess.DEVNULL)
    rc = p.wait()
    note(f"exit {n} {rc} {time.time() - t0:.3f}")


send("a3 IDLE")
line = f.readline().decode()
if not line.startswith("+"):
    raise SystemExit(f"notifier: no IDLE: {line!r}")
note(f"idle {exists}")
open(ready, "w").close()
n = 0
while True:
    line = f.readline().decode(errors="replace")
    if not line:
        break
    m = re.match(r"\* (\d+) EXISTS", line)
    if m and int(m.group(1)) > exists:
        exists = int(m.group(1))
        n += 1
        # The trigger is logged before the count, so that whoever has seen
        # the count waits for this command's exit too.
        note(f"trigger {n}")
        note(f"exists {exists}")
        threading.Thread(target=run, args=(n,)).start()
