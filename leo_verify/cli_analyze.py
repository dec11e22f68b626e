"""``leo-verify analyze``: stability facts of every hidden neuron over a domain."""
from __future__ import annotations

import argparse
import sys

from .cli_common import Command, check_output_path, load_model, read_points, register, write_output
from .util import sha256_file
from .errors import UsageError

__all__ = ["add_analysis_options", "analysis_kwargs", "format_counts"]


def add_analysis_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``analyze`` and ``compress``."""
    p.add_argument("--domain", "-d", required=True, action="append",
                   help="box:LO,HI | FILE.json ({lower,upper} or a list of them) | FILE.vnnlib (input "
                        "constraints; a disjunction is a union of boxes); repeat for a union of boxes")
    p.add_argument("--method", choices=("fast", "leo", "isa"), default="fast",
                   help="fast: sound bounds, witnesses, input splitting, MILP for the rest; leo: two MILPs "
                        "per neuron (the paper); isa: data candidates, one MILP per round")
    p.add_argument("--solver", choices=("scip", "highs"), default="scip",
                   help="MILP solver: SCIP through OR-Tools, or HiGHS through highspy")
    p.add_argument("--query-time-limit", type=float, default=60.0, metavar="S",
                   help="seconds per MILP query (a timeout leaves the neuron unknown)")
    p.add_argument("--budget", type=float, default=None, metavar="S",
                   help="seconds: analyze: for the whole analysis (facts marked incomplete when spent); "
                        "compress: for the whole run (half for the analysis; exact claims not proven by 85 %% "
                        "of it keep their neurons) (default: no limit)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="local worker processes")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="solver threads per query")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address (needs the 'dask' extra; default: local processes)")
    p.add_argument("--data", default=None, metavar="X.npy",
                   help="data points (.npy/.json): witnesses, and ISA's candidates (default: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random witness search (same seed, same facts)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    ck = p.add_mutually_exclusive_group()
    ck.add_argument("--checkpoint", default=None, metavar="DIR",
                    help="journal decided facts and finished solver queries in DIR and resume "
                         "from it (default: $LEO_VERIFY_CACHE/checkpoints or "
                         "~/.cache/leo_verify/checkpoints)")
    ck.add_argument("--no-checkpoint", action="store_true",
                    help="neither read nor write a checkpoint")


def analysis_kwargs(args, graph) -> dict:
    for name in ("query_time_limit", "budget"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {v}")
    data = read_points(args.data, graph.input_size)[0] if args.data else None
    checkpoint = None if args.no_checkpoint else (args.checkpoint or True)
    return dict(method=args.method, solver=args.solver, query_time_limit=args.query_time_limit,
                budget=args.budget, workers=args.workers, threads=args.threads,
                scheduler=args.scheduler, seed=args.seed, data=data,
                progress=not args.no_progress and sys.stderr.isatty(),
                checkpoint=checkpoint, log=_log)


def _log(message: str) -> None:
    print(f"leo-verify: {message}", file=sys.stderr, flush=True)


def format_counts(facts) -> str:
    """A per-layer table of statuses."""
    rows = [("layer", "active", "inactive", "unstable", "unknown")]
    for layer, c in facts.counts_by_layer().items():
        rows.append((layer, c["stably_active"], c["stably_inactive"], c["unstable"], c["unknown"]))
    tot = facts.counts()
    rows.append(("total", tot["stably_active"], tot["stably_inactive"], tot["unstable"], tot["unknown"]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    return "\n".join("  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                               for i, (v, w) in enumerate(zip(r, widths))) for r in rows)


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="network file (.onnx, .nnet, .pt state dict)")
    add_analysis_options(p)
    p.add_argument("-o", "--output", required=True, metavar="FACTS.json")


def _run(args) -> int:
    from .analysis import analyze
    from .domain import parse_union
    check_output_path(args.output, [args.model, args.data, *args.domain])
    graph = load_model(args.model)
    graph.metadata["sha256"] = sha256_file(args.model)
    union = parse_union(args.domain, n=graph.input_size)
    facts = analyze(graph, union.boxes[0] if len(union) == 1 else union, **analysis_kwargs(args, graph))
    write_output(args.output, (facts.dumps() + "\n").encode())
    print(format_counts(facts))
    t = facts.meta["timings"]
    state = "complete" if facts.complete else f"INCOMPLETE ({facts.meta.get('stopped')})"
    print(f"{state}: {facts.meta['counters']['milp_queries']} MILP queries, "
          f"{t['wall']:.2f} s; facts written to {args.output}")
    if facts.meta.get("stopped") == "interrupted":
        return 130
    return 0


register(Command("analyze", "find the stably active / inactive neurons over a domain", _args, _run,
                 example="leo-verify analyze net.onnx --domain box:0,1 -o facts.json --query-time-limit 10"))
