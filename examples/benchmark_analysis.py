"""Benchmark the three stability methods on the same nets, in the same run.

For each (net, domain) it prints neurons per status, MILPs (and LPs) solved
and wall time per method, whether the stable sets agree, and the ratios
leo/fast and isa/fast.  Nets:

* the l1-trained digits MLPs of ``examples/nets/digits`` over [0,1]^64;
* ACAS Xu 1_1..1_9 over the boxes of prop_1..prop_4 (``--acas``);
* mnist-net_256x2 over its two VNNLIB balls (``--mnist``).

Usage::

    python examples/benchmark_analysis.py [--digits] [--acas] [--mnist]
        [--methods fast,leo,isa] [--query-time-limit S] [--budget S] [--json OUT]

A method whose run hit its budget is marked ``incomplete``; agreement is only
claimed between complete runs with no query timeouts.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "benchmarks"))


def cases(args):
    if args.digits:
        manifest = os.path.join(HERE, "nets", "digits", "manifest.json")
        with open(manifest) as fh:
            entries = json.load(fh)
        entries = entries.get("nets", entries) if isinstance(entries, dict) else entries
        for e in entries:
            path = os.path.join(HERE, "nets", "digits", e["file"])
            if args.filter and args.filter not in e["file"]:
                continue
            yield os.path.basename(path), path, "box:0,1"
    if args.acas:
        for i in range(1, 10):
            for p in range(1, 5):
                net = os.path.join(BENCH, "acasxu", f"ACASXU_run2a_1_{i}_batch_2000.onnx")
                yield f"acas_1_{i}/prop_{p}", net, os.path.join(BENCH, "acasxu", f"prop_{p}.vnnlib")
    if args.mnist:
        for prop in sorted(glob.glob(os.path.join(BENCH, "mnistfc", "prop_*.vnnlib"))):
            yield f"mnist256x2/{os.path.basename(prop)}", os.path.join(BENCH, "mnistfc", "mnist-net_256x2.onnx"), prop


def timeouts(facts) -> int:
    return sum(1 for f in facts for q in f.stats.get("queries", [])
               if q.get("verdict") in ("timeout", "error"))


def main(argv=None) -> int:
    from leo_verify.analysis import analyze
    from leo_verify.domain import parse_domain
    from leo_verify.io import load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digits", action="store_true")
    ap.add_argument("--acas", action="store_true")
    ap.add_argument("--mnist", action="store_true")
    ap.add_argument("--filter", default="", help="only digits nets whose file name contains this")
    ap.add_argument("--methods", default="fast,leo,isa")
    ap.add_argument("--solver", default="scip")
    ap.add_argument("--query-time-limit", type=float, default=60.0)
    ap.add_argument("--budget", type=float, default=None, help="seconds per method and net")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    if not (args.digits or args.acas or args.mnist):
        args.digits = True
    methods = args.methods.split(",")
    rows = []
    head = f"{'net':34s} {'method':6s} {'active':>6s} {'inact':>6s} {'unst':>5s} {'unk':>5s} " \
           f"{'milp':>5s} {'lp':>5s} {'to':>3s} {'time_s':>8s}  note"
    print(head)
    for name, net, dom in cases(args):
        g = load(net)
        box = parse_domain(dom, n=g.input_size)
        res = {}
        for m in methods:
            t = time.perf_counter()
            facts = analyze(g, box, method=m, solver=args.solver,
                            query_time_limit=args.query_time_limit, budget=args.budget)
            wall = time.perf_counter() - t
            c = facts.counts()
            res[m] = (facts, wall)
            note = "" if facts.complete else "incomplete"
            row = {"net": name, "method": m, **c, "milp": facts.meta["counters"]["milp_queries"],
                   "lp": facts.meta["counters"]["lp_queries"], "timeouts": timeouts(facts),
                   "time": round(wall, 3), "complete": facts.complete}
            rows.append(row)
            print(f"{name:34s} {m:6s} {c['stably_active']:6d} {c['stably_inactive']:6d} "
                  f"{c['unstable']:5d} {c['unknown']:5d} {row['milp']:5d} {row['lp']:5d} "
                  f"{row['timeouts']:3d} {wall:8.2f}  {note}", flush=True)
        if "fast" in res:
            ff, tf = res["fast"]
            for m in ("leo", "isa"):
                if m in res:
                    fm, tm = res[m]
                    clean = ff.complete and fm.complete and not timeouts(ff) and not timeouts(fm)
                    same = fm.stable_map() == ff.stable_map()
                    verdict = ("same stable set" if same else "DIFFERENT stable sets") if clean \
                        else ("same" if same else "differ") + " (not comparable: timeouts/budget)"
                    print(f"{'':34s} {m}/fast = {tm / max(tf, 1e-9):.1f}x  {verdict}", flush=True)
                    rows.append({"net": name, "ratio": f"{m}/fast", "value": round(tm / max(tf, 1e-9), 2),
                                 "same_stable_set": same, "comparable": clean})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
