#!/usr/bin/env python3
"""History helpers for bench/run.sh (baton's history: one JSON line per ended
job, see src/history/mod.rs).

  history.py drain-check --file F --inode I --offset O --expect N
      After a drain of N jobs with history on: the history gained exactly N
      well-formed records (each line parses as JSON, `outcome` "ok", ids
      distinct). I and O are the file's inode and size before the drain (0
      and 0 if it did not exist); a rotation during the drain is followed
      (the old inode is then history.1). Silent and 0 if so; else the reason
      on stdout and 1.

  history.py generate --dir D --now-ms MS [--template REAL] [--seed S]
      Write a full history, D/history.1 (8 MiB, as a rotation leaves it) and
      D/history (just under 8 MiB), of realistic records in exactly the
      format baton writes: ~20 job names (NAME below in 5 % of the records),
      5 resources, every outcome, ends ~0.6 s apart (so ~1000 in the last 10
      minutes before MS). REAL: lines baton wrote itself; their keys, types
      and bytes (re-serialized) must match the generator's, or it stops (2).
      Prints a summary (JSON) on stdout.

  history.py read-check --dir D --kind KIND --output OUT [--limit 50]
                        [--name NAME] [--window T0 T1]
      Whether OUT is what `baton history` must print for the history in D:
      KIND json (--limit N --json: the N newest lines, byte for byte),
      table (--limit N [NAME]: the ids of the N newest records, of NAME),
      since (--since 10m run between T0 and T1 ms: the records that ended in
      the last 10 minutes), tail (tail -n N of D/history). Prints a one-line
      summary (JSON) on stdout; 1 if wrong.
"""

import argparse
import calendar
import json
import os
import random
import sys
import time

HALF = 8 << 20  # src/history/mod.rs: rotation of `history` to `history.1`

KEYS = ["id", "job", "resources", "priority", "user", "uid", "host", "pid",
        "command", "queued", "started", "ended", "waited", "ran", "exit",
        "outcome", "preemptions", "joined", "joined_run", "fence", "runs"]

# The job named in ~5 % of the records, for `baton history NAME`; no
# resource has this name.
NAME = "backup-db"

R = {  # resource -> its JSON object (the same mode every time, as in real use)
    "net": {"name": "net", "mode": "slots", "slots": 4},
    "db": {"name": "db", "mode": "exclusive"},
    "db:shared": {"name": "db", "mode": "shared"},
    "disk": {"name": "disk", "mode": "exclusive"},
    "disk:shared": {"name": "disk", "mode": "shared"},
    "cpu": {"name": "cpu", "mode": "slots", "slots": 2},
    "deploy": {"name": "deploy", "mode": "exclusive"},
}

# name, weight (%), command, resources, priority, user, uid, median run (s), kind
JOBS = [
    ("healthcheck", 18, ["/usr/local/bin/healthcheck", "--quiet"], ["net"], 0, "root", 0, 0.3, ""),
    ("warm-cache", 12, ["curl", "-fsS", "-o", "/dev/null", "http://localhost:8080/warm"], ["net"], 0, "deploy", 1001, 1.2, ""),
    ("ingest", 10, ["/opt/ingest/bin/ingest", "--batch", "/srv/spool/incoming"], ["db:shared", "disk"], 0, "ingest", 1003, 4.0, ""),
    ("ci-test", 9, ["cargo", "test", "--release", "--workspace"], ["cpu"], -1, "ci", 1002, 40.0, ""),
    ("fetch-feeds", 7, ["python3", "/srv/feeds/fetch.py", "--all"], ["net"], 0, "deploy", 1001, 2.0, ""),
    ("sync-mirror", 6, ["rsync", "-a", "--delete", "/srv/mirror/", "backup:/srv/mirror/"], ["net", "disk:shared"], 0, "root", 0, 15.0, ""),
    (NAME, 5, ["sh", "-c", "pg_dump -Fc app > /var/backups/app.dump"], ["db"], 5, "postgres", 114, 30.0, ""),
    ("render-thumbs", 5, ["/opt/media/bin/render", "--thumbs", "--since", "1h"], ["cpu"], -5, "media", 1004, 8.0, "preemptible"),
    ("s3-upload", 4, ["aws", "s3", "sync", "/var/backups", "s3://example-backups/vm"], ["net"], 0, "root", 0, 20.0, ""),
    ("rotate-logs", 4, ["logrotate", "/etc/logrotate.d/app"], ["disk"], 0, "root", 0, 0.2, ""),
    ("deploy-web", 3, ["/srv/deploy/deploy.sh", "web", "--canary"], ["deploy"], 10, "deploy", 1001, 25.0, ""),
    ("reindex", 3, ["/opt/search/bin/reindex", "--incremental"], ["db:shared", "cpu"], 0, "search", 1005, 12.0, "coalesce"),
    ("nightly-build", 3, ["make", "-C", "/srv/build", "release"], ["cpu", "disk:shared"], 0, "ci", 1002, 120.0, ""),
    ("compact-db", 2, ["sqlite3", "/srv/app/app.db", "VACUUM"], ["db"], 0, "app", 1006, 3.0, ""),
    ("apt-upgrade", 2, ["apt-get", "-y", "upgrade"], ["deploy"], 0, "root", 0, 50.0, ""),
    ("cert-renew", 2, ["certbot", "renew", "--quiet"], ["net"], 0, "root", 0, 4.0, ""),
    ("vacuum", 2, ["journalctl", "--vacuum-size=500M"], ["disk"], 0, "root", 0, 1.0, ""),
    ("report-daily", 1, ["python3", "/srv/reports/daily.py", "--mail"], ["db:shared"], 0, "app", 1006, 6.0, ""),
    ("gc-images", 1, ["docker", "image", "prune", "-af"], ["disk"], 0, "root", 0, 10.0, ""),
    ("email-digest", 1, ["/srv/app/bin/digest", "--send"], ["db:shared", "net"], 0, "app", 1006, 2.0, ""),
]

OUTCOMES = [("ok", 86.0), ("failed", 6.0), ("busy", 2.5), ("timeout", 1.0),
            ("signal", 1.0), ("cancelled", 1.0), ("stopped", 0.5), ("lost", 0.5)]


def dumps(obj):
    """As serde_json writes it: compact, UTF-8, shortest float round trip."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def stamp(ms):
    """humantime::format_rfc3339_millis: 2026-12-01T11:53:20.655Z"""
    s, m = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{m:03d}Z"


def unstamp(s):
    return calendar.timegm(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")) * 1000 + int(s[20:23])


def secs(ms):
    return ms / 1000.0  # src/history/mod.rs secs(): ms as f64 / 1000.0


def kind_of(v):
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list",
            dict: "dict", type(None): "null"}[type(v)]


# --- drain-check -----------------------------------------------------------------
def drain_check(a):
    chunks = []
    older = a.file + ".1"
    try:
        st = os.stat(a.file)
    except FileNotFoundError:
        st = None
    rotated = False
    if a.inode and (st is None or st.st_ino != a.inode):
        # Rotated during the drain: the old file is history.1 now.
        try:
            ost = os.stat(older)
        except FileNotFoundError:
            ost = None
        if ost is None or ost.st_ino != a.inode:
            print(f"the history file {a.file} was replaced during the drain and "
                  f"{older} is not the old one: cannot count")
            return 1
        with open(older, "rb") as f:
            f.seek(a.offset)
            chunks.append(f.read())
        rotated = True
    elif st is not None:
        if st.st_size < a.offset:
            print(f"the history file shrank during the drain ({a.offset} -> {st.st_size} bytes)")
            return 1
    if st is not None:
        with open(a.file, "rb") as f:
            if not rotated:
                f.seek(a.offset)
            chunks.append(f.read())
    data = b"".join(chunks)
    if data and not data.endswith(b"\n"):
        print("the history does not end with a newline (a torn record)")
        return 1
    lines = data.split(b"\n")[:-1] if data else []
    bad, not_ok, ids = 0, {}, set()
    for line in lines:
        try:
            r = json.loads(line)
            if not isinstance(r, dict):
                raise ValueError
        except ValueError:
            bad += 1
            continue
        if r.get("outcome") != "ok":
            not_ok[str(r.get("outcome"))] = not_ok.get(str(r.get("outcome")), 0) + 1
        ids.add(r.get("id"))
    problems = []
    if len(lines) != a.expect:
        problems.append(f"{len(lines)} new lines, not {a.expect}")
    if bad:
        problems.append(f"{bad} did not parse as JSON")
    if not_ok:
        problems.append("outcomes other than ok: " +
                        ", ".join(f"{k} x{v}" for k, v in sorted(not_ok.items())))
    if len(ids) != len(lines) - bad:
        problems.append(f"{len(lines) - bad - len(ids)} repeated ids")
    if problems:
        print("; ".join(problems) + (" (the file rotated during the drain)" if rotated else ""))
        return 1
    return 0


# --- generate ------------------------------------------------------------------------
def record_shape(r):
    return [(k, kind_of(v)) for k, v in r.items()]


def check_template(path, sample):
    """The real lines baton wrote: same keys in the same order, same types
    where both are non-null, and re-serialized byte for byte."""
    with open(path, "rb") as f:
        real = [l for l in f.read().split(b"\n") if l]
    if not real:
        return "no real record to compare with"
    for line in real:
        r = json.loads(line)
        if list(r) != KEYS:
            return f"baton's record keys are {list(r)}, the generator writes {KEYS}"
        if dumps(r).encode() != line:
            return f"re-serializing baton's own line changes it:\n  {line.decode()}\n  {dumps(r)}"
        for k in KEYS:
            a, b = kind_of(r[k]), kind_of(sample[k])
            if a != b and "null" not in (a, b) and {a, b} != {"int", "float"}:
                return f"field {k}: baton writes a {a}, the generator a {b}"
        for res in r["resources"]:
            if list(res)[:2] != ["name", "mode"]:
                return f"resource shape changed: {res}"
    return None


def generate(a):
    rnd = random.Random(a.seed)
    names = [j[0] for j in JOBS]
    weights = [j[1] for j in JOBS]
    by_name = {j[0]: j for j in JOBS}
    onames = [o for o, _ in OUTCOMES]
    oweights = [w for _, w in OUTCOMES]
    host = "build-01"
    # Enough records for 2.3 x HALF at the shortest line; the oldest are
    # dropped, as a rotation drops the previous history.1.
    count = int(2.3 * HALF / 420)
    recs = []
    t = 0
    pid = rnd.randrange(2000, 60000)
    for _ in range(count):
        t += max(1, int(rnd.expovariate(1.0 / a.gap_ms)))
        name = rnd.choices(names, weights)[0]
        _, _, command, res, prio, user, uid, median, kind = by_name[name]
        pid = (pid + rnd.randrange(1, 400)) % 4194304 or 2000
        ran = max(1, int(median * 1000 * rnd.lognormvariate(0, 0.8)))
        wait = int(rnd.expovariate(1 / 200.0)) if rnd.random() < 0.8 else int(rnd.expovariate(1 / 5000.0))
        tail = rnd.randrange(0, 3)    # the baton's own work after the command ended
        outcome = rnd.choices(onames, oweights)[0]
        joiners = 0
        if kind == "coalesce" and outcome == "ok" and rnd.random() < 0.4:
            joiners = rnd.randrange(1, 4)   # --coalesce triggers that joined it
        ended = t
        r = {"id": 0, "job": name, "resources": [R[x] for x in res], "priority": prio,
             "user": user, "uid": uid, "host": host, "pid": pid, "command": command,
             "queued": 0, "started": None, "ended": ended, "waited": 0.0, "ran": 0.0,
             "exit": 0, "outcome": outcome, "preemptions": 0, "joined": 0,
             "joined_run": None, "fence": None, "runs": []}
        runs = []
        granted = None   # the time of the last grant, for the fence
        if outcome in ("ok", "failed", "signal", "timeout"):
            if outcome == "timeout":
                ran = int(median * 3000)
            if outcome == "failed" and rnd.random() < 0.1:
                r["exit"] = 127       # could not be started: granted, no run
                granted = ended - tail - 1
            else:
                n = 1
                if kind == "preemptible" and rnd.random() < 0.15:
                    n = rnd.randrange(2, 4)
                    r["preemptions"] = n - 1
                pieces = [ran // n] * n
                pieces[-1] += ran - sum(pieces)
                e = ended - tail
                for p in reversed(pieces):
                    runs.append((e - p, e))
                    e = e - p - int(rnd.expovariate(1 / 3000.0))   # back in the queue
                runs.reverse()
                granted = runs[-1][0]
                r["exit"] = {"ok": 0, "timeout": 124,
                             "signal": rnd.choice([137, 143, 139]),
                             "failed": rnd.choice([1, 1, 1, 2, 3])}[outcome]
        elif outcome == "cancelled":
            if rnd.random() < 0.5:          # taken out of the queue
                r["exit"] = 75
            else:                           # cancel --running
                runs = [(ended - tail - ran, ended - tail)]
                granted = runs[0][0]
                r["exit"] = 143
        elif outcome == "busy":
            r["exit"] = 75
            wait = 0 if rnd.random() < 0.7 else 30000   # --no-wait, --wait-timeout 30s
        elif outcome == "stopped":
            r["exit"] = rnd.choice([130, 143])
        elif outcome == "lost":
            r["exit"] = None
            if rnd.random() < 0.7:
                runs = [(ended - ran, ended)]   # `ended` is when it was found
        ran_total = sum(e - s for s, e in runs)
        first = runs[0][0] if runs else None
        queued = (first if first is not None else ended - tail) - wait
        r["queued"] = queued
        r["started"] = first
        r["ran"] = secs(ran_total)
        r["waited"] = secs(max(0, ended - queued - ran_total))
        if outcome == "lost":
            r["waited"] = secs(max(0, (first if first is not None else ended) - queued))
        r["runs"] = runs
        r["_granted"] = granted
        r["_run"] = None
        recs.append(r)
        for _ in range(joiners):
            # Triggers that found this run waiting and joined it: they end
            # when it ends, with its status.
            jq = rnd.randrange(queued, (first or queued) + 1)
            t += 1
            jr = dict(r, id=0, pid=(pid + rnd.randrange(1, 50)) % 4194304 or 2000,
                      queued=jq, started=None, ended=t, waited=secs(t - jq), ran=0.0,
                      exit=r["exit"], outcome="joined", preemptions=0, joined=0,
                      runs=[], _granted=None, _run=r)
            r["joined"] += 1
            recs.append(jr)
    # Shift so that the newest record ended half a second before now.
    shift = a.now_ms - 500 - recs[-1]["ended"]
    for r in recs:
        for k in ("queued", "started", "ended", "_granted"):
            if r[k] is not None:
                r[k] += shift
        r["runs"] = [(s + shift, e + shift) for s, e in r["runs"]]
    # ids: the order of arrival; fences: the order of grants, as the lock's
    # counter gives them (ms * 1000, kept increasing).
    for i, r in enumerate(sorted(recs, key=lambda r: (r["queued"], r["ended"]))):
        r["id"] = 1_200_000 + i
    fence = 0
    for r in sorted((r for r in recs if r["_granted"] is not None), key=lambda r: r["_granted"]):
        fence = max(fence + 1, r["_granted"] * 1000)
        r["fence"] = fence
    lines = []
    for r in recs:
        if r["_run"] is not None:
            r["joined_run"] = r["_run"]["id"]
        out = {k: r[k] for k in KEYS}
        for k in ("queued", "started", "ended"):
            if out[k] is not None:
                out[k] = stamp(out[k])
        out["runs"] = [[stamp(s), stamp(e)] for s, e in r["runs"]]
        lines.append((r, (dumps(out) + "\n").encode()))
    # File order: the order of ends (baton appends a record as its job ends).
    lines.sort(key=lambda x: (x[0]["ended"], x[0]["queued"]))
    if a.template:
        why = check_template(a.template, json.loads(lines[-1][1]))
        if why:
            print(f"history.py: the generator does not write what baton writes: {why}", file=sys.stderr)
            return 2
    # `history`: the newest lines, under HALF. `history.1`: the lines before,
    # from where the previous rotation left an empty file up to the write
    # that made it reach HALF (the sum without its newest line is < HALF).
    sizes = [len(l) for _, l in lines]
    b, total = len(lines), 0
    while b > 0 and total + sizes[b - 1] < HALF:
        total += sizes[b - 1]
        b -= 1
    while True:
        s, old = b, 0
        while s > 0 and old < HALF:
            s -= 1
            old += sizes[s]
        if old < HALF:
            print("history.py: not enough records generated", file=sys.stderr)
            return 2
        if old - sizes[b - 1] < HALF:
            break
        b += 1   # one line fewer in `history`, try again
    os.makedirs(a.dir, exist_ok=True)
    with open(os.path.join(a.dir, "history.1"), "wb") as f:
        f.writelines(l for _, l in lines[s:b])
    with open(os.path.join(a.dir, "history"), "wb") as f:
        f.writelines(l for _, l in lines[b:])
    kept = [r for r, _ in lines[s:]]
    recent = sum(1 for r in kept if r["ended"] >= a.now_ms - 600_000)
    named = sum(1 for r in kept if r["job"] == NAME or any(x["name"] == NAME for x in r["resources"]))
    oc = {}
    for r in kept:
        oc[r["outcome"]] = oc.get(r["outcome"], 0) + 1
    print(f"history.py: {len(kept)} records: {b - s} in history.1 ({sum(sizes[s:b])} bytes), "
          f"{len(lines) - b} in history ({sum(sizes[b:])} bytes); {named} of {NAME}; "
          f"{recent} ended in the last 10 minutes", file=sys.stderr)
    print(dumps({
        "records": len(kept), "records_history": len(lines) - b, "records_history_1": b - s,
        "bytes_history": sum(sizes[b:]), "bytes_history_1": sum(sizes[s:b]),
        "mean_line": round(sum(sizes[s:]) / len(kept), 1),
        "min_line": min(sizes[s:]), "max_line": max(sizes[s:]),
        "name": NAME, "name_records": named, "name_share": round(named / len(kept), 4),
        "jobs": len(JOBS), "resources": len({x["name"] for x in R.values()}),
        "recent_10m": recent, "span_h": round((kept[-1]["ended"] - kept[0]["ended"]) / 3.6e6, 2),
        "outcomes": oc, "now_ms": a.now_ms,
    }))
    return 0


# --- read-check -----------------------------------------------------------------------
def load(d):
    recs = []
    for p in ("history.1", "history"):
        try:
            with open(os.path.join(d, p), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        for line in data.split(b"\n"):
            if line:
                r = json.loads(line)
                r["_line"] = line
                r["_ended"] = unstamp(r["ended"])
                r["_queued"] = unstamp(r["queued"])
                recs.append(r)
    recs.sort(key=lambda r: (r["_ended"], r["_queued"]))
    return recs


def table_ids(text):
    rows = text.split("\n")
    if rows and rows[-1] == "":
        rows.pop()
    if not rows:
        return None, "no output at all"
    if rows[0].split()[:2] != ["ID", "JOB"]:
        return None, f"no table header: {rows[0][:60]!r}"
    try:
        return [int(r.split()[0]) for r in rows[1:]], None
    except (ValueError, IndexError):
        return None, "a table row does not start with an id"


def read_check(a):
    with open(a.output, "rb") as f:
        out = f.read()
    res = {"kind": a.kind}
    problems = []
    if a.kind == "tail":
        with open(os.path.join(a.dir, "history"), "rb") as f:
            want = b"".join(l + b"\n" for l in f.read().split(b"\n")[:-1][-a.limit:])
        res["lines"] = out.count(b"\n")
        if out != want:
            problems.append("not the last lines of the file")
    else:
        recs = load(a.dir)
        if a.name:
            recs = [r for r in recs if r["job"] == a.name or any(x["name"] == a.name for x in r["resources"])]
        if a.kind == "json":
            lines = out.split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
            res["lines"] = len(lines)
            bad = 0
            for l in lines:
                try:
                    json.loads(l)
                except ValueError:
                    bad += 1
            want = [r["_line"] for r in recs[-a.limit:]]
            if len(lines) != len(want):
                problems.append(f"{len(lines)} lines, not {len(want)}")
            if bad:
                problems.append(f"{bad} lines do not parse as JSON")
            if not problems and lines != want:
                problems.append("the lines differ from the newest records of the file")
        else:
            ids, why = table_ids(out.decode(errors="replace"))
            if why:
                problems.append(why)
            else:
                res["rows"] = len(ids)
                if a.kind == "table":
                    want = [r["id"] for r in recs[-a.limit:]]
                    if ids != want:
                        problems.append(f"{len(ids)} rows, not the ids of the {len(want)} newest records"
                                        + (f" of {a.name}" if a.name else ""))
                else:  # since
                    t0, t1 = a.window
                    lo = sum(1 for r in recs if r["_ended"] >= t1 - 600_000)
                    hi = sum(1 for r in recs if r["_ended"] >= t0 - 600_000)
                    res["expected"] = [lo, hi]
                    allids = [r["id"] for r in recs]
                    if not lo <= len(ids) <= hi or (ids and ids != allids[-len(ids):]):
                        problems.append(f"{len(ids)} rows, expected the {lo}-{hi} records that "
                                        f"ended in the last 10 minutes, newest last")
    res["ok"] = not problems
    if problems:
        res["problem"] = "; ".join(problems)
    print(dumps(res))
    return 0 if res["ok"] else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("drain-check")
    d.add_argument("--file", required=True)
    d.add_argument("--inode", type=int, default=0)
    d.add_argument("--offset", type=int, default=0)
    d.add_argument("--expect", type=int, required=True)
    g = sub.add_parser("generate")
    g.add_argument("--dir", required=True)
    g.add_argument("--now-ms", type=int, default=None)
    g.add_argument("--seed", type=int, default=20261201)
    g.add_argument("--gap-ms", type=float, default=600.0)
    g.add_argument("--template")
    c = sub.add_parser("read-check")
    c.add_argument("--dir", required=True)
    c.add_argument("--kind", choices=["json", "table", "since", "tail"], required=True)
    c.add_argument("--output", required=True)
    c.add_argument("--limit", type=int, default=50)
    c.add_argument("--name")
    c.add_argument("--window", type=int, nargs=2, metavar=("T0_MS", "T1_MS"))
    a = ap.parse_args()
    if a.cmd == "drain-check":
        return drain_check(a)
    if a.cmd == "generate":
        if a.now_ms is None:
            a.now_ms = int(time.time() * 1000)
        return generate(a)
    if a.kind == "since" and not a.window:
        ap.error("--kind since needs --window T0 T1")
    return read_check(a)


if __name__ == "__main__":
    sys.exit(main())
