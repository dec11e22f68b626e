"""Issue 17's benchmark table: analysis vs certification time, removed units, unknowns, peak RSS.

    python examples/scale_benchmarks.py                       # every row
    python examples/scale_benchmarks.py --only acas chain50   # rows whose name contains a word
    python examples/scale_benchmarks.py --budget 60 --out out/scale --only mnist
    # OUT/table.md holds the last run of every row run into OUT (mix budgets per row that way)

Rows (the networks are built or trained on first use into ``OUT/nets``, seeded):

* ``acas 1_1 prop_k``: ACAS Xu 1_1 over the prop_1..4 input boxes (``../shared/benchmarks``);
* ``mnist 256x2 prop_0_0.03``: VNN-COMP's ``mnist-net_256x2`` on its L-inf ball;
* ``mnist 4x256`` / ``6x256``: MNIST-sample nets (``leo-verify train --data mnist``, no
  regulariser, 20 epochs) on the L-inf ball of radius 0.03 around test image 0, clipped to [0, 1];
* ``mnist 2x800 l1`` / ``5x100 l1``: l1-trained MNIST-sample nets on ``[0, 1]^784`` (l1 1e-3 for
  2x800; 2e-4 for 5x100, whose 1e-3 training collapses to a dead net of 10 % accuracy);
* ``chain50/100/200``: width-10 near-identity chains (``W = I + 0.3 N(0, 1) / sqrt(10)``,
  biases ``0.1 N(0, 1)``, float32) on ``[0, 1]^10``.

Each row runs ``leo-verify compress`` in a child process (``--no-checkpoint --no-progress``),
so the peak resident set (``wait4``'s ``ru_maxrss``) is that row's alone; a row that outlives
``--timeout`` is killed and reported as such.  Analysis s and certification s come from
``OUT/report.json`` (certification = exact re-proof of the claims + the certificate);
unknowns are the analysis' undecided units.  Rows are written to ``OUT/results.jsonl`` and a
Markdown table to ``OUT/table.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "..", "shared", "benchmarks")


def make_chain(depth: int, path: str, *, width: int = 10, seed: int = 0) -> None:
    """The deep chain of issue 17: near-identity random weights, float32."""
    from leo_verify.io.onnx.writer import save_onnx
    from leo_verify.testing import mlp
    rng = np.random.default_rng(seed)
    ws, bs = [], []
    for _ in range(depth):
        w = np.eye(width) + 0.3 * rng.normal(size=(width, width)) / np.sqrt(width)
        ws.append(w.astype(np.float32).astype(np.float64))
        bs.append((0.1 * rng.normal(size=width)).astype(np.float32).astype(np.float64))
    ws.append(rng.normal(size=(2, width)).astype(np.float32).astype(np.float64))
    bs.append(np.zeros(2))
    save_onnx(mlp(ws, bs, name=f"chain{depth}"), path, dtype="float32")


def train_mnist(hidden: str, l1: str, path: str) -> None:
    subprocess.run([sys.executable, "-m", "leo_verify", "train", "--data", "mnist", "--hidden", hidden,
                    "--l1", l1, "--epochs", "20", "--seed", "0", "--no-progress", "-o", path],
                   check=True, stdout=subprocess.DEVNULL)


def mnist_ball(path: str, radius: float, index: int = 0) -> None:
    from leo_verify.train import load_dataset
    _, x_test, _, _ = load_dataset("mnist")
    x = x_test[index].astype(np.float64)
    with open(path, "w") as fh:
        json.dump({"lower": np.clip(x - radius, 0, 1).tolist(), "upper": np.clip(x + radius, 0, 1).tolist()}, fh)


def rows(out: str):
    """``(name, build, model, domain)``: ``build()`` makes missing files."""
    nets = os.path.join(out, "nets")
    acas = os.path.join(BENCH, "acasxu")
    for p in (1, 2, 3, 4):
        yield (f"acas 1_1 prop_{p}", None, os.path.join(acas, "ACASXU_run2a_1_1_batch_2000.onnx"),
               os.path.join(acas, f"prop_{p}.vnnlib"))
    mn = os.path.join(BENCH, "mnistfc")
    yield ("mnist 256x2 prop_0_0.03", None, os.path.join(mn, "mnist-net_256x2.onnx"),
           os.path.join(mn, "prop_0_0.03.vnnlib"))
    ball = os.path.join(nets, "mnist_test0_ball0.03.json")
    for hidden in ("256,256,256,256", "256,256,256,256,256,256"):
        k = hidden.count(",") + 1
        path = os.path.join(nets, f"mnist_{k}x256.onnx")
        yield (f"mnist {k}x256 ball 0.03", lambda h=hidden, p=path: (train_mnist(h, "0", p), mnist_ball(ball, 0.03)),
               path, ball)
    for hidden, tag, l1 in (("800,800", "2x800", "1e-3"), ("100,100,100,100,100", "5x100", "2e-4")):
        path = os.path.join(nets, f"mnist_{tag}_l1_{l1}.onnx")
        yield (f"mnist {tag} l1 box", lambda h=hidden, p=path, c=l1: train_mnist(h, c, p), path, "box:0,1")
    for depth in (50, 100, 200):
        path = os.path.join(nets, f"chain{depth}.onnx")
        yield (f"chain{depth}", lambda d=depth, p=path: make_chain(d, p), path, "box:0,1")


def run_row(name, model, domain, out, *, budget, timeout, extra) -> dict:
    cmd = [sys.executable, "-m", "leo_verify", "compress", model, "--domain", domain, "-o", out,
           "--no-checkpoint", "--no-progress", *extra]
    if budget is not None:
        cmd += ["--budget", str(budget)]
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(out, "compress.log")
    t0 = time.monotonic()
    with open(log_path, "w") as log_fh:
        proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, start_new_session=True)
    killed = False
    # reap the child ourselves: wait4 gives its own rusage (Popen.wait would reap it first)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - t0 > timeout and not killed:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    with open(log_path, errors="replace") as fh:
        log = fh.read()
    row = {"name": name, "model": os.path.basename(model), "domain": os.path.basename(domain),
           "budget_s": budget, "wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024), "exit": proc.returncode,
           "killed_after_s": timeout if killed else None}
    report = os.path.join(out, "report.json")
    if killed or not os.path.exists(report):
        row["verdict"] = "killed" if killed else f"error (exit {proc.returncode})"
        row["log_tail"] = log[-1500:]
        return row
    with open(report) as fh:
        rep = json.load(fh)
    cert = rep["certificate"]
    tm = rep["timings"]
    counts = rep["facts"]["counts"]
    certify_s = (tm.get("exact_claims") or 0) + (tm.get("certification") or 0)
    row.update({
        "units": rep["before"]["neurons"], "units_after": rep["after"]["neurons"],
        "removed": rep["removed"]["neurons"], "unknown": counts.get("unknown", 0),
        "facts_complete": rep["facts"]["complete"],
        "claims_not_proven": len(rep.get("claims", {}).get("not_proven", {})),
        "analysis_s": tm["analysis"], "certify_s": round(certify_s, 2),
        "ratio": round(certify_s / tm["analysis"], 2) if tm["analysis"] else None,
        "verdict": cert["verdict"]})
    return row


def markdown(results) -> str:
    head = ("| network | domain | units | budget s | analysis s | certification s | ratio | removed | unknown "
            "| claims kept | verdict | wall s | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in results:
        budget = "-" if r.get("budget_s") is None else f"{r['budget_s']:g}"
        if "units" not in r:
            lines.append(f"| {r['name']} | {r['domain']} | | {budget} | | | | | | | {r['verdict']} | {r['wall_s']} "
                         f"| {r['peak_rss_mb']} |")
            continue
        lines.append(f"| {r['name']} | {r['domain']} | {r['units']} | {budget} | {r['analysis_s']:.1f} "
                     f"| {r['certify_s']:.1f} | {r['ratio']} | {r['removed']} | {r['unknown']} "
                     f"| {r['claims_not_proven']} | {r['verdict']} | {r['wall_s']} | {r['peak_rss_mb']} |")
    return head + "\n".join(lines) + "\n"


def parse_args(argv, *, doc: str, out: str, timeout: float):
    """The options every benchmark script of this folder takes."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help="rows whose name contains one of these")
    ap.add_argument("--out", default=out)
    ap.add_argument("--budget", type=float, default=None, help="compress --budget per row (default: none)")
    ap.add_argument("--timeout", type=float, default=timeout, help="kill a row after this many seconds")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more compress options (last)")
    return ap.parse_args(argv)


def write_table(out: str, order: list, render) -> str:
    """OUT/table.md from the last run of every row in OUT/results.jsonl, in ``order``."""
    latest = {}
    path = os.path.join(out, "results.jsonl")
    if os.path.exists(path):
        with open(path) as fh:
            for line in fh:
                rec = json.loads(line)
                latest[rec["name"]] = rec
    table = render([latest[n] for n in order if n in latest])
    with open(os.path.join(out, "table.md"), "w") as fh:
        fh.write(table)
    return table


def run_all(args, rows_fn, render, *, after=None) -> int:
    """Run the rows of ``rows_fn(OUT)`` that ``--only`` selects (building missing files), append
    each to OUT/results.jsonl (``after(row, model, domain, out)`` may add fields), print the
    table of the last run of every row."""
    for name, build, model, domain in rows_fn(args.out):
        if args.only and not any(w in name for w in args.only):
            continue
        if build is not None and not (os.path.exists(model) and (domain.startswith("box:") or os.path.exists(domain))):
            build()
        out = os.path.join(args.out, name.replace(" ", "_").replace("/", "_"))
        row = run_row(name, model, domain, out, budget=args.budget, timeout=args.timeout, extra=args.extra)
        if after is not None:
            after(row, model, domain, out)
        with open(os.path.join(args.out, "results.jsonl"), "a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "log_tail"}), flush=True)
    # the table shows every row run so far into OUT (the last run of each), in row order
    print(write_table(args.out, [name for name, *_ in rows_fn(args.out)], render))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv, doc=__doc__, out="out/scale", timeout=900.0)
    os.makedirs(os.path.join(args.out, "nets"), exist_ok=True)
    return run_all(args, rows, markdown)


if __name__ == "__main__":
    sys.exit(main())
