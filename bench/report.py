#!/usr/bin/env python3
"""Turn bench/run.sh's raw data into the Markdown report on stdout.

Inputs: the drain TSV (tool, n, round, wall_us, per_job_us, failed), the
notes file (odd things seen during the run), and hyperfine --export-json
files (or bench/uncontended.py's look-alike) for the uncontended runs; for
the history reading benchmark, the generator's summary (bench/history.py
generate), the output checks (name TAB result JSON) and hyperfine's JSON.
"""

import argparse
import collections
import json
import statistics
import sys

LABEL = {
    "baton": "baton (`baton run -l x -- true`), static musl build",
    "baton-history": "baton, static musl build, history on (file on disk)",
    "baton-fresh": "baton, static musl build, fresh state directory every drain",
    "baton-glibc": "baton, default glibc build (`cargo install --path .`)",
    "baton-before": "baton, the build given as BEFORE (for a before/after comparison)",
    "flock": "flock (`flock FILE true`)",
    "busy": "busy-wait (`mkdir` poll, `sleep 0.5`)",
    "none": "no lock (`/usr/bin/true`), launch floor",
}
ORDER = ["baton", "baton-history", "baton-before", "baton-fresh", "baton-glibc", "flock", "busy", "none"]

# The claims, as stated in the brief.
CLAIM_DRAIN_VS_FLOCK = 1.0   # baton per-job <= flock per-job at the small N
CLAIM_SCALING = 1.3          # baton per-job at the large N within 1.3x of the small N
CLAIM_UNCONTENDED_MS = 1.0   # baton adds < 1 ms over `true`
CLAIM_HISTORY = 1.05         # history on costs at most 5 % more per job (drain)
CLAIM_HISTREAD_MS = 200.0    # `history --limit 50` on a full history under 200 ms

HR_SHORT = {"limit-json": "--limit 50 --json", "limit-name": "--limit 50 {name}",
            "since": "--since 10m"}

# The history reading benchmark's commands, in the order of the report.
HISTREAD = [
    ("limit", "`baton history --limit 50`", "the newest 50: the tail of `history`"),
    ("limit-json", "`baton history --limit 50 --json`", "the same, as JSON Lines"),
    ("limit-name", "`baton history --limit 50 {name}`", "the newest 50 of a name in {share} of the records"),
    ("since", "`baton history --since 10m`", "the last 10 minutes ({rows} records) and 60 s of slack"),
    ("full-scan", "`baton history --limit 50 no-such-job` (reference)", "both files whole: a name in no record"),
    ("tail", "`tail -n 50 history` (floor)", "the last 50 lines, no parsing"),
]


def ms(us):
    return us / 1000.0


def fmt_ms(x, digits=3):
    return f"{x:.{digits}f}"


def fmt_ratio(x):
    return "–" if x is None else f"{x:.2f}x"


def fmt_pct(x):
    """A ratio near 1, precise enough to judge a 5 % bound: 1.047x (+4.7 %)."""
    return f"{x:.3f}x ({100 * (x - 1):+.1f} %)"


def verdict(ok):
    return "**holds**" if ok else "**does not hold**"


def drain_section(w, a, sizes, tools, per_job, failed, med, paired):
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


def history_section(w, a, sizes, per_job, med, paired, paired_all):
    """baton-history against baton, same binary, same rounds."""
    if not any(k[0] == "baton-history" for k in per_job):
        return
    w("## History on vs off: the drain")
    w("")
    w("The same binary, the same rounds (interleaved with the other tools): "
      "**baton** with its history off (`BATON_HISTORY=` empty), "
      "**baton-history** with it on, one record per job appended to one file "
      "on the disk for the whole run. *Paired* is the median over rounds of "
      "baton-history / baton in the same round; *medians* is median(baton-history) "
      "/ median(baton). After each drain the file was checked to have gained "
      "exactly N well-formed records of outcome `ok` (a miss is a FAIL below).")
    w("")
    w("| N | baton ms/job (off) | baton-history ms/job (on) | added ms/job | ratio of medians "
      "| paired ratio | paired min–max | at most 5 % more |")
    w("|---:|---:|---:|---:|---:|---:|---:|---|")
    for n in sizes:
        b, h = med("baton", n), med("baton-history", n)
        rs = paired_all("baton-history", n, "baton")
        if b is None or h is None or not rs:
            w(f"| {n} | {'–' if b is None else fmt_ms(ms(b))} | "
              f"{'–' if h is None else fmt_ms(ms(h))} | | | | | not measured |")
            continue
        pr = statistics.median(rs)
        w(f"| {n} | {fmt_ms(ms(b))} | {fmt_ms(ms(h))} | {ms(h - b):+.3f} | "
          f"{fmt_pct(h / b)} | {fmt_pct(pr)} | {fmt_ratio(min(rs))}–{fmt_ratio(max(rs))} | "
          f"{history_verdict(h / b, pr)} |")
    w("")


def history_verdict(ratio, paired):
    """Both estimates at most CLAIM_HISTORY: holds; both above: does not;
    else the noise decides, and the line says so."""
    ok_r, ok_p = ratio <= CLAIM_HISTORY, paired <= CLAIM_HISTORY
    if ok_r and ok_p:
        return "**holds**"
    if not ok_r and not ok_p:
        return "**does not hold**"
    return "**unclear** (the two estimates disagree: rerun on a quiet machine)"


def load_histread(a):
    """(generator summary, {name: check result}, {name: [seconds]})"""
    gen, checks, times = {}, {}, {}
    if a.histread_gen:
        try:
            with open(a.histread_gen) as f:
                text = f.read().strip()
            gen = json.loads(text) if text else {}
        except FileNotFoundError:
            pass
    if a.histread_checks:
        try:
            with open(a.histread_checks) as f:
                for line in f:
                    name, _, res = line.rstrip("\n").partition("\t")
                    try:
                        checks[name] = json.loads(res)
                    except ValueError:
                        checks[name] = {"ok": False, "problem": res or "no result"}
        except FileNotFoundError:
            pass
    if a.histread_json:
        with open(a.histread_json) as f:
            for r in json.load(f)["results"]:
                times[r["command"]] = r["times"]
    return gen, checks, times


def histread_section(w, a, gen, checks, times):
    if not gen and not times:
        return
    w("## History: reading a full 16 MiB history")
    w("")
    if gen:
        mib = 1 << 20
        w(f"A generated history as baton leaves it when full: `history.1` "
          f"{gen['bytes_history_1'] / mib:.2f} MiB ({gen['records_history_1']} records, "
          f"as a rotation leaves it) and `history` {gen['bytes_history'] / mib:.2f} MiB "
          f"({gen['records_history']} records, just under the 8 MiB that rotates it): "
          f"{gen['records']} records over {gen['span_h']} h, lines of "
          f"{gen['min_line']}–{gen['max_line']} bytes (mean {gen['mean_line']}), "
          f"{gen['jobs']} job names, {gen['resources']} resources, every outcome; "
          f"`{gen['name']}` is in {gen['name_records']} records "
          f"({100 * gen['name_share']:.1f} %), {gen['recent_10m']} ended in the 10 "
          f"minutes before it was written. The lines are in the exact format of "
          f"the lines the binary wrote in the same run (bench/history.py checks "
          f"their keys and re-serializes them byte for byte), and each command's "
          f"output was checked before timing. The files are in the page cache.")
        w("")
    how = (f"hyperfine -N, {a.histread_warmup} warmup runs, {a.histread_runs} runs"
           if a.histread_mode == "hyperfine"
           else f"python3 posix_spawn loop (hyperfine was not available), "
                f"{a.histread_warmup} warmup, {a.histread_runs} runs")
    w(f"Timed with {how}; output to /dev/null.")
    w("")
    w(f"| command | reads | median ms | mean ± σ ms | min–max ms | under {CLAIM_HISTREAD_MS:g} ms | output |")
    w("|---|---|---:|---:|---:|---|---|")
    name = gen.get("name", "NAME")
    share = f"{100 * gen['name_share']:.1f} %" if gen else "~5 %"
    for key, cmd, reads in HISTREAD:
        c = checks.get(key)
        rows = (c or {}).get("rows", (c or {}).get("lines", "?"))
        if c is None:
            check = "not checked"
        elif c.get("ok"):
            check = f"ok ({rows} {'lines' if 'lines' in c else 'rows'})"
        else:
            check = f"**WRONG**: {c.get('problem', '?')}"
        t = times.get(key)
        cmd = cmd.format(name=name)
        reads = reads.format(share=share, rows=rows)
        if not t:
            w(f"| {cmd} | {reads} | not timed | | | | {check} |")
            continue
        m = statistics.median(t) * 1e3
        mean = statistics.fmean(t) * 1e3
        sd = statistics.stdev(t) * 1e3 if len(t) > 1 else 0.0
        under = "–" if key in ("full-scan", "tail") else ("yes" if m < CLAIM_HISTREAD_MS else "**no**")
        w(f"| {cmd} | {reads} | {fmt_ms(m, 2)} | {mean:.2f} ± {sd:.2f} | "
          f"{min(t) * 1e3:.2f}–{max(t) * 1e3:.2f} | {under} | {check} |")
    w("")


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
    ap.add_argument("--drain-ran", default="1")
    ap.add_argument("--histread-mode", default="none")
    ap.add_argument("--histread-json")
    ap.add_argument("--histread-gen")
    ap.add_argument("--histread-checks")
    ap.add_argument("--histread-runs", type=int, default=50)
    ap.add_argument("--histread-warmup", type=int, default=5)
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

    def paired_all(tool, n, base="flock"):
        """(tool / base) of each round where both were measured."""
        return [d[tool] / d[base] for (m, _), d in sorted(by_round.items())
                if m == n and tool in d and d.get(base)]

    def paired(tool, n, base="flock"):
        """Median over rounds of (tool / base) measured in the same round."""
        rs = paired_all(tool, n, base)
        return statistics.median(rs) if rs else None

    drained = a.drain_ran == "1"
    out = []
    w = out.append
    if drained:
        drain_section(w, a, sizes, tools, per_job, failed, med, paired)
        history_section(w, a, sizes, per_job, med, paired, paired_all)

    # Uncontended.
    unc = collections.defaultdict(list)          # name -> pooled times (s)
    unc_round_meds = collections.defaultdict(list)
    unc_cpu = collections.defaultdict(list)      # name -> [(user+sys mean s, runs)]
    for path in a.json:
        with open(path) as f:
            data = json.load(f)
        for r in data["results"]:
            unc[r["command"]].extend(r["times"])
            unc_round_meds[r["command"]].append(r["median"])
            if "user" in r and "system" in r:   # hyperfine's means, per run
                unc_cpu[r["command"]].append((r["user"] + r["system"], len(r["times"])))
    unc_med = {k: statistics.median(v) * 1e3 for k, v in unc.items() if v}
    if unc_med:
        how = ("hyperfine -N (no shell), warmup, median"
               if a.uncontended_mode == "hyperfine"
               else "python3 posix_spawn loop (hyperfine was not available), median")
        w("## Uncontended: one job at a time, nobody else on the lock")
        w("")
        w(f"Each command run sequentially many times ({how}); "
          f"{max(len(v) for v in unc_round_meds.values())} repetition(s), times pooled.")
        w("")
        w("| command | median ms | added vs `true` ms | added vs flock ms | per-repetition medians ms | runs |")
        w("|---|---:|---:|---:|---:|---:|")
        base = unc_med.get("true")
        fbase = unc_med.get("flock")
        names = {"true": "`true`", "flock": "`flock FILE true`",
                 "timeout": "`timeout 60 true` (smallest fork-and-wait wrapper)",
                 "baton": "`baton run -l x -- true` (static musl build)",
                 "baton-history": "`baton run -l x -- true` (static musl build, history on)",
                 "baton-glibc": "`baton run -l x -- true` (default glibc build)",
                 "baton-before": "`baton run -l x -- true` (the BEFORE build)"}
        for k in ["true", "timeout", "flock", "baton", "baton-history", "baton-before", "baton-glibc"]:
            if k not in unc_med:
                continue
            rm = unc_round_meds[k]
            added = "–" if base is None or k == "true" else fmt_ms(unc_med[k] - base)
            added_f = "–" if fbase is None or not k.startswith("baton") else f"{unc_med[k] - fbase:+.3f}"
            w(f"| {names[k]} | {fmt_ms(unc_med[k])} | {added} | {added_f} | "
              f"{fmt_ms(min(rm) * 1e3)}–{fmt_ms(max(rm) * 1e3)} | {len(unc[k])} |")
        w("")
        if "baton-history" in unc_med:
            w("History off for every row but baton-history, which appends its "
              "records to a file on the disk, in a timing run of its own "
              "right after the others in each repetition.")
            w("")

    gen, checks, hr_times = load_histread(a)
    histread_section(w, a, gen, checks, hr_times)

    # Claims.
    w("## Claims")
    w("")
    small, large = min(sizes), max(sizes)
    b, f_ = med("baton", small), med("flock", small)
    if not drained:
        w("1. baton vs flock in the drain: not measured (DRAIN=0)")
    elif b is not None and f_ is not None:
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
    if not drained:
        w("2. scaling of baton in the drain: not measured (DRAIN=0)")
    elif large != small and b is not None and bl is not None:
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
        if "baton-history" in unc_med:
            cpu = {k: sum(c * n for c, n in v) / sum(n for _, n in v) * 1e3
                   for k, v in unc_cpu.items() if v}
            w(f"   (with the history on, baton-history: {fmt_ms(unc_med['baton-history'])} ms, "
              f"{unc_med['baton-history'] - unc_med['baton']:+.3f} ms per job over history off"
              + (f"; CPU per run, user+sys as hyperfine counts it: {fmt_ms(cpu['baton-history'])} "
                 f"vs {fmt_ms(cpu['baton'])} ms, {cpu['baton-history'] - cpu['baton']:+.3f}"
                 if "baton" in cpu and "baton-history" in cpu else "") + ")")
    else:
        w("3. uncontended overhead: not measured")
    # 4: the history's cost per job in the drain.
    hist = []
    for n in sizes:
        hb, hh = med("baton", n), med("baton-history", n)
        rs = paired_all("baton-history", n, "baton")
        if drained and hb is not None and hh is not None and rs:
            hist.append((n, hb, hh, statistics.median(rs)))
    if hist:
        verdicts = [history_verdict(hh / hb, pr) for _, hb, hh, pr in hist]
        overall = (verdicts[0] if len(set(verdicts)) == 1 else
                   "**does not hold**" if "**does not hold**" in verdicts else
                   "**unclear** (see the sizes)")
        w(f"4. the drain with history on costs at most {100 * (CLAIM_HISTORY - 1):.0f} % more "
          f"per job than with it off: " + "; ".join(
              f"N={n}: {fmt_ms(ms(hh))} vs {fmt_ms(ms(hb))} ms/job, ratio of medians "
              f"{fmt_pct(hh / hb)}, paired {fmt_pct(pr)}"
              for n, hb, hh, pr in hist) + f" — {overall}"
          + ("" if len(verdicts) == 1 or len(set(verdicts)) == 1 else
             " (" + ", ".join(f"N={n}: {v}" for (n, *_), v in zip(hist, verdicts)) + ")"))
    else:
        w("4. the cost of the history in the drain: not measured"
          + (" (DRAIN=0)" if not drained else " (HISTORY=0, or a drain failed)"))
    # 5: reading a full history.
    t = hr_times.get("limit")
    if t:
        m = statistics.median(t) * 1e3
        c = checks.get("limit", {})
        w(f"5. `baton history --limit 50` on a full 16 MiB history under "
          f"{CLAIM_HISTREAD_MS:g} ms: {fmt_ms(m, 2)} ms (median of {len(t)} runs) — "
          f"{verdict(m < CLAIM_HISTREAD_MS and c.get('ok', False))}"
          + ("" if c.get("ok") else " (its output was wrong or not checked)"))
        others = [(k, statistics.median(hr_times[k]) * 1e3) for k in
                  ("limit-json", "limit-name", "since") if hr_times.get(k)]
        if others:
            w("   (" + ", ".join(f"`{HR_SHORT[k].format(name=gen.get('name', 'NAME'))}` "
                               f"{fmt_ms(v, 2)} ms" for k, v in others)
              + f": {'all' if all(v < CLAIM_HISTREAD_MS for _, v in others) else '**not all**'} "
              f"under {CLAIM_HISTREAD_MS:g} ms; `tail -n 50`, the floor: "
              + (f"{fmt_ms(statistics.median(hr_times['tail']) * 1e3, 2)} ms)" if hr_times.get("tail") else "–)"))
    else:
        w("5. reading a full history: not measured (HISTREAD=0, or it failed)")
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
          "no entries left in baton's state directory, every history check passed.")
    w("")
    w("## Run")
    w("")
    for m in a.meta:
        k, _, v = m.partition("=")
        w(f"- {k}: {v}")
    if drained:
        w(f"- sizes: {a.sizes}; rounds: {a.rounds}")
    else:
        w("- drain: not run (DRAIN=0)")
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
