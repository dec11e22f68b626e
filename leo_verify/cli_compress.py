"""``leo-verify compress``: analyse, rewrite losslessly, write the network and a report."""
from __future__ import annotations

import argparse
import json
import os

from .cli import Command, check_output_path, load_model, register, write_output
from .cli_analyze import add_analysis_options, analysis_kwargs
from .errors import OutputError, UsageError
from .util import sha256_file

FORMATS = ("onnx", "torch")


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="network file (.onnx, .nnet, .pt state dict)")
    add_analysis_options(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT/", help="output folder (created if missing)")
    p.add_argument("--format", default="onnx", help="comma-separated: onnx, torch (default onnx)")
    p.add_argument("--facts", default=None, metavar="FACTS.json", help="facts from `analyze` instead of analysing")
    p.add_argument("--float", action="store_true", help="rewrite in float64 instead of exact rationals")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="weights of the emitted files (default: the input model's)")


def summary_table(report: dict) -> str:
    b, a = report["before"], report["after"]
    lines = [f"{'':16s}{'before':>10s}{'after':>10s}",
             f"{'hidden layers':16s}{b['hidden_layers']:>10d}{a['hidden_layers']:>10d}",
             f"{'neurons':16s}{b['neurons']:>10d}{a['neurons']:>10d}",
             f"{'parameters':16s}{b['parameters']:>10d}{a['parameters']:>10d}",
             f"{'widths':16s}{str(b['widths']):>10s}  ->  {a['widths']}"]
    c = report["facts"]["counts"]
    lines.append(f"facts: {c['stably_active']} stably active, {c['stably_inactive']} stably inactive, "
                 f"{c['unstable']} unstable, {c['unknown']} unknown"
                 + ("" if report["facts"]["complete"] else " (analysis INCOMPLETE)"))
    lines.append(f"rewrite: {report['arithmetic']} arithmetic; certificate: {report['certificate']}")
    return "\n".join(lines)


def _run(args) -> int:
    from .compress import compress
    from .domain import parse_domain
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UsageError(f"--format: unknown format {bad[0] if bad else '(empty)'!r}; choose from {', '.join(FORMATS)}")
    out = args.output
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"output {out!r} exists and is not a folder")
    os.makedirs(out, exist_ok=True)
    paths = {"onnx": os.path.join(out, "compressed.onnx"), "torch": os.path.join(out, "compressed.pt"),
             "report": os.path.join(out, "report.json")}
    for p in paths.values():
        check_output_path(p, [args.model, args.facts, args.domain, args.data])
    graph = load_model(args.model)
    graph.metadata["sha256"] = sha256_file(args.model)
    box = parse_domain(args.domain, n=graph.input_size)
    kw = analysis_kwargs(args, graph)
    result = compress(graph, box, facts=args.facts, exact=not args.float, **kw)
    report = result.report
    report["outputs"] = {}
    if "onnx" in formats:
        result.to_onnx(paths["onnx"], dtype=args.dtype)
        report["outputs"]["onnx"] = {"file": "compressed.onnx", "sha256": sha256_file(paths["onnx"])}
    if "torch" in formats:
        import torch
        from .io.torch import save_torch
        dtype = {"float32": torch.float32, "float64": torch.float64}.get(args.dtype)
        save_torch(result.graph, paths["torch"], **({"dtype": dtype} if dtype else {}))
        report["outputs"]["torch"] = {"file": "compressed.pt", "sha256": sha256_file(paths["torch"])}
    write_output(paths["report"], (json.dumps(report, indent=1, allow_nan=False) + "\n").encode())
    print(summary_table(report))
    print(f"written: {', '.join(sorted(os.path.basename(p) for k, p in paths.items() if k in formats or k == 'report'))} "
          f"in {out}")
    return 0


register(Command("compress", "analyse and rewrite a network losslessly; write it and a report", _args, _run))
