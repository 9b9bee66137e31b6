#!/usr/bin/python3
"""Watches the local INBOX (new/ and cur/) with inotify and logs
`TIME MESSAGE-ID` when a message file first appears there (mbsync writes
to tmp/ and renames). Creates READY once the watches are set.

Usage: watcher.py LOCAL_INBOX LOG READY
"""
import ctypes
import os
import struct
import sys
import time

inbox, logpath, ready = sys.argv[1:4]
libc = ctypes.CDLL("libc.so.6", use_errno=True)
IN_CLOSE_WRITE, IN_CREATE, IN_MOVED_TO = 0x8, 0x100, 0x80
fd = libc.inotify_init1(0)
if fd < 0:
    raise SystemExit("watcher: inotify_init1 failed")
dirs = {}
for d in ("new", "cur"):
    path = os.path.join(inbox, d)
    wd = libc.inotify_add_watch(fd, path.encode(), IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_TO)
    if wd < 0:
        raise SystemExit(f"watcher: cannot watch {path}")
    dirs[wd] = path
open(ready, "w").close()
seen = set()
log = open(logpath, "a", buffering=1)


def msgid_of(path):
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError:
        return None  # renamed again already: its next name is seen too
    for line in head.split(b"\r\n\r\n")[0].split(b"\n\n")[0].splitlines():
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode(errors="replace")
    return None


while True:
    buf = os.read(fd, 65536)
    t = time.time()
    i = 0
    while i < len(buf):
        wd, mask, cookie, length = struct.unpack_from("iIII", buf, i)
        name = buf[i + 16 : i + 16 + length].rstrip(b"\0").decode(errors="replace")
        i += 16 + length
        m = msgid_of(os.path.join(dirs[wd], name))
        if m and m not in seen:
            seen.add(m)
            log.write(f"{t:.6f} {m}\n")
