#!/usr/bin/env python
"""Are two networks the same function on a domain?  ``check_equivalence`` / ``leo-verify check``.

Three comparisons on one network (default: the l1-trained digits MLP
64-25-25-10, domain [0, 1]^64):

1. the network vs its compression (``leo-verify compress`` writes OUT/ with a
   float32 ONNX file, rounded from the exact rewrite, and its certificate):
   **equivalent** within the certified epsilon -- through the command line,
   ``leo-verify check A OUT/compressed.onnx --domain box:0,1 --epsilon E``
   (exit code 0), which re-checks OUT's certificate in the kernel; and through
   :func:`leo_verify.certify.equivalence.check_equivalence` on the two graphs,
   where the structural prover (or z3) proves it exactly (accepted with
   ``accept_uncertified=True``: such a proof leaves no kernel certificate);
2. the network vs a copy with ONE weight changed by 1e-3 (an output weight of
   a hidden unit that is active somewhere on the domain): a **counterexample**,
   an input point that has been replayed in exact rational arithmetic, with
   both outputs; the CLI says so with exit code 1 and ``-o`` writes it as JSON;
3. the network vs a copy with a weight of a *dead* unit (stably inactive on the
   domain) changed by 1: **equivalent** -- the change is invisible on the
   domain, and proven so.

Usage::

    python examples/equivalence_check.py                          # digits 64-25-25-10
    python examples/equivalence_check.py --net examples/nets/tiny_mlp.onnx \\
        --domain examples/nets/tiny_mlp_domain.json
    python examples/equivalence_check.py --keep out/eq            # keep the ONNX files written

Exit status 0 when the three verdicts are the expected ones, 1 otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_NET = os.path.join(HERE, "nets", "digits", "digits_64x25x25x10_l1_1e-03.onnx")


def perturbed(graph, facts, *, delta: float, dead: bool):
    """A copy of ``graph`` with one output-layer weight changed by ``delta``.

    The weight connects the last hidden layer to output 0.  ``dead=False``: the
    hidden unit with the largest proven upper bound among those that are *not*
    stably inactive (the change shows); ``dead=True``: a stably inactive unit
    (the change cannot show on the domain).  Returns ``(graph, description)``
    or ``(None, why)``.
    """
    from leo_verify.graph import Affine, neuron_id

    relu, op = graph.relus()[-1]
    users = graph.users(relu)
    if len(users) != 1 or graph.op(users[0]).kind != "affine":
        return None, f"the last ReLU layer {relu!r} does not feed one affine layer"
    fc = users[0]
    candidates = []
    for j in range(op.size):
        f = facts.neurons.get(neuron_id(relu, j))
        if f is None:
            continue
        if dead and f.status == "stably_inactive":
            candidates.append((0.0, j))
        elif not dead and f.status != "stably_inactive" and f.upper is not None:
            candidates.append((float(f.upper), j))
    if not candidates:
        return None, f"no {'dead' if dead else 'live'} unit in layer {relu!r}"
    _, j = max(candidates)
    aff = graph.op(fc)
    w = np.array(aff.weight, dtype=np.float64)
    w[0, j] += delta
    g = graph.copy()
    g.replace(fc, Affine(w, np.array(aff.bias, dtype=np.float64)))
    return g.lint(where="perturbed copy"), f"weight {fc}[0, {j}] (unit {neuron_id(relu, j)}) {delta:+g}"


def show(title: str, res) -> None:
    from leo_verify.cli_check import summary
    print(f"--- {title}")
    print("    " + summary(res).replace("\n", "\n    "))


def cli_check(a: str, b: str, domain: str, epsilon: float, out_json: str | None) -> tuple[int, str]:
    """``leo-verify check A B --domain D --epsilon E [-o OUT]`` in-process: (exit code, stdout)."""
    from leo_verify.cli import main
    argv = ["check", a, b, "--domain", domain, "--epsilon", repr(epsilon), "--time-limit", "60"]
    if out_json:
        argv += ["-o", out_json]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", default=DEFAULT_NET, help="an ONNX network (default: digits 64-25-25-10, l1 1e-3)")
    ap.add_argument("--domain", default="box:0,1", help="box:LO,HI, a JSON box or a VNNLIB file")
    ap.add_argument("--delta", type=float, default=1e-3, help="the weight change of comparison 2")
    ap.add_argument("--keep", default=None, metavar="DIR", help="write the ONNX files here (default: a temp folder)")
    args = ap.parse_args(argv)

    from leo_verify.certify.equivalence import check_equivalence
    from leo_verify.compressor import compress
    from leo_verify.domain import parse_domain
    from leo_verify.io import load
    from leo_verify.io.onnx import save_onnx

    original = load(args.net)
    box = parse_domain(args.domain, n=original.input_size)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        d = args.keep or tmp
        os.makedirs(d, exist_ok=True)
        out = os.path.join(d, "out")
        comp_path = os.path.join(out, "compressed.onnx")
        t = time.perf_counter()
        # the command line writes OUT/ with the certificate that `check` re-checks in the kernel
        with contextlib.redirect_stdout(io.StringIO()):
            from leo_verify.cli import main as cli_main
            if cli_main(["compress", args.net, "--domain", args.domain, "-o", out, "--no-progress",
                         "--no-checkpoint", "--format", "onnx"]) != 0:
                print("compress failed")
                return 1
        with open(os.path.join(out, "report.json"), encoding="utf-8") as fh:
            report = json.load(fh)
        res = compress(args.net, box, certify=False)  # the facts, for the perturbed copies below
        cert = report["certificate"]
        eps = max((v["float"] for v in cert.get("epsilon", {}).values()), default=0.0)
        epsilon = max(1e-6, eps)
        print(f"{os.path.basename(args.net)}: {report['before']['neurons']} -> "
              f"{report['after']['neurons']} neurons, certificate {cert['verdict']} "
              f"(float32 rounding eps {eps:.3g}), {time.perf_counter() - t:.1f} s")

        # 1. the net vs its compression (the float32 file a user deploys).  The API sees two
        # graphs of different structure: the structural prover (or z3) proves them equal exactly,
        # but leaves no certificate the kernel re-checks, so it counts only with
        # accept_uncertified=True.  The
        # command line finds OUT/proofs/certificate.json next to B and re-checks it in the kernel.
        r1 = check_equivalence(original, load(comp_path), box, epsilon=epsilon, time_limit=60,
                               accept_uncertified=True)
        show(f"1. original vs its compression ({comp_path}), epsilon = {epsilon:.3g} "
             f"(API, uncertified proofs accepted)", r1)
        ok &= r1.verdict == "equivalent"
        code, text = cli_check(args.net, comp_path, args.domain, epsilon, None)
        print(f"    $ leo-verify check {os.path.basename(args.net)} out/compressed.onnx --domain {args.domain} "
              f"--epsilon {epsilon:.3g}  ->  exit {code} ({text.splitlines()[0] if text else ''}; "
              f"{next((ln for ln in text.splitlines() if ln.startswith('method:')), 'no method')})")
        ok &= code == 0 and "method: certificate" in text

        # 2. one weight of a live unit changed by delta: a replayed counterexample
        g2, what = perturbed(original, res.facts, delta=args.delta, dead=False)
        if g2 is None:
            print(f"--- 2. skipped: {what}")
            ok = False
        else:
            p2 = os.path.join(d, "perturbed.onnx")
            save_onnx(g2, p2, dtype="float64")  # float64: the change is exactly delta
            r2 = check_equivalence(original, g2, box, epsilon=1e-6, time_limit=60)
            show(f"2. original vs a copy with {what}, epsilon = 1e-06", r2)
            ok &= r2.verdict == "counterexample"
            out_json = os.path.join(d, "counterexample.json")
            code, text = cli_check(args.net, p2, args.domain, 1e-6, out_json)
            with open(out_json, encoding="utf-8") as fh:
                saved = json.load(fh)
            print(f"    $ leo-verify check {os.path.basename(args.net)} perturbed.onnx --domain {args.domain} "
                  f"--epsilon 1e-6 -o counterexample.json  ->  exit {code} "
                  f"({text.splitlines()[0] if text else ''}; the JSON has the point: "
                  f"{'counterexample' in saved and saved['counterexample'] is not None})")
            ok &= code == 1

        # 3. a weight of a dead unit changed by 1: the same function on the domain
        g3, what = perturbed(original, res.facts, delta=1.0, dead=True)
        if g3 is None:
            print(f"--- 3. skipped: {what}")
        else:
            r3 = check_equivalence(original, g3, box, mode="exact", time_limit=60)
            show(f"3. original vs a copy with {what} (a dead unit), exact", r3)
            ok &= r3.verdict == "equivalent"
    print("all verdicts as expected" if ok else "UNEXPECTED VERDICT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
