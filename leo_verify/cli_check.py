"""``leo-verify check A B``: are two networks equivalent over a domain?

Exit codes: 0 proven equivalent, 1 counterexample found (replayed exactly),
2 unknown within the time limit, >= 3 input errors (see
:data:`leo_verify.errors.EXIT_CODES`).
"""
from __future__ import annotations

import argparse
import json
import math

from .cli_common import Command, check_output_path, load_model, register, write_output
from .errors import UsageError
from .util import sha256_file

__all__ = ["EXIT_EQUIVALENT", "EXIT_COUNTEREXAMPLE", "EXIT_UNKNOWN", "summary"]

EXIT_EQUIVALENT = 0
EXIT_COUNTEREXAMPLE = 1
EXIT_UNKNOWN = 2

_EXIT = {"equivalent": EXIT_EQUIVALENT, "counterexample": EXIT_COUNTEREXAMPLE,
         "unknown": EXIT_UNKNOWN}


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_a", metavar="A", help="first network (.onnx, .nnet, .pt/.pth)")
    p.add_argument("model_b", metavar="B", help="second network")
    p.add_argument("--domain", "-d", required=True, action="append",
                   help="box:LO,HI | FILE.json ({lower,upper} or a list of them) | FILE.vnnlib (input "
                        "constraints); repeat for a union of boxes (checked box by box)")
    q = p.add_mutually_exclusive_group()
    q.add_argument("--epsilon", type=float, default=None, metavar="E",
                   help="prove |A_i(x) - B_i(x)| <= E for every output (default 1e-6); with an "
                        "output head, of the head outputs (the logits within E / Lipschitz "
                        "constant of the head)")
    q.add_argument("--exact", action="store_true",
                   help="prove A(x) == B(x) exactly over the reals")
    q.add_argument("--top1", action="store_true",
                   help="prove argmax A(x) == argmax B(x) (first index on ties); softmax, "
                        "log-softmax, sigmoid, tanh and argmax heads keep the logits' argmax, "
                        "so the logits are compared")
    q.add_argument("--top1-confidence", type=float, default=None, metavar="DELTA",
                   help="prove: wherever softmax(A(x))_c > DELTA (softmax of A's logits), argmax B(x) = c "
                        "(VeryDiff's delta-top-1; no default: give DELTA, e.g. 0.9)")
    p.add_argument("--time-limit", type=float, default=60.0, metavar="S",
                   help="overall seconds (default 60); out of time -> unknown (exit 2)")
    p.add_argument("--solver", choices=("scip", "highs"), default="scip",
                   help="MILP solver of the joint-MILP stage: SCIP through OR-Tools, or HiGHS")
    p.add_argument("--seed", type=int, default=0, help="seed of the falsification campaign")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="processes for the exact re-proofs of the differential prover's leaves "
                        "(default 2; 1 runs them inline)")
    p.add_argument("--accept-uncertified", action="store_true",
                   help="also report EQUIVALENT when the proof is exact but leaves no certificate the "
                        "checker kernel re-checks (a z3 answer, the structural bound, an epsilon proof "
                        "through an output head); by default such a proof gives UNKNOWN with its reason")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.add_argument("-o", "--output", default=None, metavar="RESULT.json",
                   help="write the full result (with the counterexample) as JSON")


def summary(result) -> str:
    """A few human lines: verdict, method, max difference seen, time."""
    mode = {"epsilon": f"epsilon = {result.epsilon:g}", "exact": "exact",
            "top1": "top-1 (argmax)",
            "top1-confidence": f"delta-top-1, delta = {result.epsilon:g}"}[result.mode]
    lines = [f"verdict: {result.verdict.upper()} ({mode})"]
    if result.verdict != "unknown":
        lines.append(f"method: {result.method}" + (f", proof: {result.proof}" if result.proof else ""))
    what = "max disagreement margin seen" if result.mode.startswith("top1") else "max |A - B| seen at any point"
    lines.append(f"{what}: {result.max_diff_seen:.6g}")
    if result.best_bound is not None:
        lines.append(f"proven bound on max_i |A_i(x) - B_i(x)| over the domain (the outputs before any "
                     f"head): {result.best_bound:.6g}")
    cex = result.counterexample
    if cex is not None:
        pt = ", ".join(f"{v:.9g}" for v in cex["point"][:8]) + (", ..." if len(cex["point"]) > 8 else "")
        lines.append(f"counterexample: x = [{pt}]")
        if result.mode.startswith("top1"):
            lines.append(f"  argmax A = {cex['argmax_f']}, argmax B = {cex['argmax_g']}")
        else:
            i = cex["output"]
            lines.append(f"  output {i}: A = {cex['f_exact_float'][i]:.9g}, "
                         f"B = {cex['g_exact_float'][i]:.9g}, |A - B| = {cex['difference']:.6g} "
                         f"(exact{', logits' if 'head' in cex else ''})")
            if "head" in cex:
                k = cex["head_output"]
                lines.append(f"  {cex['head']} output {k}: A = {cex['head_f'][k]:.9g}, "
                             f"B = {cex['head_g'][k]:.9g}, |A - B| = {cex['head_difference']:.6g} "
                             f"(float64 from the exact logits)")
    lines.append(f"reason: {result.reason}")
    hint = next_step(result)
    if hint:
        lines.append(f"next: {hint}")
    lines.append(f"time: {result.time:.2f} s")
    return "\n".join(lines)


def next_step(result) -> str:
    """What to try next after a COUNTEREXAMPLE or an UNKNOWN (empty when proven)."""
    if result.verdict == "counterexample" and result.mode == "exact" and result.counterexample:
        d = result.counterexample.get("difference") or 0.0
        scale = max(1.0, *(abs(v) for v in result.counterexample.get("f_exact_float", [0.0])))
        if d <= 1e-5 * scale:
            return (f"a difference of {d:.3g} is the size of float rounding: if B is the float32 emission of a "
                    f"compression of A, ask `--epsilon` with the eps its certificate proved (report.json: "
                    f"certificate.epsilon) instead of --exact")
        return "the networks compute different functions on the domain; the counterexample is exact"
    if result.verdict != "unknown":
        return ""
    from .certify.equivalence.result import UNCERTIFIED
    if UNCERTIFIED in result.reason:
        return ("the claim is proven exactly, without a kernel certificate: if B is a `compress` output, "
                "give B's path inside its OUT/ folder (its certificate then answers); otherwise add "
                "--accept-uncertified to report it as EQUIVALENT (recheck cannot re-check it then)")
    tips = [f"a longer --time-limit (now {result.time:.0f} s used)",
            "smaller input boxes (split the domain and give several --domain flags)"]
    if result.mode == "epsilon" and result.best_bound is not None and result.best_bound > result.epsilon:
        tips.append(f"--epsilon {result.best_bound:.3g} (the proven bound) if that tolerance is acceptable")
    if result.mode == "top1":
        tips.append("--epsilon with a tolerance on the logits, which is often easier to prove")
    return "try " + "; ".join(tips)


def _certificate(result, f, g, ha: str, hb: str) -> dict | None:
    """The kernel-checkable certificate of an EQUIVALENT verdict (:func:`kernel_certificate`), or None."""
    from .certify.equivalence.result import kernel_certificate
    c = kernel_certificate(result, f, g)
    if c is None:
        return None
    extra = {k: c[k] for k in ("delta", "logit_epsilon") if k in c}
    return {"format": "leo_verify.check-certificate/1", "a": {"sha256": ha}, "b": {"sha256": hb},
            "mode": c["mode"], "epsilon": c["epsilon"], **extra, "regions": c["regions"]}


def _run(args) -> int:
    from .certify.fuzz import check_sizes
    from .certify.union_check import check_union
    from .domain import parse_union
    if args.time_limit is None or not (math.isfinite(args.time_limit) and args.time_limit > 0):
        raise UsageError(f"--time-limit must be > 0 seconds, got {args.time_limit}")
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.epsilon is not None and not (math.isfinite(args.epsilon) and args.epsilon >= 0):
        raise UsageError(f"--epsilon must be a finite number >= 0, got {args.epsilon}")
    mode = "exact" if args.exact else "top1" if args.top1 else "epsilon"
    epsilon = 1e-6 if args.epsilon is None else args.epsilon
    if args.top1_confidence is not None:
        if not (math.isfinite(args.top1_confidence) and 0 < args.top1_confidence < 1):
            raise UsageError(f"--top1-confidence must be in (0, 1), got {args.top1_confidence}")
        mode, epsilon = "top1-confidence", args.top1_confidence
    if args.output is not None:
        check_output_path(args.output, [args.model_a, args.model_b, *args.domain])
    f = load_model(args.model_a)
    g = load_model(args.model_b)
    check_sizes(f, g)
    box = parse_union(args.domain, n=f.input_size)
    from .progress import phase
    from .certify.equivalence.from_certificate import from_compress_certificate
    result = from_compress_certificate(args.model_a, args.model_b, box, mode=mode, epsilon=epsilon,
                                       graphs=(f, g))
    with phase("check", total=len(box.boxes), enabled=not args.no_progress and result is None,
               unit="boxes") as bar:
        result = result or check_union(f, g, box, progress=bar, mode=mode, epsilon=epsilon, time_limit=args.time_limit,
                             solver=args.solver, seed=args.seed, workers=args.workers,
                             accept_uncertified=args.accept_uncertified)
    if args.output is not None:
        ha, hb = sha256_file(args.model_a), sha256_file(args.model_b)
        doc = {"schema": "leo_verify.check/1",
               "inputs": {"a": {"file": args.model_a, "sha256": ha},
                          "b": {"file": args.model_b, "sha256": hb},
                          "domain": box.to_json()},
               **result.to_json()}
        doc["certificate"] = _certificate(result, f, g, ha, hb)
        write_output(args.output, (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode())
    print(summary(result))
    if args.output is not None:
        print(f"result written to {args.output}")
    return _EXIT[result.verdict]


register(Command("check", "check two networks for equivalence over a domain "
                          "(exit 0 equivalent, 1 counterexample, 2 unknown)", _args, _run,
                 example="leo-verify check a.onnx b.onnx --domain prop_1.vnnlib --epsilon 1e-5 -o result.json"))
