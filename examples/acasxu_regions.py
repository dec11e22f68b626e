#!/usr/bin/env python
"""Compress ACAS Xu over property regions and time a downstream MILP on both networks.

A network is often used (and verified) on one operating region only.  Over the
input box of a VNN-COMP ACAS Xu property many ReLUs are stable, so
leo_verify can remove them *on that box* without changing a single output.
For each ACAS Xu net 1_k (``../shared/benchmarks/acasxu``) and each property
box (``prop_1`` .. ``prop_4``) this script

1. compresses and certifies (``leo_verify.compressor.compress(net, box, ...)``):
   neurons, parameters and hidden layers before and after, the verdict;
2. runs a typical downstream check on the original and on the compressed
   network (the float32 ONNX that ``compress`` emits, read back): the exact
   range of every output over the box, i.e. ``max`` and ``min`` of each of
   the 5 outputs, one MILP each (``leo_verify.analysis.milp.encode`` with sound
   symbolic bounds, ``leo_verify.analysis.backends`` SCIP, a time limit per
   query), and prints the number of binaries, the solve times, how many
   queries were solved to optimality, the largest optimality gap left at the
   time limit, and the largest difference between the two networks' optima
   (at most the certified eps when both were solved to optimality).

The compressed MILP is smaller in two ways: fewer neurons and parameters, and
fewer binaries: the compression has *built in* the stability facts that the
analysis proved with LP/MILP and input splitting, which the downstream
encoder's own sound (CROWN) bounds cannot prove.  Measured on net 1_1 (2 cores,
shared): prop_4 box, 300 -> 120 neurons, 83 -> 69 binaries, the range of
output 0 in 53.8 s (one query open at 30 s) vs 35.0 s (both optimal, same
optima within 3e-8); prop_3 box, 300 -> 126 neurons, 110 -> 79 binaries,
neither solved in 30 s per query (gaps 0.32 vs 0.28).

Usage::

    python examples/acasxu_regions.py --quick             # net 1_1, props 3, 4, output 0 (~3-5 min)
    python examples/acasxu_regions.py --nets 1-3 --props 3,4
    python examples/acasxu_regions.py                     # 9 nets x 4 props x 5 outputs (hours)
    python examples/acasxu_regions.py --quick --milp-time-limit 5 --out out/acas

Exit status: 0 when every compression is certified, 1 otherwise, 3 on a usage
error, 4 when the benchmark folder is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "benchmarks", "acasxu"))


def parse_range(spec: str, lo: int, hi: int) -> list[int]:
    """``"1-3"``, ``"3,4"``, ``"1-2,5"`` -> sorted distinct ints in ``[lo, hi]``."""
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        a, _, b = part.partition("-")
        a, b = int(a), int(b or a)
        if a > b or a < lo or b > hi:
            raise ValueError(f"{part!r} is not a range within {lo}-{hi}")
        out.update(range(a, b + 1))
    if not out:
        raise ValueError("empty selection")
    return sorted(out)


def output_ranges(graph, box, *, time_limit: float, outputs=None) -> dict:
    """Max and min of each output (default: all) over ``box``: one SCIP MILP each, timed.

    The MILP is encoded once (sound CROWN bounds for the big-M constants) and
    re-solved with each objective; the box centre is the start solution.
    """
    from leo_verify.analysis.backends import Session
    from leo_verify.analysis.bounds import compute_bounds
    from leo_verify.analysis.milp import encode

    t0 = time.perf_counter()
    bounds = compute_bounds(graph, box, method="symbolic")
    enc = encode(graph, box, bounds)
    sess = Session(enc.program, backend="scip", hint=enc.assignment((box.lower + box.upper) / 2))
    build = time.perf_counter() - t0
    queries = []
    out = graph.output_name
    for i in (range(graph.output_size) if outputs is None else outputs):
        v = enc.var(out, i)
        for sense in ("max", "min"):
            r = sess.solve({v: 1.0}, sense=sense, time_limit=time_limit)
            gap = (abs(r.dual - r.primal) if r.dual is not None and r.primal is not None
                   else float("inf"))
            queries.append({"output": i, "sense": sense, "status": r.status, "primal": r.primal,
                            "dual": r.dual, "gap": gap, "time": round(r.time, 3), "nodes": r.nodes})
    return {"binaries": len(enc.binaries), "variables": enc.program.num_vars,
            "rows": enc.program.num_rows, "build_s": round(build, 3),
            "solve_s": round(sum(q["time"] for q in queries), 3),
            "total_s": round(time.perf_counter() - t0, 3),
            "optimal": sum(q["status"] == "optimal" for q in queries),
            "max_gap": max((q["gap"] for q in queries), default=0.0),
            "queries": queries}


def compare_optima(a: dict, b: dict) -> float | None:
    """Largest |optimum_a - optimum_b| over the queries both solved to optimality."""
    gaps = [abs(qa["primal"] - qb["primal"]) for qa, qb in zip(a["queries"], b["queries"])
            if qa["status"] == qb["status"] == "optimal"]
    return max(gaps) if gaps else None


def run_case(net: int, prop: int, args) -> dict:
    from leo_verify.compressor import compress
    from leo_verify.domain import parse_domain
    from leo_verify.io import load
    from leo_verify.io.onnx import graph_from_onnx_model, to_onnx_model

    model = os.path.join(BENCH, f"ACASXU_run2a_1_{net}_batch_2000.onnx")
    vnnlib = os.path.join(BENCH, f"prop_{prop}.vnnlib")
    box = parse_domain(vnnlib, n=5)
    t0 = time.perf_counter()
    res = compress(model, box, query_time_limit=args.query_time_limit,
                   certify_options={} if args.certify_time_limit is None else
                   {"time_limit": args.certify_time_limit})
    comp_s = time.perf_counter() - t0
    rep = res.report
    cert = rep["certificate"]
    row = {"net": f"1_{net}", "prop": prop, "box": [box.lower.tolist(), box.upper.tolist()],
           "neurons": [rep["before"]["neurons"], rep["after"]["neurons"]],
           "parameters": [rep["before"]["parameters"], rep["after"]["parameters"]],
           "hidden_layers": [rep["before"]["hidden_layers"], rep["after"]["hidden_layers"]],
           "widths": [rep["before"]["widths"], rep["after"]["widths"]],
           "facts": rep["facts"]["counts"], "verdict": cert["verdict"],
           "open": cert.get("open", []),
           "epsilon": max((v["float"] for v in cert.get("epsilon", {}).values()), default=None),
           "analysis_s": rep["timings"].get("analysis"),
           "certify_s": round(rep["timings"].get("exact_claims", 0.0)
                              + rep["timings"].get("certification", 0.0), 3),
           "compress_s": round(comp_s, 2)}
    if args.out:
        d = os.path.join(args.out, f"acasxu_1_{net}_prop_{prop}")
        os.makedirs(d, exist_ok=True)
        res.to_onnx(os.path.join(d, "compressed.onnx"))
        with open(os.path.join(d, "report.json"), "w", encoding="utf-8") as fh:
            json.dump(rep, fh, indent=1, default=str)
    if not args.no_milp:
        print(f"  1_{net} prop_{prop}: compressed in {comp_s:.1f} s ({row['verdict']}), "
              f"running the output-range MILPs ...", file=sys.stderr, flush=True)
        original = load(model)
        emitted = graph_from_onnx_model(to_onnx_model(res.graph))  # the file a user deploys
        row["milp_original"] = output_ranges(original, box, time_limit=args.milp_time_limit,
                                             outputs=args.outputs)
        row["milp_compressed"] = output_ranges(emitted, box, time_limit=args.milp_time_limit,
                                               outputs=args.outputs)
        row["max_optimum_diff"] = compare_optima(row["milp_original"], row["milp_compressed"])
    return row


HEADER = (f"{'net':5s} {'prop':>4s} {'neurons':^12s} {'parameters':^16s} {'layers':^6s} "
          f"{'verdict':>10s} {'compress s':>10s} || {'orig: bin':>9s} {'s':>6s} {'opt':>5s} "
          f"{'gap':>7s} | {'comp: bin':>9s} {'s':>6s} {'opt':>5s} {'gap':>7s} | {'speed-up':>8s} "
          f"{'max|diff|':>9s}")


def _gap(v: float) -> str:
    return "inf" if v == float("inf") else f"{v:.1e}" if v else "0"


def format_row(r: dict) -> str:
    n, p, l = r["neurons"], r["parameters"], r["hidden_layers"]
    s = (f"{r['net']:5s} {r['prop']:>4d} {n[0]:>4d} -> {n[1]:<4d} {p[0]:>6d} -> {p[1]:<6d} "
         f"{l[0]:>2d}->{l[1]:<2d} {r['verdict']:>10s} {r['compress_s']:>10.1f}")
    if "milp_original" in r:
        a, b = r["milp_original"], r["milp_compressed"]
        nq = len(a["queries"])
        speed = a["total_s"] / b["total_s"] if b["total_s"] > 0 else float("inf")
        diff = r["max_optimum_diff"]
        s += (f" || {a['binaries']:>9d} {a['total_s']:>6.1f} {a['optimal']:>2d}/{nq:<2d} "
              f"{_gap(a['max_gap']):>7s} | {b['binaries']:>9d} {b['total_s']:>6.1f} "
              f"{b['optimal']:>2d}/{nq:<2d} {_gap(b['max_gap']):>7s} | {speed:>7.1f}x "
              f"{'n/a' if diff is None else format(diff, '.1e'):>9}")
    return s


LEGEND = ("bin = binaries of the MILP (ReLUs not proven stable by its sound CROWN bounds); s = MILP "
          "seconds (encoding + all queries); opt = queries solved to optimality within the time limit; "
          "gap = largest |dual bound - best solution| of a query (0: all optimal); speed-up = original "
          "s / compressed s; max|diff| = largest difference between the two networks' optima (queries "
          "both solved)")


def _write(out: str, rows, args, total: float) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as fh:
        json.dump({"rows": rows, "milp_time_limit": args.milp_time_limit,
                   "total_s": round(total, 1)}, fh, indent=1, default=str)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="1-9", help="ACAS Xu nets 1_k, e.g. 1-3 or 1,4 (default 1-9)")
    ap.add_argument("--props", default="1-4", help="property boxes, e.g. 3,4 (default 1-4)")
    ap.add_argument("--quick", action="store_true",
                    help="net 1_1, props 3 and 4, output 0 (COC) only")
    ap.add_argument("--outputs", default=None,
                    help="outputs whose range is computed, e.g. 0 or 0-4 (default all 5; --quick: 0)")
    ap.add_argument("--milp-time-limit", type=float, default=30.0, metavar="S",
                    help="seconds per output-range MILP query (2 per output and network; default 30)")
    ap.add_argument("--no-milp", action="store_true", help="compress and certify only")
    ap.add_argument("--query-time-limit", type=float, default=10.0, metavar="S",
                    help="seconds per MILP query of the stability analysis (default 10)")
    ap.add_argument("--certify-time-limit", type=float, default=None, metavar="S",
                    help="seconds per stability claim in the exact re-proof (default: leo_verify's)")
    ap.add_argument("--out", default=None, metavar="DIR",
                    help="write DIR/acasxu_1_<k>_prop_<p>/{compressed.onnx,report.json} and DIR/results.json")
    try:
        args = ap.parse_args(argv)
        nets = [1] if args.quick else parse_range(args.nets, 1, 9)
        props = [3, 4] if args.quick else parse_range(args.props, 1, 4)
        if args.outputs is not None:
            args.outputs = parse_range(args.outputs, 0, 4)
        elif args.quick:
            args.outputs = [0]
        if min(args.milp_time_limit, args.query_time_limit, args.certify_time_limit or 1) <= 0:
            raise ValueError("time limits must be > 0")
    except SystemExit as exc:
        return 3 if exc.code else 0
    except ValueError as exc:
        print(f"acasxu_regions: error: {exc}", file=sys.stderr)
        return 3
    if not os.path.isdir(BENCH):
        print(f"acasxu_regions: error: benchmark folder {BENCH} not found", file=sys.stderr)
        return 4

    t0 = time.perf_counter()
    print(f"ACAS Xu nets {', '.join(f'1_{k}' for k in nets)} x props {', '.join(map(str, props))}; "
          f"downstream check: max and min of each output over the box (SCIP MILP, "
          f"{args.milp_time_limit:g} s per query, outputs "
          f"{'all' if args.outputs is None else ','.join(map(str, args.outputs))})" if not args.no_milp else
          f"ACAS Xu nets {', '.join(f'1_{k}' for k in nets)} x props {', '.join(map(str, props))}")
    print(HEADER.split(" ||")[0] if args.no_milp else HEADER, flush=True)
    rows = []
    for k in nets:
        for p in props:
            row = run_case(k, p, args)
            rows.append(row)
            print(format_row(row), flush=True)
            if args.out:  # partial results survive an interrupted long run
                _write(args.out, rows, args, time.perf_counter() - t0)
    total = time.perf_counter() - t0
    for r in rows:
        if r["verdict"] != "certified":
            print(f"NOT CERTIFIED 1_{r['net']} prop_{r['prop']}: " +
                  "; ".join(f"{o['id']}: {o.get('detail', '')}"[:160] for o in r["open"][:5]))
    with_milp = [r for r in rows if "milp_original" in r]
    if with_milp:
        a = sum(r["milp_original"]["total_s"] for r in with_milp)
        b = sum(r["milp_compressed"]["total_s"] for r in with_milp)
        print(f"downstream MILP total: original {a:.1f} s, compressed {b:.1f} s"
              + (f" ({a / b:.1f}x)" if b > 0 else ""))
        print(LEGEND)
    print(f"total wall time {total:.1f} s")
    if args.out:
        _write(args.out, rows, args, total)
    return 0 if all(r["verdict"] == "certified" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
