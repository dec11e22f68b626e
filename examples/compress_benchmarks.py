"""Compress the benchmark nets and check each compression against its original.

For every (net, domain): compress (fast analysis, exact rewrite), then compare
original and compressed in float64 on 10^4 random points plus domain corners
and edge points (tolerance 1e-6), check the neuron count dropped wherever a
neuron was proven stable, and that the report's counts match the facts.

    python examples/compress_benchmarks.py [--digits] [--acas NETS] [--query-time-limit S]

``--acas 1-9`` (or ``1,2,5``) selects ACAS Xu nets 1_k over prop_1..prop_4.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "benchmarks"))


def test_points(box, rng, n=10_000):
    d = box.size
    span = box.upper - box.lower
    pts = [box.sample(n, rng), box.lower + rng.integers(0, 2, size=(min(2 ** d, 4096), d)) * span]
    edge = box.lower + rng.integers(0, 2, size=(1000, d)) * span
    k = rng.integers(0, d, size=1000)
    edge[np.arange(1000), k] = box.lower[k] + rng.random(1000) * span[k]
    pts.append(edge)
    return np.vstack(pts)


def check(name, net, dom, args) -> dict:
    from leo_verify.compressor import compress
    from leo_verify.domain import parse_domain
    from leo_verify.io import load
    from leo_verify.semantics import evaluate

    g = load(net)
    box = parse_domain(dom, n=g.input_size)
    t = time.perf_counter()
    res = compress(net, box, query_time_limit=args.query_time_limit)
    wall = time.perf_counter() - t
    x = test_points(box, np.random.default_rng(0))
    diff = float(np.max(np.abs(evaluate(res.graph, x) - evaluate(g, x))))
    rep = res.report
    counts = res.facts.counts()
    stable = counts["stably_active"] + counts["stably_inactive"]
    kept = sum(v["kept"] for v in rep["neurons"].values())
    ok = (diff <= 1e-6 and (rep["after"]["neurons"] < rep["before"]["neurons"] or stable == 0)
          and rep["facts"]["counts"] == counts and kept == rep["after"]["neurons"]
          and all(v["kept"] for v in rep["neurons"].values() if v["status"] in ("unstable", "unknown")))
    row = {"net": name, "before": rep["before"]["neurons"], "after": rep["after"]["neurons"],
           "layers_before": rep["before"]["hidden_layers"], "layers_after": rep["after"]["hidden_layers"],
           "params_before": rep["before"]["parameters"], "params_after": rep["after"]["parameters"],
           **counts, "max_abs_diff": diff, "points": len(x), "seconds": round(wall, 2), "ok": ok}
    print(f"{name:34s} neurons {row['before']:4d} -> {row['after']:4d}  layers {row['layers_before']} -> "
          f"{row['layers_after']}  params {row['params_before']:6d} -> {row['params_after']:6d}  "
          f"unknown {counts['unknown']:2d}  max|diff| {diff:.2e} on {len(x)} pts  {wall:7.1f}s  "
          f"{'OK' if ok else 'FAIL'}", flush=True)
    return row


def cases(args):
    if args.digits:
        with open(os.path.join(HERE, "nets", "digits", "manifest.json")) as fh:
            for e in json.load(fh)["nets"]:
                yield e["file"], os.path.join(HERE, "nets", "digits", e["file"]), "box:0,1"
    if args.acas:
        parts = args.acas.split("-")
        nets = range(int(parts[0]), int(parts[-1]) + 1) if len(parts) == 2 else [int(v) for v in args.acas.split(",")]
        for i in nets:
            for p in range(1, 5):
                yield (f"acas_1_{i}/prop_{p}", os.path.join(BENCH, "acasxu", f"ACASXU_run2a_1_{i}_batch_2000.onnx"),
                       os.path.join(BENCH, "acasxu", f"prop_{p}.vnnlib"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digits", action="store_true")
    ap.add_argument("--acas", default=None, metavar="NETS")
    ap.add_argument("--query-time-limit", type=float, default=30.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = [check(n, net, dom, args) for n, net, dom in cases(args)]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    bad = [r["net"] for r in rows if not r["ok"]]
    print(f"{len(rows) - len(bad)} passed, {len(bad)} failed" + (f": {bad}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
