"""Soak test: many `analyze` runs back to back in ONE process.

Runs the stability analysis on the ACAS Xu networks 1_1..1_9 over the boxes of
prop_1..prop_4 (36 runs by default, roughly 20-40 minutes on one core), and

* records the resident memory (VmRSS, after a garbage collection) and the wall
  time of every run, and checks that memory stays flat: the growth from run
  ``--warmup`` (default 5) to the last run must stay below ``--max-growth-mb``;
* checks that every run's facts equal that box's *single-run* facts, compared
  in canonical form (timing fields and the checkpoint record left out, see
  :func:`leo_verify.analysis.facts.canonical_facts`):
  ``--compare subprocess`` (default) runs each box again in a fresh
  ``leo-verify analyze`` process; ``--compare pass2`` runs the whole list a
  second time in this process; ``--compare none`` skips the check.

Examples::

    python examples/soak_analyze.py                        # all 36 runs
    python examples/soak_analyze.py --nets 1-2 --props 3,4 # 4 runs
    python examples/soak_analyze.py --nets 1-9 --props 4 --compare pass2 -o soak.json

Exit code 0 when memory stayed flat and every run agreed with its single run,
else 1.  Runs where a MILP query hit ``--query-time-limit`` may legitimately
differ (where a solver stops on the clock depends on the machine's load);
they are counted apart and do not fail the soak.
No checkpoint is read or written (each run computes everything).
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "benchmarks" / "acasxu"


def rss_mb() -> float:
    """Current resident set size (VmRSS) in MiB; the peak (ru_maxrss) where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def parse_range(text: str, lo: int, hi: int) -> list[int]:
    """"1-3,7" -> [1, 2, 3, 7] (each within [lo, hi])."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = (int(v) for v in part.split("-", 1))
            out.extend(range(a, b + 1))
        else:
            out.append(int(part))
    bad = [v for v in out if not lo <= v <= hi]
    if bad or not out:
        raise SystemExit(f"soak_analyze: {text!r}: values must lie in {lo}..{hi}")
    return out


def digest(facts_json: dict) -> str:
    from leo_verify.analysis.facts import canonical_facts
    text = json.dumps(canonical_facts(facts_json), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def statuses(facts_json: dict) -> dict:
    """neuron -> (status, evidence): what a compression uses."""
    return {n: (f["status"], f["evidence"]) for n, f in facts_json["neurons"].items()}


def timed_out(facts_json: dict) -> int:
    return sum(q.get("verdict") == "timeout" for f in facts_json["neurons"].values()
               for q in f.get("stats", {}).get("queries", []))


def analyze_here(model: Path, prop: Path, args) -> tuple[dict, float]:
    from leo_verify.analysis import analyze
    from leo_verify.cli import load_model
    from leo_verify.domain import parse_domain
    from leo_verify.util import sha256_file
    t0 = time.monotonic()
    graph = load_model(str(model))  # as the CLI does: the loader is part of the soak
    graph.metadata["sha256"] = sha256_file(str(model))
    box = parse_domain(str(prop), n=graph.input_size)
    facts = analyze(graph, box, method=args.method, query_time_limit=args.query_time_limit,
                    seed=args.seed)
    return facts.to_json(), time.monotonic() - t0


def analyze_subprocess(model: Path, prop: Path, args) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "facts.json")
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "leo_verify", "analyze", str(model), "--domain", str(prop),
                            "--method", args.method, "--query-time-limit", str(args.query_time_limit),
                            "--seed", str(args.seed), "--no-checkpoint", "--no-progress", "-o", out],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"soak_analyze: single run of {model.name} {prop.name} failed: {r.stderr}")
        with open(out) as fh:
            return json.load(fh), time.monotonic() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", default="1-9", help="ACAS Xu nets 1_N (default 1-9)")
    p.add_argument("--props", default="1-4", help="properties (default 1-4)")
    p.add_argument("--method", default="fast", choices=("fast", "leo", "isa"))
    p.add_argument("--query-time-limit", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", default="subprocess", choices=("subprocess", "pass2", "none"))
    p.add_argument("--warmup", type=int, default=5, help="memory growth is measured from this run on")
    p.add_argument("--max-growth-mb", type=float, default=50.0)
    p.add_argument("--bench", default=str(BENCH), help="folder of the ACAS Xu files")
    p.add_argument("-o", "--output", default=None, help="write the measurements as JSON")
    args = p.parse_args(argv)
    bench = Path(args.bench)
    nets, props = parse_range(args.nets, 1, 9), parse_range(args.props, 1, 4)
    boxes = [(bench / f"ACASXU_run2a_1_{n}_batch_2000.onnx", bench / f"prop_{q}.vnnlib")
             for n in nets for q in props]
    missing = [str(f) for b in boxes for f in b if not f.exists()]
    if missing:
        raise SystemExit(f"soak_analyze: missing {missing[0]}")

    runs, run_statuses = [], []
    gc.collect()
    rss0 = rss_mb()
    print(f"soak: {len(boxes)} runs ({args.method}) in process {os.getpid()}; RSS before: {rss0:.1f} MiB",
          flush=True)
    print(f"{'#':>3}  {'net':8s} {'prop':7s} {'time s':>8s} {'RSS MiB':>8s} {'peak':>7s}  "
          f"{'act':>4s} {'inact':>5s} {'unst':>5s} {'unk':>4s}", flush=True)
    for i, (model, prop) in enumerate(boxes, 1):
        facts, secs = analyze_here(model, prop, args)
        gc.collect()
        rss = rss_mb()
        c = facts["summary"]
        run = {"run": i, "net": model.stem.split("_")[2] + "_" + model.stem.split("_")[3],
               "prop": prop.stem, "seconds": round(secs, 2), "rss_mb": round(rss, 1),
               "peak_mb": round(peak_mb(), 1), "digest": digest(facts),
               "counts": {k: c[k] for k in ("stably_active", "stably_inactive", "unstable", "unknown")},
               "milp_queries": facts["meta"]["counters"]["milp_queries"],
               "lp_queries": facts["meta"]["counters"]["lp_queries"],
               "timed_out_queries": timed_out(facts)}
        runs.append(run)
        run_statuses.append(statuses(facts))
        k = run["counts"]
        print(f"{i:>3}  {run['net']:8s} {run['prop']:7s} {secs:>8.1f} {rss:>8.1f} {run['peak_mb']:>7.1f}  "
              f"{k['stably_active']:>4d} {k['stably_inactive']:>5d} {k['unstable']:>5d} {k['unknown']:>4d}",
              flush=True)

    # memory: flat after the warm-up (imports, solver libraries, caches)
    w = min(max(1, args.warmup), len(runs))
    growth = runs[-1]["rss_mb"] - runs[w - 1]["rss_mb"]
    per_run = growth / max(1, len(runs) - w)
    mem_ok = growth < args.max_growth_mb
    print(f"memory: RSS {runs[w - 1]['rss_mb']:.1f} MiB after run {w}, {runs[-1]['rss_mb']:.1f} MiB after "
          f"run {len(runs)}: growth {growth:+.1f} MiB ({per_run:+.2f} MiB/run; bound "
          f"{args.max_growth_mb:g} MiB) -> {'OK' if mem_ok else 'GROWING'}", flush=True)

    # results: each run's facts are its single run's facts
    # Byte-equal canonical facts are expected unless a query hit --query-time-limit:
    # where a MILP stops on the clock depends on the machine's load, so such a
    # run may differ in the solver statistics of its timed-out queries (and, if
    # a replayed solution then settles another neuron, in a status); those runs
    # are reported apart.
    agree = clocked = None
    if args.compare != "none":
        agree, clocked = 0, 0
        label = "fresh subprocess" if args.compare == "subprocess" else "second in-process pass"
        for run, st, (model, prop) in zip(runs, run_statuses, boxes):
            if args.compare == "subprocess":
                other, secs = analyze_subprocess(model, prop, args)
            else:
                other, secs = analyze_here(model, prop, args)
            same = digest(other) == run["digest"]
            run["single_run_equal"] = same
            run["single_run_statuses_equal"] = statuses(other) == st
            run["single_run_seconds"] = round(secs, 2)
            if same:
                agree += 1
            elif run["timed_out_queries"] or timed_out(other):
                clocked += 1
                print(f"  differs (timed-out queries: {run['timed_out_queries']} / {timed_out(other)}; "
                      f"statuses {'equal' if run['single_run_statuses_equal'] else 'DIFFERENT'}): "
                      f"run {run['run']} {run['net']} {run['prop']}", flush=True)
            else:
                print(f"  DIFFERENT: run {run['run']} {run['net']} {run['prop']}", flush=True)
        print(f"results: {agree}/{len(runs)} runs equal their single run ({label}), "
              f"{clocked} differ only where queries hit the time limit, "
              f"{len(runs) - agree - clocked} differ otherwise", flush=True)
    total = sum(r["seconds"] for r in runs)
    print(f"time: {total:.1f} s for {len(runs)} runs (mean {total / len(runs):.1f} s, "
          f"max {max(r['seconds'] for r in runs):.1f} s)", flush=True)
    ok = mem_ok and (agree is None or agree + clocked == len(runs))
    if args.output:
        from leo_verify.analysis import solver_versions
        from leo_verify.util import atomic_write_text
        summary = {"runs": runs, "rss_before_mb": round(rss0, 1), "warmup": w,
                   "growth_mb": round(growth, 1), "growth_per_run_mb": round(per_run, 3),
                   "max_growth_mb": args.max_growth_mb, "memory_ok": mem_ok,
                   "compare": args.compare, "equal_runs": agree, "clock_dependent_runs": clocked,
                   "total_seconds": round(total, 1),
                   "ok": ok, "settings": {k: v for k, v in vars(args).items()},
                   "versions": solver_versions()}
        atomic_write_text(args.output, json.dumps(summary, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
