#!/usr/bin/env python3
"""Fallback for bench/run.sh when hyperfine is not available: time commands
run one after another, without a shell (like `hyperfine -N`), interleaving
the commands run by run so that noise hits them alike. Writes a JSON file in
the shape of hyperfine's --export-json (results[].command/.times/.median, in
seconds), which bench/report.py reads.

usage: uncontended.py --rounds R --runs N --warmup W --json OUT NAME=COMMAND...
"""

import argparse
import json
import os
import shlex
import statistics
import sys
import time


def run_once(argv):
    """Spawn argv (PATH lookup, no shell), wait for it; seconds and status."""
    t0 = time.perf_counter_ns()
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    _, status = os.waitpid(pid, 0)
    t1 = time.perf_counter_ns()
    return (t1 - t0) / 1e9, os.waitstatus_to_exitcode(status)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--json", required=True)
    ap.add_argument("commands", nargs="+", metavar="NAME=COMMAND")
    a = ap.parse_args()
    cmds = []
    for c in a.commands:
        name, _, line = c.partition("=")
        cmds.append((name, shlex.split(line)))
    times = {name: [] for name, _ in cmds}
    for _ in range(a.warmup):
        for name, argv in cmds:
            run_once(argv)
    for _ in range(a.rounds * a.runs):
        for name, argv in cmds:
            t, code = run_once(argv)
            if code != 0:
                print(f"uncontended: {name} exited {code}", file=sys.stderr)
                sys.exit(1)
            times[name].append(t)
    results = []
    for name, _ in cmds:
        ts = times[name]
        med = statistics.median(ts)
        results.append({"command": name, "times": ts, "median": med,
                        "mean": statistics.fmean(ts)})
        print(f"{name:8s} median {med * 1e3:8.3f} ms over {len(ts)} runs",
              file=sys.stderr)
    with open(a.json, "w") as f:
        json.dump({"results": results}, f)


if __name__ == "__main__":
    main()
