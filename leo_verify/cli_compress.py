"""``leo-verify compress``: analyse, rewrite losslessly, write the network and a report."""
from __future__ import annotations

import argparse
import json
import os

from .cli_common import Command, check_output_path, load_model, register, write_output
from .cli_analyze import add_analysis_options, analysis_kwargs
from .errors import OutputError, UsageError
from .util import folder_lock, sha256_file

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
    p.add_argument("--no-certify", action="store_true",
                   help="skip certification (the report then says 'not certified')")
    p.add_argument("--certify-time-limit", type=float, default=5.0, metavar="S",
                   help="seconds per stability claim for its exact proof (default 5); a claim not "
                        "proven in time keeps its neuron")
    p.add_argument("--certify-pieces-budget", type=float, default=300.0, metavar="S",
                   help="seconds for proving, piece by piece of the input box (exact CROWN bounds per "
                        "piece), the claims the whole box did not prove (networks with <= 16 inputs; "
                        "default 300)")
    p.add_argument("--no-smt2", action="store_true", help="do not write OUT/proofs/*.smt2")


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
    cert = report["certificate"]
    lines.append(f"rewrite: {report['arithmetic']} arithmetic")
    cl = report.get("claims")
    if cl and cl["not_proven"]:
        lines.append(f"claims: {cl['proven_exactly']} of {cl['from_analysis']} re-proved exactly; the neurons of "
                     f"the other {len(cl['not_proven'])} are kept")
    if "obligations" in cert:
        c = cert["obligations"]
        eps = ", ".join(f"{k}: eps <= {v['float']:.3g}" for k, v in cert.get("epsilon", {}).items())
        lines.append(f"certificate: {cert['verdict'].upper()} ({c['proven']} proven, {c.get('passed', 0)} passed, "
                     f"{c['open']} open, {c['refuted']} refuted of {c['total']} obligations)" + (f"; {eps}" if eps else ""))
        for o in cert["open"][:10]:
            lines.append(f"  {o['status']}: {o['id']}: {o['detail']}")
        if len(cert["open"]) > 10:
            lines.append(f"  ... {len(cert['open']) - 10} more (see report.json)")
    else:
        lines.append(f"certificate: {cert['verdict']} ({cert.get('detail', '')})")
    head = report.get("head") or {}
    if head.get("head") not in (None, "none"):
        for name, rec in sorted((head.get("files") or {}).items()):
            lines.append(f"head: {rec.get('statement', '')}")
    return "\n".join(lines)


def _run(args) -> int:
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UsageError(f"--format: unknown format {bad[0] if bad else '(empty)'!r}; choose from {', '.join(FORMATS)}")
    out = args.output
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"output {out!r} exists and is not a folder")
    # every input is validated before OUT/ is created: a refused run leaves no empty folder
    from .domain import parse_union
    graph = load_model(args.model)
    graph.metadata["sha256"] = sha256_file(args.model)
    out_op = graph.op(graph.output_name)
    if "torch" in formats and getattr(out_op, "head", "none") != "none":
        raise UsageError(f"--format torch: the network ends with a {out_op.head} head, which a .pt state dict "
                         f"cannot record; use --format onnx")
    convs = [n for n, op in graph.items() if op.kind == "affine" and op.layout is not None]
    if "torch" in formats and convs:
        raise UsageError(f"--format torch: layer {convs[0]!r} is a convolution, which a .pt state dict "
                         f"of Linear layers cannot record; use --format onnx (or to_torch() in Python)")
    union = parse_union(args.domain, n=graph.input_size)
    kw = analysis_kwargs(args, graph)
    kw.pop("progress", None)  # compress(progress=...) drives every phase's display
    if args.facts is not None and not os.path.isfile(args.facts):
        from .errors import InputFileError
        raise InputFileError(f"facts file {args.facts!r} does not exist")
    created = not os.path.isdir(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:  # a parent is a regular file, read-only, too long a name, ...
        raise OutputError(f"cannot create the output folder {out!r}: {exc.strerror or exc}") from None
    # one run per output folder: a second run on OUT/ fails at once (OutputError,
    # naming the holder's pid) instead of interleaving its files with ours
    try:
        with folder_lock(out):
            return _compress_into(args, out, formats, graph, union, kw)
    except BaseException:
        if created and os.path.isdir(out) and not os.listdir(out):
            os.rmdir(out)  # nothing was written: leave no empty folder behind
        raise


def _compress_into(args, out: str, formats: list, graph, union, kw: dict) -> int:
    from .compressor import compress
    paths = {"onnx": os.path.join(out, "compressed.onnx"), "torch": os.path.join(out, "compressed.pt"),
             "report": os.path.join(out, "report.json")}
    for p in paths.values():
        check_output_path(p, [args.model, args.facts, *args.domain, args.data])
    box = union.boxes[0] if len(union) == 1 else union
    result = compress(graph, box, facts=args.facts, exact=not args.float, certify=False,
                      progress=not args.no_progress,
                      proven_claims_only=not args.no_certify,
                      certify_options={"time_limit": args.certify_time_limit,
                                       "pieces_budget": args.certify_pieces_budget}, **kw)
    report = result.report
    # the analysis settings (seed included) next to the versions: a report names all its inputs
    report["facts"].setdefault("settings", result.facts.meta.get("settings"))
    report["outputs"] = {}
    emitted = {}
    if "onnx" in formats:
        result.to_onnx(paths["onnx"], dtype=args.dtype)
        report["outputs"]["onnx"] = {"file": "compressed.onnx", "sha256": sha256_file(paths["onnx"])}
        emitted["compressed.onnx"] = paths["onnx"]
    if "torch" in formats:
        import torch
        from .io.torch import save_torch
        dtype = {"float32": torch.float32, "float64": torch.float64}.get(args.dtype)
        save_torch(result.graph, paths["torch"], **({"dtype": dtype} if dtype else {}))
        report["outputs"]["torch"] = {"file": "compressed.pt", "sha256": sha256_file(paths["torch"])}
        emitted["compressed.pt"] = paths["torch"]
    code = 0
    if not args.no_certify:
        from .certify.proofs import write_proofs
        from .io import load
        # certify what was written: read every emitted file back
        from .progress import phase
        with phase("certification", enabled=not args.no_progress, unit="obligations") as bar:
            cert = result.certify(box, emitted={name: load(p) for name, p in emitted.items()},
                                  dtype=args.dtype, time_limit=args.certify_time_limit,
                                  seed=args.seed, progress=None)
            bar.update(len(cert.obligations), verdict=cert.verdict)
        smt2_skipped: list = []
        write_proofs(out, cert, original=result.original, compressed=result.graph,
                     model_sha=graph.metadata.get("sha256"), emitted=emitted, smt2=not args.no_smt2,
                     deadline=result.deadline, smt2_skipped=smt2_skipped)
        if smt2_skipped:
            print(f"note: {len(smt2_skipped)} SMT-LIB statement(s) not written to proofs/: the budget was "
                  f"spent (they are an extra check for an SMT solver; recheck does not need them)")
        report["certificate"] = cert.summary()
        report["certificate"]["proofs"] = "proofs/certificate.json"
        report["obligations"] = [o.to_json() for o in cert.obligations]
        from .heads import head_report
        report["head"] = head_report(result.original, cert.epsilon)
        code = 0 if cert.verdict == "certified" else (1 if any(o.status == "refuted" for o in cert.obligations) else 2)
    write_output(paths["report"], (json.dumps(report, indent=1, allow_nan=False) + "\n").encode())
    from .report import HTML_NAME, MD_NAME, read_certificate, write_reports
    for name in (HTML_NAME, MD_NAME):
        check_output_path(os.path.join(out, name), [args.model, args.facts, *args.domain, args.data])
    write_reports(out, report, None if args.no_certify else read_certificate(out, report))
    print(summary_table(report))
    print(f"written: {', '.join(sorted(os.path.basename(p) for k, p in paths.items() if k in formats or k == 'report'))}"
          f", {HTML_NAME}, {MD_NAME}{', proofs/' if not args.no_certify else ''} in {out}")
    return code


register(Command("compress", "analyse and rewrite a network losslessly; write it and a report", _args, _run,
                 example="leo-verify compress examples/nets/tiny_mlp.onnx --domain examples/nets/tiny_mlp_domain.json -o out/demo"))


def _recheck_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="OUT/ | RESULT.json",
                   help="a folder written by `compress`, or a RESULT.json written by `check -o`")
    p.add_argument("--model", default=None, help="the original network (default: the path in the report); "
                                                 "for a RESULT.json: network A")
    p.add_argument("--model-b", default=None, help="for a RESULT.json: network B (default: the path it names)")
    p.add_argument("--domain", default=None, metavar="D", action="append",
                   help="the input domain you care about (box:LO,HI, JSON or VNNLIB; repeat for a union of "
                        "boxes); the certificate must be for exactly these boxes (default: the domain it "
                        "states, printed)")
    p.add_argument("--smt", action="store_true", help="also run z3 on every OUT/proofs/*.smt2 (expect unsat)")
    p.add_argument("--smt-timeout", type=float, default=60.0, metavar="S", help="z3 seconds per file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _failed_pages(out: str, why: str) -> None:
    """report.html / report.md that say NOT CERTIFIED when the files cannot even be read."""
    import html

    from .report import HTML_NAME, MD_NAME, write_text
    text = f"recheck could not read this folder: {why}"
    write_text(os.path.join(out, MD_NAME), f"# leo-verify: NOT CERTIFIED\n\n**NOT CERTIFIED**: {text}\n")
    write_text(os.path.join(out, HTML_NAME),
               "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\""
               "Content-Security-Policy\" content=\"default-src 'none'\"><title>NOT CERTIFIED</title></head>"
               f"<body><h1>NOT CERTIFIED</h1><p>{html.escape(text)}</p></body></html>\n")


def _region_inputs(path: str, *keys: str) -> int | None:
    """The number of inputs of the first region at ``keys`` in a JSON file (for ``--domain
    box:LO,HI``), or None if unreadable: the recheck itself reports an unreadable file."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        for k in keys:
            doc = doc[k]
        lower = doc["regions"][0]["lower"]
        return len(lower) if isinstance(lower, list) else None
    except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):
        return None


def _certificate_inputs(out: str) -> int | None:
    """The number of inputs of a compress certificate's domain."""
    return _region_inputs(os.path.join(out, "proofs", "certificate.json"))


def _recheck_run(args) -> int:
    from .errors import DataError, InputFileError, LeoError
    from .kernel.recheck import recheck
    out = args.folder
    if os.path.isfile(out):
        return _recheck_result(args)
    if args.model_b is not None:
        raise UsageError("--model-b is for rechecking a `check -o` RESULT.json, not a compress folder")
    if not os.path.isdir(out):
        raise InputFileError(f"output folder {out!r} does not exist" if not os.path.exists(out)
                             else f"{out!r} is not a folder")
    log = (lambda *a: None) if args.json else print
    pinned = None
    if args.domain is not None:  # the reviewer's own question: parsed before anything in OUT/ is trusted
        from .domain import parse_union
        pinned = parse_union(args.domain, n=_certificate_inputs(out)).exact_boxes()
    from .progress import phase
    try:
        with phase("recheck", enabled=args.json is False, unit="checks") as bar:
            summary = recheck(out, model=args.model, domain=pinned, log=log)
            bar.update(summary["checked"], failed=len(summary["failed"]))
    except LeoError as e:
        # whatever stopped the recheck (a malformed certificate, a model file that does not
        # parse, ...): the pages in OUT/ must not keep saying CERTIFIED
        _failed_pages(out, str(e))
        raise
    if args.smt and summary["verdict"] == "certified":
        # z3 is a prover, not part of the kernel: it can only fail a recheck
        from .certify.proofs import run_smt2
        from .util import read_json
        doc = read_json(os.path.join(out, "proofs", "certificate.json"), what="certificate", error=DataError)
        results, counts = run_smt2(out, doc, timeout=args.smt_timeout)
        summary["checked"] += len(results)
        summary["failed"].update({k: v[1] for k, v in results.items() if not v[0]})
        summary["smt2"] = counts
        if summary["failed"]:
            summary["verdict"] = "not certified"
    from .report import read_certificate, read_report, write_reports
    report = read_report(out)
    write_reports(out, report, read_certificate(out, report), recheck=summary)
    if args.json:
        print(json.dumps(summary, indent=1, sort_keys=True))
    else:
        print(f"recheck: {summary['verdict'].upper()}: {summary['checked']} checks, {len(summary['failed'])} failed "
              f"({summary['time']} s); the certificate said: {summary['certificate_verdict']}")
        print(f"  model {summary['model']} (sha256 {summary['original_sha256'][:16]}...); domain "
              f"{summary['domain']}" + (" (as asked with --domain)" if summary["domain_pinned"] else
                                        " (as the certificate states; pin it with --domain)"))
        for k, why in list(summary["failed"].items())[:20]:
            print(f"  FAILED {k}: {why}")
        if "smt2" in summary:
            print("  smt2: " + ", ".join(f"{v} {k}" for k, v in sorted(summary["smt2"].items())))
        print("  report.html / report.md re-rendered with this result")
    return 0 if summary["verdict"] == "certified" else 2


def _recheck_result(args) -> int:
    """``recheck RESULT.json``: the kernel re-proves a `check` certificate (exit 0 equivalent, 2 not)."""
    from .kernel.recheck_check import recheck_check
    if args.smt:
        raise UsageError("--smt is for compress folders; a check certificate has no SMT-LIB files")
    pinned = None
    if args.domain is not None:
        from .domain import parse_union
        pinned = parse_union(args.domain, n=_region_inputs(args.folder, "certificate")).exact_boxes()
    log = (lambda *a: None) if args.json else print
    summary = recheck_check(args.folder, model_a=args.model, model_b=args.model_b, domain=pinned, log=log)
    if args.json:
        print(json.dumps(summary, indent=1, sort_keys=True))
    else:
        verdict = "EQUIVALENT" if summary["verdict"] == "equivalent" else "NOT CERTIFIED"
        print(f"recheck: {verdict}: {summary['checked']} regions, {summary['leaves']} leaves re-proved, "
              f"{len(summary['failed'])} failed ({summary['time']} s); the result said: {summary['result_verdict']}")
        print(f"  domain {summary.get('domain', '?')}" + (" (as asked with --domain)" if summary.get("domain_pinned")
                                                           else " (as RESULT.json states; pin it with --domain)"))
        for k, why in list(summary["failed"].items())[:20]:
            print(f"  FAILED {k}: {why}")
    return 0 if summary["verdict"] == "equivalent" else 2


register(Command("recheck", "re-run every proof obligation of a compression's output folder or a check result",
                 _recheck_args, _recheck_run,
                 example="leo-verify recheck out/demo --model examples/nets/tiny_mlp.onnx --domain examples/nets/tiny_mlp_domain.json"))
