#!/usr/bin/env python3
"""bench/etcd.sh's helper.

  report.py status NAME      `baton status --json` on stdin: "HOLDERS WAITERS"
                             of resource NAME ("0 0" if it is not there)
  report.py report ...       the Markdown report on stdout, from the raw data
                             bench/etcd.sh leaves in its scratch directory:
                             the drain TSV (tool, round, wall_us, per_job_us,
                             failed), hyperfine's --export-json (or
                             bench/uncontended.py's look-alike), the hand-over
                             TSV (tool, sample, holder, waiter, latency_us),
                             and one directory per idle measurement (members'
                             /metrics before and after each window, the
                             waiters' /proc/PID/stat ticks).
"""

import argparse
import collections
import json
import math
import os
import re
import statistics
import sys

# The claims, as the issue states them.
CLAIM_DRAIN_RATIO = 0.5      # baton per job at most 0.5x etcdctl lock's, same run
CLAIM_HANDOVER_MS = 10.0     # hand-over p50 under 10 ms on loopback
ANCHOR_DRAIN_MS = 14.9       # etcdctl lock, 100 jobs, 3 hosts: 1.49 s (the VM)
ANCHOR_UNC_MS = 25.2         # an uncontended etcdctl lock (the VM)

LABEL = {
    "baton": "baton (`baton run -q --etcd GW -l x -- true`)",
    "etcdctl": "etcdctl lock (`etcdctl --endpoints=GW lock x true`)",
    "recipe-grpc": "floor: etcd's lock recipe in Rust, gRPC (`recipe grpc GW x -- true`)",
    "recipe-json": "floor: the recipe, JSON gateway (`recipe json GW x -- true`)",
    "recipe-grpc-reads": "floor: the recipe, gRPC, + baton's 2 queue reads (`recipe grpc --reads ...`)",
    "recipe-json-reads": "floor: the recipe, JSON, + baton's 2 queue reads (`recipe json --reads ...`)",
    "baton-before": "baton, another build (BEFORE: the one before a change)",
}
TOOLS = list(LABEL)   # the drain's tools, in the order of the tables


def verdict(ok):
    return "**holds**" if ok else "**does not hold**"


def both(a, b, ok):
    """Two estimates of one claim: both hold, neither, or the noise decides."""
    if ok(a) and ok(b):
        return "**holds**"
    if not ok(a) and not ok(b):
        return "**does not hold**"
    return "**unclear** (the two estimates disagree: rerun on a quiet machine)"


def pct(xs, p):
    """Percentile p (0-100) by linear interpolation between closest ranks."""
    xs = sorted(xs)
    if not xs:
        return math.nan
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def f3(x):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def f2(x):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def ratio(x):
    return "–" if x is None else f"{x:.2f}x"


# --- status ------------------------------------------------------------------
def cmd_status(argv):
    name = argv[0]
    try:
        doc = json.load(sys.stdin)
    except ValueError:
        sys.exit(1)
    for r in doc.get("resources", []):
        if r.get("name") == name:
            print(len(r.get("holders", [])), len(r.get("waiters", [])))
            return
    print(0, 0)


# --- metrics -----------------------------------------------------------------
LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
LABEL_RE = re.compile(r'(\w+)="([^"]*)"')


def read_metrics(path):
    """{(name, method): value} of the counters used, summed over codes."""
    out = collections.Counter()
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            m = LINE.match(line)
            if not m:
                continue
            name, labels, value = m.groups()
            if name in ("grpc_server_started_total", "grpc_server_msg_received_total",
                        "grpc_server_handled_total"):
                method = dict(LABEL_RE.findall(labels or "")).get("grpc_method", "?")
                out[(name, method)] += float(value)
            elif name == "etcd_debugging_lease_renewed_total":
                out[(name, "")] += float(value)
    return out


def snapshot(d, tag):
    total = collections.Counter()
    for i in (1, 2, 3):
        total.update(read_metrics(os.path.join(d, f"{tag}.m{i}")))
    with open(os.path.join(d, f"{tag}.t")) as f:
        t = int(f.read().strip()) / 1e6
    return total, t


def read_cpu(path):
    out = {}
    with open(path) as f:
        for line in f:
            p, u, s = line.split()
            out[p] = int(u) + int(s)
    return out


def idle_one(d, clk):
    meta = dict(l.strip().split("=", 1) for l in open(os.path.join(d, "meta")) if "=" in l)
    need = [f"{t}.{x}" for t in ("a0", "a1", "b0", "b1") for x in ("t", "m1", "m2", "m3")]
    if not all(os.path.exists(os.path.join(d, n)) for n in need):
        return None
    a0, ta0 = snapshot(d, "a0")
    a1, ta1 = snapshot(d, "a1")
    b0, tb0 = snapshot(d, "b0")
    b1, tb1 = snapshot(d, "b1")
    w = int(meta["waiters"])
    ttl = int(meta["ttl"])
    ta, tb = ta1 - ta0, tb1 - tb0
    keys = set(a0) | set(a1) | set(b0) | set(b1)

    def rate(c0, c1, t, k):
        return (c1.get(k, 0) - c0.get(k, 0)) / t

    # Per waiter per second: (rate with the waiters - rate of the holder alone) / W.
    per = {}
    for k in keys:
        per[k] = (rate(b0, b1, tb, k) - rate(a0, a1, ta, k)) / w
    raw_b = {k: b1.get(k, 0) - b0.get(k, 0) for k in keys}
    raw_a = {k: a1.get(k, 0) - a0.get(k, 0) for k in keys}
    # The first stretch after all were seen waiting (s0 -> b0), apart: per
    # waiter, the whole stretch, less the holder-alone rate over it.
    first = None
    if all(os.path.exists(os.path.join(d, f"s0.{x}")) for x in ("t", "m1", "m2", "m3")):
        s0, ts0 = snapshot(d, "s0")
        dt = tb0 - ts0
        first = {"secs": dt, "per": {k: ((b0.get(k, 0) - s0.get(k, 0)) - rate(a0, a1, ta, k) * dt) / w
                                     for k in set(s0) | set(b0)}}
    cpu = None
    if os.path.exists(os.path.join(d, "b0.cpu")) and os.path.exists(os.path.join(d, "b1.cpu")):
        c0, c1 = read_cpu(os.path.join(d, "b0.cpu")), read_cpu(os.path.join(d, "b1.cpu"))
        ticks = sum(c1[p] - c0[p] for p in c1 if p in c0)
        cpu = {"ticks": ticks, "ms": ticks * 1000.0 / clk,
               "ms_per_waiter_min": ticks * 1000.0 / clk / w / (tb / 60.0)}
    return {"tool": meta["tool"], "ttl": ttl, "waiters": w, "ta": ta, "tb": tb,
            "per": per, "raw_a": raw_a, "raw_b": raw_b, "cpu": cpu, "first": first,
            "settle": meta.get("settle", "?")}


def drain_requests(w, root):
    """The cluster's gRPC messages per job in the measured drains, by method."""
    if not root or not os.path.isdir(root):
        return
    per = collections.defaultdict(collections.Counter)   # tool -> method -> messages
    jobs = collections.Counter()
    for e in sorted(os.listdir(root)):
        d = os.path.join(root, e)
        if not os.path.exists(os.path.join(d, "post.t")):
            continue
        meta = dict(l.strip().split("=", 1) for l in open(os.path.join(d, "meta")) if "=" in l)
        c0, _ = snapshot(d, "pre")
        c1, _ = snapshot(d, "post")
        for (n, m), v in c1.items():
            if n == "grpc_server_msg_received_total" and v - c0.get((n, m), 0):
                per[meta["tool"]][m] += v - c0.get((n, m), 0)
        jobs[meta["tool"]] += int(meta["n"])
    if not jobs:
        return
    w("etcd requests per job in the measured drains (gRPC messages received, the 3 members "
      "summed: one per unary call or stream message; a JSON request (recipe-json) is a gRPC call "
      "behind each member's gateway):")
    w("")
    w("| tool | messages / job | by method, per job |")
    w("|---|---:|---|")
    for t in TOOLS:
        if not jobs[t]:
            continue
        tot = sum(per[t].values()) / jobs[t]
        parts = ", ".join(f"{m} {v / jobs[t]:.2f}" for m, v in per[t].most_common())
        w(f"| {t} | {tot:.2f} | {parts} |")
    w("")


def drain_cpu(w, root):
    """Where the CPU of the measured drains went: the jobs (the batons or
    etcdctl processes and their `true`s), the 3 gateways, the 3 members, and
    the machine's idle time, per job; medians over the rounds."""
    if not root or not os.path.isdir(root):
        return
    clk = os.sysconf("SC_CLK_TCK")
    rows = collections.defaultdict(lambda: collections.defaultdict(list))
    for e in sorted(os.listdir(root)):
        d = os.path.join(root, e)
        pre, post = os.path.join(d, "pre.cpu"), os.path.join(d, "post.cpu")
        if not (os.path.exists(pre) and os.path.exists(post)):
            continue
        meta = dict(l.strip().split("=", 1) for l in open(os.path.join(d, "meta")) if "=" in l)
        n = int(meta["n"])

        def load(path):
            out = {}
            for line in open(path):
                k, a, b = line.split()
                out[k] = (int(a), int(b))
            return out
        a, b = load(pre), load(post)
        if not all(k in a and k in b for k in ("jobs", "machine")):
            continue
        ms = lambda t: t * 1000.0 / clk / n
        group = collections.Counter()
        for k in b:
            if k in a and k not in ("machine", "stolen"):
                g = "gateways" if k.startswith("gateway") else "members" if k.startswith("m") else k
                group[g] += (b[k][0] + b[k][1]) - (a[k][0] + a[k][1])
        r = rows[meta["tool"]]
        for g in ("jobs", "gateways", "members"):
            r[g].append(ms(group[g]))
        r["busy"].append(ms(b["machine"][0] - a["machine"][0]))
        r["idle"].append(ms(b["machine"][1] - a["machine"][1]))
        if "stolen" in a and "stolen" in b:
            r["stolen"].append(ms(b["stolen"][0] - a["stolen"][0]))
    if not rows:
        return
    w("CPU in the measured drains, ms per job (all cores; utime+stime, 100 ticks/s, so a job's "
      "own share is coarse): *jobs* = the batons or etcdctl processes and their `true`s, "
      "*gateways* = the 3 `etcd gateway`s, *members* = the 3 etcd members, *machine busy/idle* "
      "= /proc/stat over the drain, *stolen* = the time the hypervisor gave this VM's cores "
      "to others (2 cores: busy + idle + stolen = 2 x wall; a large *stolen* is a noisy host, "
      "and slows every tool of the round). Medians over the rounds.")
    w("")
    w("| tool | jobs | gateways | members | machine busy | machine idle | stolen |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for t in TOOLS:
        if t not in rows:
            continue
        r = rows[t]
        w(f"| {t} | " + " | ".join(f"{statistics.median(r[g]):.2f}" if r[g] else "–"
                                   for g in ("jobs", "gateways", "members", "busy", "idle", "stolen")) + " |")
    w("")


def renew_period(tool, ttl):
    """Seconds between two renewals of an idle waiter: etcdctl every TTL/3;
    baton every TTL/3 but at most 60% of the way to its stop point
    (src/store/etcd/lease.rs, `period`)."""
    if tool != "baton":
        return ttl / 3.0
    stop = 0.95 * ttl - 0.5 - min(ttl / 3.0, 5.0)
    return max(min(ttl / 3.0, 0.6 * stop), 0.1)


def sum_kind(d, kind, only=None, but=None):
    return sum(v for (n, m), v in d.items() if n == kind
               and (only is None or m == only) and (but is None or m != but))


# --- report ------------------------------------------------------------------
def cmd_report(argv):
    ap = argparse.ArgumentParser(prog="report.py report")
    ap.add_argument("--drain", required=True)
    ap.add_argument("--drain-metrics", default="")
    ap.add_argument("--handover", required=True)
    ap.add_argument("--idle", required=True)
    ap.add_argument("--notes", required=True)
    ap.add_argument("--uncontended", default="")
    ap.add_argument("--uncontended-mode", default="none")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--drain-ran", type=int, default=1)
    ap.add_argument("--unc-runs", type=int, default=0)
    ap.add_argument("--samples", type=int, default=0)
    ap.add_argument("--idle-secs", type=float, default=0)
    ap.add_argument("--clk-tck", type=int, default=100)
    ap.add_argument("--settle", default="")
    ap.add_argument("--command", default="bash bench/etcd.sh")
    ap.add_argument("--meta", action="append", default=[])
    a = ap.parse_args(argv)
    out = []
    w = out.append

    w("# baton --etcd vs etcdctl lock: drain, uncontended, hand-over, idle")
    w("")
    w("Command:")
    w("")
    w("```")
    w(a.command)
    w("```")
    w("")
    for m in a.meta:
        k, _, v = m.partition("=")
        w(f"- **{k}**: {v}")
    w("")
    claims = []   # (claim, figure, verdict)

    # Drain.
    per_job = collections.defaultdict(dict)
    walls = collections.defaultdict(list)
    failed = collections.Counter()
    with open(a.drain) as f:
        next(f)
        for line in f:
            tool, rnd, wall, pj, fl = line.rstrip("\n").split("\t")
            if fl == "1":
                failed[tool] += 1
                continue
            per_job[tool][int(rnd)] = int(pj) / 1000.0
            walls[tool].append(int(wall) / 1000.0)
    if a.drain_ran:
        w(f"## Drain: {a.n} jobs from 3 hosts at once, one lock")
        w("")
        w(f"{a.n} jobs (`true`) launched at once, job i on host i mod 3 (its gateway's URL "
          f"only), all on one lock name; wall time from before the first launch until all "
          f"have exited, per job = wall / {a.n}. Median over {a.rounds} round(s), after one "
          f"unrecorded warm-up round per tool; the tools alternate within each round (a "
          f"fresh `--etcd-prefix`, or a fresh lock name, per round). *Paired* = the median "
          f"of the per-round ratios baton / etcdctl.")
        w("")
        w("| tool | median ms/job | median wall ms | min–max ms/job | rounds ok |")
        w("|---|---:|---:|---:|---:|")
        def paired(t):
            """The per-round ratios of tool t to etcdctl lock, same rounds."""
            return [per_job[t][r] / per_job["etcdctl"][r] for r in per_job[t] if r in per_job["etcdctl"]]

        med = {}
        for t in [t for t in TOOLS if t in per_job or failed[t]]:
            v = list(per_job[t].values())
            if not v:
                w(f"| {LABEL[t]} | FAILED | | | 0/{failed[t]} |")
                continue
            med[t] = statistics.median(v)
            w(f"| {LABEL[t]} | {f3(med[t])} | {f2(statistics.median(walls[t]))} | "
              f"{f3(min(v))}–{f3(max(v))} | {len(v)}/{len(v) + failed[t]} |")
        w("")
        if "baton" in med and "etcdctl" in med:
            rm = med["baton"] / med["etcdctl"]
            pr = paired("baton")
            prm = statistics.median(pr)
            w(f"baton / etcdctl lock: **{ratio(rm)}** (ratio of medians), "
              f"**{ratio(prm)}** (median of {len(pr)} paired rounds; "
              f"range {ratio(min(pr))}–{ratio(max(pr))}). "
              f"The issue's anchor for etcdctl lock: {ANCHOR_DRAIN_MS} ms/job (1.49 s for 100); "
              f"here {f3(med['etcdctl'])} ms/job.")
            w("")
            claims.append((f"drain: baton's per-job cost at most {CLAIM_DRAIN_RATIO}x etcdctl lock's (same run)",
                           f"{ratio(rm)} (medians), {ratio(prm)} (paired)",
                           both(rm, prm, lambda x: x <= CLAIM_DRAIN_RATIO)))
        else:
            claims.append((f"drain: baton's per-job cost at most {CLAIM_DRAIN_RATIO}x etcdctl lock's",
                           "no complete drain", "**not measured**"))
        floor = [t for t in TOOLS if t.startswith("recipe-") and t in med]
        if floor and "etcdctl" in med:
            w("The floor (FLOOR=1, bench/floor): etcd's own lock recipe (client/v3/concurrency's "
              "Mutex, what etcdctl lock runs: lease, put, wait for the predecessor's deletion, "
              "delete, revoke) in Rust, no priorities; *+ reads* also reads the whole queue in "
              "its enqueue and when granted, as baton's decisions do. Ratios to etcdctl lock, "
              "same rounds (medians; paired):")
            w("")
            w("| tool | ms/job | / etcdctl lock | paired | / baton |")
            w("|---|---:|---:|---:|---:|")
            for t in floor:
                pr = paired(t)
                vs_b = f"{ratio(med[t] / med['baton'])}" if "baton" in med else "–"
                w(f"| {t} | {f3(med[t])} | {ratio(med[t] / med['etcdctl'])} | "
                  f"{ratio(statistics.median(pr)) if pr else '–'} | {vs_b} |")
            w("")
        if "baton-before" in med and "baton" in med:
            pb = [per_job["baton"][r] / per_job["baton-before"][r]
                  for r in per_job["baton"] if r in per_job["baton-before"]]
            w(f"baton / the other build (BEFORE), same rounds: **{ratio(med['baton'] / med['baton-before'])}** "
              f"(medians), {ratio(statistics.median(pb)) if pb else '–'} (paired); the other build / "
              f"etcdctl lock: {ratio(med['baton-before'] / med['etcdctl'])} (medians), "
              f"{ratio(statistics.median(paired('baton-before'))) if paired('baton-before') else '–'} (paired).")
            w("")
        drain_requests(w, a.drain_metrics)
        drain_cpu(w, a.drain_metrics)

    # Uncontended.
    if a.uncontended and a.uncontended_mode != "none" and os.path.exists(a.uncontended):
        with open(a.uncontended) as f:
            res = json.load(f)["results"]
        times = {r["command"]: [t * 1000 for t in r["times"]] for r in res}
        w("## Uncontended: one job at a time")
        w("")
        w(f"`baton run -q --etcd GW -l u -- true` vs `etcdctl --endpoints=GW lock u true`, "
          f"host 1's gateway, {a.unc_runs} runs each ({a.uncontended_mode}, no shell).")
        w("")
        w("| tool | median ms | p10 ms | p90 ms | runs |")
        w("|---|---:|---:|---:|---:|")
        for t in ("baton", "etcdctl"):
            v = times.get(t, [])
            if v:
                w(f"| {t} | {f3(statistics.median(v))} | {f3(pct(v, 10))} | {f3(pct(v, 90))} | {len(v)} |")
        w("")
        if times.get("baton") and times.get("etcdctl"):
            mb, me = statistics.median(times["baton"]), statistics.median(times["etcdctl"])
            w(f"baton / etcdctl lock: **{ratio(mb / me)}**. The issue's anchor for an "
              f"uncontended etcdctl lock: {ANCHOR_UNC_MS} ms; here {f3(me)} ms.")
            w("")

    # Hand-over.
    lat = collections.defaultdict(list)
    with open(a.handover) as f:
        next(f)
        for line in f:
            tool, _, _, _, us = line.rstrip("\n").split("\t")
            lat[tool].append(int(us) / 1000.0)
    if a.samples:
        w("## Hand-over: one host's job ends, another host's waiting job starts")
        w("")
        w(f"Host A's job holds, host B's job waits (seen waiting in `baton status --json`, or "
          f"as the second key under etcdctl lock's prefix; then {a.settle} s more). A's command "
          f"ends with `exec date +%s%N` (its last act), B's command is `date +%s%N` (its "
          f"first act); latency = B's stamp − A's stamp. {a.samples} samples per tool, "
          f"(A, B) rotating over the host pairs (1,2), (2,3), (3,1); the tools alternate.")
        w("")
        w("| tool | p50 ms | p95 ms | min ms | max ms | samples |")
        w("|---|---:|---:|---:|---:|---:|")
        for t in ("baton", "etcdctl"):
            v = lat.get(t, [])
            if v:
                w(f"| {t} | {f2(pct(v, 50))} | {f2(pct(v, 95))} | {f2(min(v))} | {f2(max(v))} | {len(v)}/{a.samples} |")
            else:
                w(f"| {t} | – | – | – | – | 0/{a.samples} |")
        w("")
        if lat.get("baton"):
            p50 = pct(lat["baton"], 50)
            claims.append((f"hand-over from one host's job to another's: p50 under {CLAIM_HANDOVER_MS:g} ms",
                           f"p50 {f2(p50)} ms (p95 {f2(pct(lat['baton'], 95))} ms; etcdctl lock p50 "
                           f"{f2(pct(lat['etcdctl'], 50)) if lat.get('etcdctl') else '–'} ms)",
                           verdict(p50 < CLAIM_HANDOVER_MS)))

    # Idle.
    runs = []
    if os.path.isdir(a.idle):
        for e in sorted(os.listdir(a.idle)):
            d = os.path.join(a.idle, e)
            if os.path.isdir(d) and os.path.exists(os.path.join(d, "meta")):
                r = idle_one(d, a.clk_tck)
                if r:
                    runs.append(r)
    runs.sort(key=lambda r: (r["tool"] != "baton", -r["ttl"]))
    if runs:
        w("## Idle: waiting jobs while one job holds")
        w("")
        w(f"One holder and W waiting jobs (host 1 holds; the waiters on hosts 2, 3, 1, ...): a "
          f"window of {a.idle_secs:g} s with the holder alone, then the waiters are launched, "
          f"seen waiting, left alone for a settling stretch (TTL + 2 s unless IDLE_SETTLE says "
          f"otherwise: past the one re-read a waiter makes a TTL after its last read if the "
          f"revision moved meanwhile, as the later arrivals move it; shown apart below), then "
          f"measured for {a.idle_secs:g} s. "
          f"Requests: the members' gRPC counters (`grpc_server_msg_received_total`: one per "
          f"unary call or stream message; `grpc_server_started_total`: calls and streams "
          f"opened), summed over the 3 members; per waiter per second = (rate with the "
          f"waiters − rate of the holder alone) / W. baton opens a keep-alive stream "
          f"per renewal (one call, one message, then closes it: no stream held open between "
          f"renewals); etcdctl lock keeps one gRPC keep-alive stream open (one message per "
          f"renewal). CPU: the waiters' "
          f"utime+stime from /proc/PID/stat over the window ({a.clk_tck} ticks/s), summed.")
        w("")
        w("| tool | TTL | W | messages / waiter / s | of which LeaseKeepAlive | expected keep-alives / s (baton: 1 per min(TTL/3, 0.6 × (0.95 TTL − 0.5 s − min(TTL/3, 5 s))); etcdctl: 1 per TTL/3) | other messages / waiter / s | calls opened / waiter / s | lease renewals / waiter / s | CPU ticks (all W) | CPU ms / waiter / min |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in runs:
            p = r["per"]
            msgs = sum_kind(p, "grpc_server_msg_received_total")
            ka = sum_kind(p, "grpc_server_msg_received_total", only="LeaseKeepAlive")
            other = msgs - ka
            started = sum_kind(p, "grpc_server_started_total")
            renewed = p.get(("etcd_debugging_lease_renewed_total", ""), 0.0)
            exp = 1.0 / renew_period(r["tool"], r["ttl"])
            c = r["cpu"]
            w(f"| {r['tool']} | {r['ttl']} s | {r['waiters']} | {f3(msgs)} | {f3(ka)} | {f3(exp)} | "
              f"{f3(other)} | {f3(started)} | {f3(renewed)} | "
              f"{c['ticks'] if c else '–'} | {f2(c['ms_per_waiter_min']) if c else '–'} |")
            r["msgs"], r["ka"], r["other"], r["exp"] = msgs, ka, other, exp
        w("")
        w("Raw counts (all members, the whole window) by gRPC method, messages received: "
          "holder alone → holder and waiters.")
        w("")
        w("| tool | TTL | window s (alone; with waiters) | counts by method |")
        w("|---|---:|---|---|")
        for r in runs:
            methods = sorted({m for (n, m) in r["raw_b"] if n == "grpc_server_msg_received_total"}
                             | {m for (n, m) in r["raw_a"] if n == "grpc_server_msg_received_total"})
            parts = []
            for m in methods:
                x = r["raw_a"].get(("grpc_server_msg_received_total", m), 0)
                y = r["raw_b"].get(("grpc_server_msg_received_total", m), 0)
                if x or y:
                    parts.append(f"{m} {x:g} → {y:g}")
            w(f"| {r['tool']} | {r['ttl']} s | {r['ta']:.1f}; {r['tb']:.1f} | {', '.join(parts) or 'none'} |")
        w("")
        w("The settling stretch (from all seen waiting to the window), per waiter, less the "
          "holder-alone rate: messages by gRPC method.")
        w("")
        w("| tool | TTL | stretch s | messages / waiter, by method |")
        w("|---|---:|---:|---|")
        for r in runs:
            f = r["first"]
            if not f:
                continue
            parts = [f"{m} {v:.2f}" for (n, m), v in sorted(f["per"].items(), key=lambda kv: -kv[1])
                     if n == "grpc_server_msg_received_total" and abs(v) >= 0.005]
            w(f"| {r['tool']} | {r['ttl']} s | {f['secs']:.1f} | {', '.join(parts) or 'none'} |")
        w("")
        for r in runs:
            if r["tool"] != "baton":
                continue
            # One keep-alive per renewal period (within 20 %: a window holds whole
            # renewals), and nothing else from the waiters in the window.
            ok_ka = abs(r["ka"] - r["exp"]) <= 0.2 * r["exp"]
            ok_other = r["other"] * r["tb"] * r["waiters"] < 0.5
            claims.append((f"idle, --etcd-ttl {r['ttl']}s: a waiting baton sends one keep-alive per "
                           f"{renew_period('baton', r['ttl']):g} s and nothing else",
                           f"{f3(r['ka'])} keep-alives/s (expected {f3(r['exp'])}), "
                           f"{f3(r['other'])} other requests/s per waiter; CPU "
                           f"{f2(r['cpu']['ms_per_waiter_min']) if r['cpu'] else '–'} ms per waiter per minute",
                           verdict(ok_ka and ok_other)))

    # Claims.
    w("## Claims")
    w("")
    w("| claim | this run | verdict |")
    w("|---|---|---|")
    for c, fig, v in claims:
        w(f"| {c} | {fig} | {v} |")
    w("")
    notes = [l.rstrip("\n") for l in open(a.notes)] if os.path.exists(a.notes) else []
    w("## Notes")
    w("")
    if notes:
        w("```")
        out.extend(notes)
        w("```")
    else:
        w("Nothing odd: every job exited 0, printed nothing, and left no key behind "
          "(baton keeps one grant guard, `g/…`, per lock name and prefix).")
    w("")
    print("\n".join(out))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "status":
        cmd_status(rest)
    elif cmd == "report":
        cmd_report(rest)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
