#!/usr/bin/env python
"""Equivalence benchmark: pruned, noised and float16 pairs, as the differential-verification papers build them.

For each network A of the shared benchmarks (``../shared/benchmarks``) and each
transformation B = T(A):

* ``prune-1%``, ``prune-5%``, ``prune-10%``: global magnitude pruning (the
  smallest |w| of all weight matrices set to 0), float32;
* ``fp16``: every weight and bias rounded to float16 (then stored as float32);
* ``prune-5%+noise``: 5 % pruning plus a relative weight noise of 0.5 % (a
  stand-in for "pruning plus a few retraining steps", which moves every weight
  a little),

``check A B`` is asked three questions on each domain: ``--epsilon 0.05``,
``--epsilon 0.01`` and ``--top1``, with ``--time-limit 60``.  The domains:
ACAS Xu 1_1 and 1_2 over the prop_1..4 input boxes, ``mnist-net_256x2`` over
its two L-inf balls, the RL controllers over their two boxes each.

Printed per pair: verdict, seconds, the method that decided and each stage's
seconds; at the end the share of pairs with a definite verdict (equivalent,
exact, or a replayed counterexample).  ``--quick`` runs a subset (CI).

Usage::

    python examples/equivalence_pairs.py --out out/pairs        # the full table (~1 h on 2 cores)
    python examples/equivalence_pairs.py --quick                # RL + ACAS 1_1 prop_3, a few pairs
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SHARED = os.path.join(os.path.dirname(REPO), "shared", "benchmarks")


def transform(graph, kind: str, *, seed: int = 0):
    """B = T(A) (see the module docstring)."""
    from leo_verify.graph import Affine
    g = graph.copy()
    affines = [n for n, op in g.items() if op.kind == "affine"]
    if kind.startswith("prune"):
        frac = float(kind.split("-")[1].split("%")[0]) / 100
        ws = np.concatenate([np.abs(g.op(n).weight).ravel() for n in affines])
        thr = np.quantile(ws, frac)
        rng = np.random.default_rng(seed)
        for n in affines:
            op = g.op(n)
            w = op.weight.copy()
            w[np.abs(w) < thr] = 0.0
            if kind.endswith("+noise"):
                w = w * (1 + 0.005 * rng.uniform(-1, 1, w.shape))
            g.replace(n, Affine(w.astype(np.float32).astype(np.float64), op.bias))
        return g
    if kind == "fp16":
        for n in affines:
            op = g.op(n)
            g.replace(n, Affine(op.weight.astype(np.float16).astype(np.float64),
                                op.bias.astype(np.float16).astype(np.float64)))
        return g
    raise ValueError(kind)


def cases(quick: bool):
    acas = os.path.join(SHARED, "acasxu")
    if quick:
        yield ("cartpole", os.path.join(SHARED, "rl", "cartpole.onnx"),
               os.path.join(SHARED, "rl", "cartpole_case_safe_14.vnnlib"))
        yield ("acas 1_1 prop_3", os.path.join(acas, "ACASXU_run2a_1_1_batch_2000.onnx"),
               os.path.join(acas, "prop_3.vnnlib"))
        return
    for net in ("1_1", "1_2"):
        for p in (1, 2, 3, 4):
            yield (f"acas {net} prop_{p}", os.path.join(acas, f"ACASXU_run2a_{net}_batch_2000.onnx"),
                   os.path.join(acas, f"prop_{p}.vnnlib"))
    mn = os.path.join(SHARED, "mnistfc")
    for prop in ("prop_0_0.03", "prop_1_0.05"):
        yield (f"mnist 256x2 {prop}", os.path.join(mn, "mnist-net_256x2.onnx"), os.path.join(mn, prop + ".vnnlib"))
    rl = os.path.join(SHARED, "rl")
    for net, props in (("cartpole", ("case_safe_14", "case_safe_27")), ("lunarlander", ("case_safe_1", "case_safe_10"))):
        for p in props:
            yield (f"{net} {p}", os.path.join(rl, f"{net}.onnx"), os.path.join(rl, f"{net}_{p}.vnnlib"))


QUESTIONS = (("epsilon", 0.05), ("epsilon", 0.01), ("top1", 0.0))
KINDS = ("prune-1%", "prune-5%", "prune-10%", "fp16", "prune-5%+noise")


def run(quick: bool, time_limit: float, out: str | None, *, kinds=None, only=None, workers: int = 2) -> int:
    from leo_verify.certify.union_check import check_union
    from leo_verify.domain import parse_union
    from leo_verify.io import load
    kinds = kinds or (("prune-5%", "fp16") if quick else KINDS)
    rows = []
    for label, net, dom in cases(quick):
        if only and not any(o in label for o in only):
            continue
        f = load(net)
        domain = parse_union([dom], n=f.input_size)
        for kind in kinds:
            g = transform(f, kind)
            for mode, eps in QUESTIONS:
                t0 = time.perf_counter()
                r = check_union(f, g, domain, mode=mode, epsilon=eps, time_limit=time_limit, workers=workers)
                wall = time.perf_counter() - t0
                row = {"case": label, "pair": kind, "question": mode if mode == "top1" else f"eps {eps:g}",
                       "verdict": r.verdict, "method": r.method, "seconds": round(wall, 2),
                       "certificate": r.certificate is not None,
                       "stages": {s["stage"]: round(s["time"], 2) for s in r.stages}}
                rows.append(row)
                print(f"{label:24s} {kind:16s} {row['question']:9s} {r.verdict:14s} {wall:6.1f} s "
                      f"{r.method or '-':10s} " + " ".join(f"{k} {v}" for k, v in row["stages"].items()),
                      flush=True)
    definite = sum(r["verdict"] != "unknown" for r in rows)
    in_time = sum(r["verdict"] != "unknown" and r["seconds"] <= time_limit for r in rows)
    print(f"\n{definite} of {len(rows)} pairs definite ({100 * definite / len(rows):.0f} %), "
          f"{in_time} within {time_limit:g} s")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "pairs.json"), "w") as fh:
            json.dump(rows, fh, indent=1)
        with open(os.path.join(out, "pairs.md"), "w") as fh:
            fh.write(table(rows) + "\n")
    return 0


def table(rows) -> str:
    """Per (case, question): verdict counts over the pair kinds and the median seconds."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["case"], r["question"]), []).append(r)
    lines = ["| case | question | equivalent | counterexample | unknown | median s | max s |", "|---|---|---|---|---|---|---|"]
    for (case, q), rs in groups.items():
        c = {v: sum(r["verdict"] == v for r in rs) for v in ("equivalent", "counterexample", "unknown")}
        secs = sorted(r["seconds"] for r in rs)
        lines.append(f"| {case} | {q} | {c['equivalent']} | {c['counterexample']} | {c['unknown']} | "
                     f"{secs[len(secs) // 2]:.1f} | {secs[-1]:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="cartpole and ACAS 1_1 prop_3, 2 pair kinds")
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per check (default: 60)")
    ap.add_argument("--out", default=None, help="write pairs.json and pairs.md there")
    ap.add_argument("--workers", type=int, default=2, help="check's exact re-proof processes (default: 2)")
    ap.add_argument("--kinds", nargs="+", default=None, choices=KINDS, help="pair kinds (default: all)")
    ap.add_argument("--only", nargs="+", default=None, help="only cases whose label contains one of these")
    args = ap.parse_args(argv)
    return run(args.quick, args.time_limit, args.out, kinds=args.kinds, only=args.only, workers=args.workers)


if __name__ == "__main__":
    sys.exit(main())
