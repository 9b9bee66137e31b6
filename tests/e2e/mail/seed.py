#!/usr/bin/python3
"""Writes a server Maildir++ directly (much faster than APPENDing): INBOX
plus yearly archive folders, each message with a unique Message-ID, all
marked seen. Prints the Message-IDs, one a line, to MSGIDS.

Usage: seed.py MAILDIR MSGIDS INBOX_COUNT ARCHIVE_COUNT YEARS...
"""
import os
import random
import sys
import time

maildir, out, n_inbox, n_arch, years = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
rng = random.Random(15)
words = "mail sync queue lock inbox archive folder server client message thread reply notice".split()
folders = [("INBOX", "", n_inbox)] + [(f"Archive-{y}", f".Archive-{y}", n_arch) for y in years]
now = int(time.time())
ids = []
for name, sub, count in folders:
    base = os.path.join(maildir, sub)
    for d in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(base, d), exist_ok=True)
    for i in range(count):
        msgid = f"<seed-{name}-{i}@e2e.baton>"
        ids.append(msgid)
        body = "\r\n".join(" ".join(rng.choices(words, k=12)) for _ in range(rng.randint(3, 30)))
        msg = (
            f"From: sender{i % 17}@example.org\r\nTo: test@example.org\r\n"
            f"Subject: {name} message {i}\r\nMessage-ID: {msgid}\r\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(now - 86400 * (count - i)))}\r\n"
            f"\r\n{body}\r\n"
        ).encode()
        fn = f"{now - (count - i)}.M{i}P{os.getpid()}.e2e,S={len(msg)}:2,S"
        with open(os.path.join(base, "cur", fn), "wb") as f:
            f.write(msg)
with open(os.path.join(maildir, "subscriptions"), "w") as f:
    f.write("".join(name + "\n" for name, _, _ in folders[1:]))
with open(out, "w") as f:
    f.write("".join(i + "\n" for i in ids))
print(f"seed: {len(ids)} messages in {len(folders)} folders")
