#!/usr/bin/env python3
"""Turn bench/run.sh's raw data into the Markdown report on stdout.

Inputs: the drain TSV (tool, n, round, wall_us, per_job_us, failed), the
notes file (odd things seen during the run), and hyperfine --export-json
files (or bench/uncontended.py's look-alike) for the uncontended runs.
"""

import argparse
import collections
import json
import statistics
import sys

LABEL = {
    "baton": "baton (`baton run -l x -- true`), static musl build",
    "baton-fresh": "baton, static musl build, fresh state directory every drain",
    "baton-glibc": "baton, default glibc build (`cargo install --path .`)",
    "baton-before": "baton, the build given as BEFORE (for a before/after comparison)",
    "flock": "flock (`flock FILE true`)",
    "busy": "busy-wait (`mkdir` poll, `sleep 0.5`)",
    "none": "no lock (`/usr/bin/true`), launch floor",
}
ORDER = ["baton", "baton-before", "baton-fresh", "baton-glibc", "flock", "busy", "none"]

# The claims, as stated in the brief.
CLAIM_DRAIN_VS_FLOCK = 1.0   # baton per-job <= flock per-job at the small N
CLAIM_SCALING = 1.3          # baton per-job at the large N within 1.3x of the small N
CLAIM_UNCONTENDED_MS = 1.0   # baton adds < 1 ms over `true`


def ms(us):
    return us / 1000.0


def fmt_ms(x, digits=3):
    return f"{x:.{digits}f}"


def fmt_ratio(x):
    return "–" if x is None else f"{x:.2f}x"


def verdict(ok):
    return "**holds**" if ok else "**does not hold**"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--drain", required=True)
    ap.add_argument("--notes", required=True)
    ap.add_argument("--sizes", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--busy", default="1")
    ap.add_argument("--busy-max", type=int, default=200)
    ap.add_argument("--uncontended-mode", default="none")
    ap.add_argument("--meta", action="append", default=[])
    ap.add_argument("json", nargs="*")
    a = ap.parse_args()

    sizes = [int(s) for s in a.sizes.split()]
    per_job = collections.defaultdict(list)        # (tool, n) -> [us]
    by_round = collections.defaultdict(dict)       # (n, round) -> {tool: us}
    failed = collections.Counter()                 # (tool, n) -> rounds failed
    with open(a.drain) as f:
        next(f)
        for line in f:
            tool, n, rnd, _wall, pj, bad = line.rstrip("\n").split("\t")
            n, rnd, pj, bad = int(n), int(rnd), int(pj), int(bad)
            if bad:
                failed[(tool, n)] += 1
                continue
            per_job[(tool, n)].append(pj)
            by_round[(n, rnd)][tool] = pj
    tools = [t for t in ORDER if any(k[0] == t for k in per_job) or
             any(k[0] == t for k in failed)]
    if a.busy == "1" and "busy" not in tools and any(n > a.busy_max for n in sizes):
        tools.insert(tools.index("flock") + 1 if "flock" in tools else len(tools), "busy")

    def med(tool, n):
        v = per_job.get((tool, n))
        return statistics.median(v) if v else None

    def paired(tool, n):
        """Median over rounds of (tool / flock) measured in the same round."""
        rs = [d[tool] / d["flock"] for (m, _), d in by_round.items()
              if m == n and tool in d and d.get("flock")]
        return statistics.median(rs) if rs else None

    out = []
    w = out.append
    w("## Drain: N jobs queued at once on one lock")
    w("")
    w(f"Wall time from before the first launch to after the last job ended, "
      f"divided by N. Median over {a.rounds} round(s); the tools are "
      f"interleaved within each round. *Ratio vs flock* is median(tool) / "
      f"median(flock); *paired* is the median of the per-round ratios.")
    w("")
    w("| tool | N | median ms/job | ratio vs flock | paired ratio | min–max ms/job | rounds ok |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        fl = med("flock", n)
        for t in tools:
            if t == "busy" and n > a.busy_max:
                w(f"| {LABEL[t]} | {n} | skipped: polling every 0.5 s at this N "
                  f"would take far too long | | | | |")
                continue
            v = per_job.get((t, n), [])
            nfail = failed[(t, n)]
            if not v:
                w(f"| {LABEL[t]} | {n} | FAILED | | | | 0/{nfail} |")
                continue
            m = statistics.median(v)
            ratio = m / fl if fl else None
            pr = paired(t, n) if t != "flock" else 1.0
            w(f"| {LABEL[t]} | {n} | {fmt_ms(ms(m))} | {fmt_ratio(ratio)} | "
              f"{fmt_ratio(pr)} | {fmt_ms(ms(min(v)))}–{fmt_ms(ms(max(v)))} | "
              f"{len(v)}/{len(v) + nfail} |")
    w("")

    # Uncontended.
    unc = collections.defaultdict(list)          # name -> pooled times (s)
    unc_round_meds = collections.defaultdict(list)
    for path in a.json:
        with open(path) as f:
            data = json.load(f)
        for r in data["results"]:
            unc[r["command"]].extend(r["times"])
            unc_round_meds[r["command"]].append(r["median"])
    unc_med = {k: statistics.median(v) * 1e3 for k, v in unc.items() if v}
    if unc_med:
        how = ("hyperfine -N (no shell), warmup, median"
               if a.uncontended_mode == "hyperfine"
               else "python3 posix_spawn loop (hyperfine was not available), median")
        w("## Uncontended: one job at a time, nobody else on the lock")
        w("")
        w(f"Each command run sequentially many times ({how}); "
          f"{len(a.json)} repetition(s), times pooled.")
        w("")
        w("| command | median ms | added vs `true` ms | added vs flock ms | per-repetition medians ms | runs |")
        w("|---|---:|---:|---:|---:|---:|")
        base = unc_med.get("true")
        fbase = unc_med.get("flock")
        names = {"true": "`true`", "flock": "`flock FILE true`",
                 "timeout": "`timeout 60 true` (smallest fork-and-wait wrapper)",
                 "baton": "`baton run -l x -- true` (static musl build)",
                 "baton-glibc": "`baton run -l x -- true` (default glibc build)",
                 "baton-before": "`baton run -l x -- true` (the BEFORE build)"}
        for k in ["true", "timeout", "flock", "baton", "baton-before", "baton-glibc"]:
            if k not in unc_med:
                continue
            rm = unc_round_meds[k]
            added = "–" if base is None or k == "true" else fmt_ms(unc_med[k] - base)
            added_f = "–" if fbase is None or not k.startswith("baton") else f"{unc_med[k] - fbase:+.3f}"
            w(f"| {names[k]} | {fmt_ms(unc_med[k])} | {added} | {added_f} | "
              f"{fmt_ms(min(rm) * 1e3)}–{fmt_ms(max(rm) * 1e3)} | {len(unc[k])} |")
        w("")

    # Claims.
    w("## Claims")
    w("")
    small, large = min(sizes), max(sizes)
    b, f_ = med("baton", small), med("flock", small)
    if b is not None and f_ is not None:
        w(f"1. baton per-job <= flock per-job at N={small}: "
          f"{fmt_ms(ms(b))} vs {fmt_ms(ms(f_))} ms "
          f"(ratio {fmt_ratio(b / f_)}, paired {fmt_ratio(paired('baton', small))}) "
          f"— {verdict(b <= f_ * CLAIM_DRAIN_VS_FLOCK)}"
          + ("" if small == 200 else f" (the claim is stated for N=200; this run's smallest N is {small})"))
    else:
        w(f"1. baton vs flock at N={small}: not measured (a tool failed)")
    bf = med("baton-fresh", small)
    if bf is not None and f_ is not None:
        w(f"   (in a fresh state directory for every drain, baton-fresh: {fmt_ms(ms(bf))} ms, "
          f"ratio {fmt_ratio(bf / f_)}, paired {fmt_ratio(paired('baton-fresh', small))})")
    bl = med("baton", large)
    if large != small and b is not None and bl is not None:
        w(f"2. baton per-job at N={large} within {CLAIM_SCALING}x of N={small}: "
          f"{fmt_ms(ms(bl))} vs {fmt_ms(ms(b))} ms (ratio {fmt_ratio(bl / b)}) "
          f"— {verdict(bl <= b * CLAIM_SCALING)}"
          + ("" if (small, large) == (200, 2000) else " (the claim is stated for 200 → 2000)"))
    else:
        w(f"2. scaling of baton from N=200 to N=2000: not measured (SIZES={a.sizes!r})")
    bfl = med("baton-fresh", large)
    if large != small and bf is not None and bfl is not None:
        w(f"   (baton-fresh, a fresh state directory for every drain: {fmt_ms(ms(bfl))} vs "
          f"{fmt_ms(ms(bf))} ms, ratio {fmt_ratio(bfl / bf)})")
    if "baton" in unc_med and "true" in unc_med:
        d = unc_med["baton"] - unc_med["true"]
        w(f"3. baton adds < {CLAIM_UNCONTENDED_MS:g} ms over `true` uncontended: "
          f"+{fmt_ms(d)} ms — {verdict(d < CLAIM_UNCONTENDED_MS)}")
        if "flock" in unc_med:
            fd = unc_med["flock"] - unc_med["true"]
            w(f"   (for scale: flock adds +{fmt_ms(fd)} ms on this machine; any wrapper "
              f"pays one extra exec, and `true` alone costs {fmt_ms(unc_med['true'])} ms here)")
        if "timeout" in unc_med:
            td = unc_med["timeout"] - unc_med["true"]
            w(f"   (coreutils `timeout`, which only forks, execs and waits, adds +{fmt_ms(td)} ms: "
              f"baton's own work costs {unc_med['baton'] - unc_med['timeout']:+.3f} ms beyond that)")
    else:
        w("3. uncontended overhead: not measured")
    w("")

    w("## Anomalies seen during the run")
    w("")
    with open(a.notes) as f:
        notes = [l.rstrip("\n") for l in f if l.strip()]
    if notes:
        w("```")
        out.extend(notes)
        w("```")
    else:
        w("None: every job exited 0, no drain hung, no unexpected output, "
          "no entries left in baton's state directory.")
    w("")
    w("## Run")
    w("")
    for m in a.meta:
        k, _, v = m.partition("=")
        w(f"- {k}: {v}")
    w(f"- sizes: {a.sizes}; rounds: {a.rounds}")
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
