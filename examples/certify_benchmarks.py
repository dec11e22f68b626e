"""Compress + certify the issue-5 benchmark set; report analysis vs certification time.

    python examples/certify_benchmarks.py --digits              # the l1 digits nets (2x25, 2x50, 2x100)
    python examples/certify_benchmarks.py --acas 1-9 --props 1-4
    python examples/certify_benchmarks.py --acas 1 --props 3 --out out/cert

Each row runs ``leo-verify compress`` (analysis, rewrite, certification with
ONNX emitted and read back, proofs/ written) and then ``leo-verify recheck``
on the output folder, both in-process, and prints: neurons before/after,
verdict, obligations, eps, analysis s, certification s, recheck s, and the
verdict of ``leo-verify check A OUT/compressed.* --epsilon EPS`` at the eps
the certificate proved (EQUIVALENT: the kernel re-checks OUT with A pinned).  Rows are
appended as JSON lines to ``OUT/results.jsonl``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "..", "shared", "benchmarks")


def _range(spec: str) -> list[int]:
    out = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def run_one(model: str, domain: str, out: str, *, query_time_limit: float, certify_time_limit: float) -> dict:
    from leo_verify.cli import main
    buf = io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(buf):
        # --no-checkpoint: a benchmark must not resume an analysis journal of an earlier run
        code = main(["compress", model, "--domain", domain, "-o", out, "--query-time-limit", str(query_time_limit),
                     "--certify-time-limit", str(certify_time_limit), "--no-checkpoint", "--no-progress"])
    t1 = time.monotonic()
    if not os.path.exists(os.path.join(out, "report.json")):  # compress failed: say so, go on
        return {"model": os.path.basename(model), "domain": os.path.basename(domain), "exit": code,
                "verdict": f"error (exit {code})", "output": buf.getvalue()[-2000:]}
    with contextlib.redirect_stdout(io.StringIO()):
        recheck_code = main(["recheck", out])
    t2 = time.monotonic()
    with open(os.path.join(out, "report.json")) as fh:
        rep = json.load(fh)
    cert = rep["certificate"]
    # issue 16: `check A OUT/compressed.onnx` at the eps compress proved must be EQUIVALENT
    eps = {k: v["float"] for k, v in cert.get("epsilon", {}).items()}
    check_verdicts = {}
    for name, e in eps.items():
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            check_code = main(["check", model, os.path.join(out, name), "--domain", domain,
                               "--epsilon", repr(e), "--no-progress"])
        check_verdicts[name] = {0: "equivalent", 1: "counterexample", 2: "unknown"}.get(check_code, f"exit {check_code}")
    t3 = time.monotonic()
    return {"model": os.path.basename(model), "domain": os.path.basename(domain), "exit": code,
            "recheck_exit": recheck_code, "neurons": [rep["before"]["neurons"], rep["after"]["neurons"]],
            "verdict": cert["verdict"], "obligations": cert["obligations"],
            "open": [o["id"] for o in cert["open"]],
            "eps": {k: v["float"] for k, v in cert.get("epsilon", {}).items()},
            "analysis_s": rep["timings"]["analysis"],
            "certify_s": (rep["timings"].get("certification") or 0) + (rep["timings"].get("exact_claims") or 0),
            "claims_not_proven": len(rep.get("claims", {}).get("not_proven", {})),
            "stability_s": cert["timings"].get("stability"), "compress_wall_s": round(t1 - t0, 1),
            "recheck_s": round(t2 - t1, 1), "check": check_verdicts, "check_s": round(t3 - t2, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--digits", action="store_true")
    ap.add_argument("--acas", default=None, help="e.g. 1-9")
    ap.add_argument("--props", default="1-4")
    ap.add_argument("--out", default="out/certify")
    ap.add_argument("--query-time-limit", type=float, default=10.0)
    ap.add_argument("--certify-time-limit", type=float, default=30.0)
    args = ap.parse_args(argv)
    jobs = []
    if args.digits:
        d = os.path.join(HERE, "nets", "digits")
        for shape in ("25x25", "50x50", "100x100"):
            for l1 in ("2e-04", "1e-03"):
                jobs.append((os.path.join(d, f"digits_64x{shape}x10_l1_{l1}.onnx"), "box:0,1"))
    if args.acas:
        for n in _range(args.acas):
            for p in _range(args.props):
                jobs.append((os.path.join(BENCH, "acasxu", f"ACASXU_run2a_1_{n}_batch_2000.onnx"),
                             os.path.join(BENCH, "acasxu", f"prop_{p}.vnnlib")))
    os.makedirs(args.out, exist_ok=True)
    print(f"{'model':44s} {'domain':14s} {'neurons':>9s} {'verdict':14s} {'oblig':>11s} {'eps':>9s} "
          f"{'analysis':>8s} {'certify':>8s} {'recheck':>8s}  check A OUT/compressed at eps")
    bad = 0
    for model, domain in jobs:
        tag = os.path.basename(model).replace(".onnx", "") + "_" + os.path.basename(domain).replace(".vnnlib", "").replace(":", "").replace(",", "_")
        row = run_one(model, domain, os.path.join(args.out, tag), query_time_limit=args.query_time_limit,
                      certify_time_limit=args.certify_time_limit)
        with open(os.path.join(args.out, "results.jsonl"), "a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
        if "obligations" not in row:
            print(f"{row['model'][:44]:44s} {row['domain'][:14]:14s} {row['verdict']}", flush=True)
            bad += 1
            continue
        ob = row["obligations"]
        eps = max(row["eps"].values()) if row["eps"] else float("nan")
        print(f"{row['model'][:44]:44s} {row['domain'][:14]:14s} {row['neurons'][0]:>4d}->{row['neurons'][1]:<4d} "
              f"{row['verdict']:14s} {ob['proven'] + ob.get('passed', 0):>5d}/{ob['total']:<5d} {eps:>9.2g} "
              f"{row['analysis_s']:>8.1f} {row['certify_s']:>8.1f} {row['recheck_s']:>8.1f}  "
              f"{','.join(sorted(set(row['check'].values()))) or '-'} ({row['check_s']:.1f} s)"
              + (f"  claims not re-proved (neurons kept): {row['claims_not_proven']}" if row["claims_not_proven"] else "")
              + (f"  open: {', '.join(row['open'][:4])}" if row["open"] else ""), flush=True)
        bad += (row["verdict"] != "certified" or row["recheck_exit"] != 0
                or any(v != "equivalent" for v in row["check"].values()))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
