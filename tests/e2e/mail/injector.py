#!/usr/bin/python3
"""Appends uniquely identified messages to the server's INBOX (IMAP APPEND,
straight to dovecot, not through the delay) at random intervals for SECONDS,
and logs `TIME MESSAGE-ID` once each APPEND is acknowledged.

Usage: injector.py PORT USER PASS SECONDS LOG
"""
import imaplib
import random
import sys
import time

port, user, password, seconds, logpath = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
imap = imaplib.IMAP4("127.0.0.1", port)
imap.login(user, password)
rng = random.Random()
end = time.monotonic() + seconds
n = 0
with open(logpath, "a", buffering=1) as log:
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.2, 3.0))
        n += 1
        msgid = f"<inject-{n}-{time.time_ns()}@e2e.baton>"
        msg = (
            f"From: injector@example.org\r\nTo: test@example.org\r\nSubject: injected {n}\r\n"
            f"Message-ID: {msgid}\r\nDate: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
            f"\r\nmessage {n}\r\n"
        ).encode()
        typ, data = imap.append("INBOX", None, None, msg)
        if typ != "OK":
            raise SystemExit(f"injector: APPEND failed: {data}")
        log.write(f"{time.time():.6f} {msgid}\n")
imap.logout()
print(f"injector: {n} messages in {seconds:.0f}s")
