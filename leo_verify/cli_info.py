"""``leo-verify info`` and ``leo-verify eval``."""
from __future__ import annotations

import argparse
import io
import json
import os
import sys

import numpy as np

from .cli_common import (PROG, Command, check_output_path, fraction_text, load_model, print_json, read_points,
                         register, write_output)
from .errors import UsageError
from .util import sha256_file

# --------------------------------------------------------------------------
# info

def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="network file (.onnx, .nnet, .pt/.pth)")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")


def _conv(graph, relu: str) -> dict:
    """``{"conv": [channels, height, width]}`` when the ReLU layer's feeder is a convolution
    keeping all its outputs (its units are then channel x position), else ``{}``."""
    op = graph.op(graph.args(relu)[0])
    if op.kind != "affine" or op.layout is None:
        return {}
    lay = op.layout
    return {"conv": [lay.out_channels, *lay.out_hw]}


def model_facts(path: str, graph) -> dict:
    s = graph.summary()
    meta = graph.metadata
    fmt = meta.get("format") or os.path.splitext(path)[1].lstrip(".").lower() or "unknown"
    facts = {
        "file": path,
        "sha256": sha256_file(path),
        "format": fmt,
        "opset": meta.get("opset", meta.get("opset_version")),
        "dtype": meta.get("dtype"),
        "name": s["name"],
        "inputs": s["inputs"],
        "outputs": s["outputs"],
        "hidden_layers": [{"name": n, "width": w, **_conv(graph, n)}
                          for n, w in zip(s["layer_names"], s["widths"])],
        "neurons": s["neurons"],
        "parameters": s["parameters"],
        "nodes": s["nodes"],
        "chain": graph.is_chain(),
        "head": graph.op(graph.output_name).head_text(),
    }
    return facts


def _info_run(args) -> int:
    graph = load_model(args.model)
    facts = model_facts(args.model, graph)
    if args.json:
        print_json(facts)
        return 0
    fmt = facts["format"]
    extra = ", ".join(f"{k} {facts[k]}" for k in ("opset", "dtype") if facts[k] is not None)
    layers = facts["hidden_layers"]
    lines = [
        f"model       {facts['file']}",
        f"sha256      {facts['sha256']}",
        f"format      {fmt}{f' ({extra})' if extra else ''}",
        f"inputs      {facts['inputs']}",
        f"outputs     {facts['outputs']}" + (f" logits, then {facts['head']}"
                                              if facts["head"] != "none" else ""),
        f"hidden      {len(layers)} ReLU layer(s)" + (":" if layers else ""),
    ]
    width = max((len(l["name"]) for l in layers), default=0)
    lines += [f"  {l['name']:<{width}}  {l['width']}"
              + (f"  (conv {' x '.join(map(str, l['conv']))})" if "conv" in l else "") for l in layers]
    lines += [
        f"neurons     {facts['neurons']}",
        f"parameters  {facts['parameters']}",
        f"structure   {'chain' if facts['chain'] else 'DAG'} "
        + ", ".join(f"{v} {k}" for k, v in facts["nodes"].items() if v),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


register(Command("info", "show a network's inputs, outputs, layers, size and hash",
                 _info_args, _info_run,
                 example="leo-verify info examples/nets/tiny_mlp.onnx --json"))


# --------------------------------------------------------------------------
# eval

def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="network file (.onnx, .nnet, .pt/.pth)")
    p.add_argument("-i", "--input", required=True, metavar="FILE",
                   help="points: .json (a list of numbers, or a list of lists) or .npy "
                        "(shape (n,) or (k, n))")
    p.add_argument("--exact", action="store_true",
                   help="evaluate in exact rational arithmetic (inputs taken exactly as float64); "
                        "prints 'p/q' strings plus floats (with an output head: the exact logits, "
                        "and the head applied to them in float64)")
    p.add_argument("-o", "--output", metavar="OUT", help="write the outputs to OUT.json or OUT.npy "
                                                          "instead of printing JSON")


def _eval_run(args) -> int:
    out = args.output
    if out is not None:
        low = out.lower()
        if not (low.endswith(".json") or low.endswith(".npy")):
            raise UsageError(f"output {out!r}: expected a .json or .npy file name")
        if args.exact and low.endswith(".npy"):
            raise UsageError("--exact results are rationals: write them to a .json file, not .npy")
        check_output_path(out, [args.model, args.input])
    graph = load_model(args.model)
    pts, single = read_points(args.input, graph.input_size)
    out_op = graph.op(graph.output_name)
    if args.exact:
        from .semantics import evaluate_exact
        exact = [evaluate_exact(graph, [float(v) for v in row]) for row in pts]
        floats = [[float(q) for q in row] for row in exact]
        texts = [[fraction_text(q) for q in row] for row in exact]
        if out_op.head != "none":
            # the exact logits; the head (irrational in general) in float64 from them
            from .heads import apply_head
            floats = apply_head(out_op.head, dict(out_op.head_attrs),
                                np.array(floats, dtype=np.float64).reshape(len(exact), -1)).tolist()
        result = {"outputs": floats[0] if single else floats,
                  "exact": texts[0] if single else texts}
    else:
        from .semantics import evaluate
        ys = evaluate(graph, pts, apply_head=True)
        result = {"outputs": (ys[0] if single else ys).tolist()}
    if out_op.head != "none":
        result["head"] = out_op.head
    if out is None:
        print_json(result)
        return 0
    if out.lower().endswith(".npy"):
        arr = np.asarray(result["outputs"],
                         dtype=np.int64 if out_op.head == "argmax" else np.float64)
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        write_output(out, buf.getvalue())
    else:
        write_output(out, (json.dumps(result) + "\n").encode("utf-8"))
    sys.stdout.write(f"{PROG}: wrote {len(pts)} output vector(s) to {out}\n")
    return 0


register(Command("eval", "evaluate a network at points (float64, or exactly with --exact); "
                         "an output head (softmax, ..., argmax) is applied",
                 _eval_args, _eval_run,
                 example="leo-verify eval examples/nets/tiny_mlp.onnx --input examples/nets/tiny_point.json --exact"))
