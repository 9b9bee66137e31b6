#!/usr/bin/python3
"""The mail e2e's checker: reads the wrapper's log (every mbsync run), the
notifier's, the injector's and the watcher's, scans the local and the
server Maildir, prints the figures and, with --strict, fails (exit 1, one
`mail-e2e: FAIL: ...` line) on any mbsync failure, overlap, lost or
duplicated message, failed unit, or a killed sync in a mode without
preemption (with preemption, mbsync's "lost track" warning after a killed
run is reported, not failed on). Without --strict (the unprotected mode)
it only reports.

--break drop-message|dup-message pretends one injected message is missing
or doubled in the local Maildir, to see the check fire.
"""
import argparse
import math
import os
import re
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--mode", required=True)
ap.add_argument("--strict", action="store_true")
ap.add_argument("--dir", required=True)
ap.add_argument("--local", required=True)
ap.add_argument("--server")
ap.add_argument("--unit-failures", type=int, default=0)
ap.add_argument("--failed-units", default="")
ap.add_argument("--row")
ap.add_argument("--break", dest="brk")
a = ap.parse_args()


def lines(name):
    path = os.path.join(a.dir, name)
    if not os.path.exists(path):
        return []
    with open(path, errors="replace") as f:
        return [line.split() for line in f if line.strip()]


# --- the runs ---------------------------------------------------------------
marks, runs, overlap_lines = {}, {}, 0
for w in lines("log"):
    if w[0] in ("timer", "stop", "final"):
        marks[w[0]] = float(w[1])
    elif w[0] == "start":
        runs[w[2]] = {"kind": w[1], "start": float(w[3]), "end": None, "rc": None, "killed": False}
    elif w[0] == "end":
        runs[w[2]].update(end=float(w[3]), rc=int(w[4]))
    elif w[0] == "killed":
        runs[w[2]].update(end=float(w[3]), killed=True)
    elif w[0] == "OVERLAP":
        overlap_lines += 1
for m in ("timer", "stop", "final"):
    if m not in marks:
        sys.exit(f"mail-e2e: FAIL: no '{m}' mark in the wrapper's log")
allruns = sorted(runs.values(), key=lambda r: r["start"])
unfinished = [r for r in allruns if r["end"] is None]
window = [r for r in allruns if r["start"] < marks["final"]]
final = [r for r in allruns if r["start"] >= marks["final"]]
FULL, QUICK = "fastmail-all", "fastmail-inbox"


def count(kind, pred, rs=window):
    return sum(1 for r in rs if r["kind"] == kind and pred(r))


ok = lambda r: r["rc"] == 0
full_started, quick_started = count(FULL, lambda r: True), count(QUICK, lambda r: True)
full_done, quick_done = count(FULL, ok), count(QUICK, ok)
killed_full, killed_quick = count(FULL, lambda r: r["killed"]), count(QUICK, lambda r: r["killed"])
failed = [r for r in allruns if r["rc"] not in (0, None)]
stderr = open(os.path.join(a.dir, "stderr"), errors="replace").read()
is_locked = len(re.findall(r"is locked", stderr))
lost_track = len(re.findall(r"lost track", stderr))
# Overlapping runs: each run that started while another was still running.
overlaps, ends = 0, []
for r in allruns:
    if any(e > r["start"] for e in ends):
        overlaps += 1
    ends.append(r["end"] if r["end"] is not None else math.inf)
# The longest gap without a full sync done, from the timer's start to the
# injection's stop.
done_at = sorted(r["end"] for r in window if r["kind"] == FULL and ok(r))
points = [marks["timer"]] + [t for t in done_at if t < marks["stop"]] + [marks["stop"]]
gap = max(b - a_ for a_, b in zip(points, points[1:]))

# --- the notifier -----------------------------------------------------------
note = lines("notify.log")
triggers = sum(1 for w in note if w[1] == "trigger")
notify_failed = [w for w in note if w[1] == "exit" and w[3] != "0"]

# --- the messages -----------------------------------------------------------
def scan(top):
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if os.path.basename(dirpath) not in ("cur", "new"):
            continue
        for fn in filenames:
            with open(os.path.join(dirpath, fn), "rb") as f:
                head = f.read(8192).replace(b"\r\n", b"\n").split(b"\n\n")[0]
            m = re.search(rb"(?im)^message-id:\s*(\S+)", head)
            key = m.group(1).decode() if m else f"(no Message-ID: {fn})"
            found[key] = found.get(key, 0) + 1
    return found


seeded = [w[0] for w in lines("seeded")]
injected = {w[1]: float(w[0]) for w in lines("injected")}
expected = set(seeded) | set(injected)
local = scan(a.local)
if a.brk == "drop-message" and injected:
    local.pop(next(iter(injected)), None)
elif a.brk == "dup-message" and injected:
    local[next(iter(injected))] += 1
elif a.brk:
    sys.exit(f"mail-e2e: FAIL: unknown --break {a.brk}")
lost = sorted(expected - set(local))
dup = sum(n - 1 for n in local.values() if n > 1)
unexpected = sorted(set(local) - expected)
server = scan(a.server) if a.server else {}
server_lost = sorted(expected - set(server)) if a.server else []
server_dup = sum(n - 1 for n in server.values() if n > 1)

arrived = {w[1]: float(w[0]) for w in lines("arrived")}
lat = sorted((arrived[m] - t) * 1000 for m, t in injected.items() if m in arrived)
unmeasured = sum(1 for m in injected if m not in arrived and m in local)


def pct(p):
    return lat[min(len(lat) - 1, max(0, math.ceil(p / 100 * len(lat)) - 1))] if lat else float("nan")


# --- report -------------------------------------------------------------------
fig = {
    "full done/started": f"{full_done}/{full_started}",
    "quick done/started": f"{quick_done}/{quick_started}",
    "mbsync failures": f"{len(failed)}" + (f' ({is_locked} "is locked")' if is_locked else "")
    + (f' ({lost_track} "lost track")' if lost_track else ""),
    "syncs killed full/quick": f"{killed_full}/{killed_quick}",
    "overlapping runs": f"{overlaps}",
    "lost/dup": f"{len(lost)}/{dup}",
    "inbox latency p50/p95 ms": f"{pct(50):.0f}/{pct(95):.0f}",
    "longest gap without a full sync s": f"{gap:.1f}",
}
extra = (f"{len(injected)} injected, {len(seeded)} seeded, {triggers} notifications, "
         f"{len(notify_failed)} notifier commands failed, {len(final)} final runs, "
         f"{a.unit_failures} unit runs failed")
print("mail-e2e: figures: " + "; ".join(f"{k} {v}" for k, v in fig.items()), file=sys.stderr)
print(f"mail-e2e: {extra}", file=sys.stderr)
if a.row:
    with open(a.row, "a") as f:
        f.write(f"| {a.mode} | " + " | ".join(fig.values()) + f" | {len(injected)} | {triggers} |\n")

problems = []
if lost:
    problems.append(f"{len(lost)} messages missing locally (e.g. {lost[0]})")
if dup:
    problems.append(f"{dup} duplicated messages locally")
if unexpected:
    problems.append(f"{len(unexpected)} unexpected messages locally (e.g. {unexpected[0]})")
if server_lost or server_dup:
    problems.append(f"server: {len(server_lost)} missing, {server_dup} duplicated")
if unfinished:
    problems.append(f"{len(unfinished)} mbsync runs never ended")
if not injected or full_done < 3 or quick_done < 3:
    problems.append(f"too little happened: {len(injected)} injected, {full_done} full and {quick_done} quick syncs done")
if unmeasured > len(injected) // 10:
    problems.append(f"the watcher missed {unmeasured} of {len(injected)} arrivals")
strict = []
if failed:
    r = failed[0]
    strict.append(f"{len(failed)} mbsync runs failed (first: {r['kind']} exit {r['rc']}; "
                  f"{is_locked} 'is locked', {lost_track} 'lost track')")
elif is_locked or (lost_track and a.mode != "preempt"):
    strict.append(f"mbsync said {is_locked} times 'is locked', {lost_track} times 'lost track'")
# A full sync killed while it pulled a message leaves the next run a
# journal entry it cannot match: it warns "lost track of 1 pulled
# message(s)" and pulls it again (what a preemption costs mbsync; the
# lost/dup check still holds).
if lost_track and a.mode == "preempt":
    print(f"mail-e2e: after preemptions mbsync warned {lost_track} times 'lost track' (a message pulled again)", file=sys.stderr)
if overlaps or overlap_lines:
    strict.append(f"{overlaps} overlapping mbsync runs ({overlap_lines} caught by the checker's flock)")
if notify_failed:
    strict.append(f"{len(notify_failed)} notifier commands failed (first exit {notify_failed[0][3]})")
if a.unit_failures or a.failed_units:
    strict.append(f"{a.unit_failures} unit runs failed {a.failed_units}".strip())
if a.mode != "preempt" and (killed_full or killed_quick):
    strict.append(f"syncs killed without preemption: {killed_full} full, {killed_quick} quick")
if a.strict:
    problems += strict
elif strict:
    print("mail-e2e: expected without protection: " + "; ".join(strict), file=sys.stderr)
if problems:
    print("mail-e2e: FAIL: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
