"""Honest output folders and forged ones, for the checker-kernel tests.

Each honest folder is written once per test session by the real CLI
(``compress``), then copied by the tests that edit it.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil

import numpy as np

from groundtruth import abs_trick
from leo_verify.cli import main
from leo_verify.graph import Affine, Graph, Input, Output, Relu
from leo_verify.io.onnx import save_onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "examples", "nets", "tiny_mlp.onnx")
TINY_DOM = os.path.join(ROOT, "examples", "nets", "tiny_mlp_domain.json")
DIGITS = os.path.join(ROOT, "examples", "nets", "digits", "digits_64x25x25x10_l1_1e-03.onnx")


def run_cli(args) -> tuple[int, str, str]:
    """``leo-verify ARGS`` in this process: ``(exit code, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def three_units(bias0: float) -> Graph:
    """``y = sum relu([x0 + bias0, x0 - x1, x1 - 0.3])`` on two inputs."""
    g = Graph(name=f"three-units{bias0}")
    g.add("x", Input(2))
    g.add("fc1", Affine(np.array([[1.0, 0.0], [1.0, -1.0], [0.0, 1.0]]), np.array([bias0, 0.0, -0.3])), ["x"])
    g.add("relu1", Relu(["relu1[0]", "relu1[1]", "relu1[2]"]), ["fc1"])
    g.add("fc2", Affine(np.array([[1.0, 1.0, 1.0]]), np.zeros(1)), ["relu1"])
    g.add("y", Output(1), ["fc2"])
    return g.lint(where="test")


def compress_into(model, out, *extra) -> str:
    code, so, se = run_cli(["compress", model, "-o", out, *extra])
    assert code == 0, so + se
    return str(out)


def honest_folders(base) -> dict:
    """name -> an honest, certified output folder (built under ``base``)."""
    os.makedirs(base, exist_ok=True)
    nets = {}
    abs_model = os.path.join(base, "abs_trick.onnx")
    save_onnx(abs_trick(), abs_model, dtype="float64")
    nets["tiny"] = compress_into(TINY, os.path.join(base, "tiny"), "--domain", TINY_DOM)  # lemmas, bab, smt2
    nets["abs"] = compress_into(abs_model, os.path.join(base, "abs"), "--domain", "box:-1,1")  # piece tree
    nets["digits"] = compress_into(DIGITS, os.path.join(base, "digits"), "--domain", "box:0,1",
                                   "--query-time-limit", "5")  # LP lemmas
    conv_model, conv_box = tiny_conv(base)
    nets["conv"] = compress_into(conv_model, os.path.join(base, "conv"), "--domain", conv_box,
                                 "--no-smt2")  # Conv/Gather segments, MaxPool adds, from_file weights
    return nets


def tiny_conv(base, pool: str = "MaxPool") -> tuple[str, str]:
    """A 1x8x8 conv net (Conv 3x3 pad 1, ReLU, ``pool`` 2x2, Conv 2x2 stride 2, ReLU, Gemm) and an
    L-inf box of radius 0.05 on which a channel of each convolution is dead."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(11)
    inits = {"w": rng.normal(size=(3, 1, 3, 3)).astype(np.float32),
             "b": np.array([0.4, -2.5, 0.1], np.float32),
             "w2": rng.normal(size=(4, 3, 2, 2)).astype(np.float32),
             "b2": np.array([0.2, -3.0, 0.0, 0.5], np.float32),
             "wd": rng.normal(size=(3, 16)).astype(np.float32), "bd": np.zeros(3, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node(pool, ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "w2", "b2"], ["c2"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]), helper.make_node("Flatten", ["r2"], ["f"]),
             helper.make_node("Gemm", ["f", "wd", "bd"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "tiny_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = os.path.join(base, f"tiny_conv_{pool}.onnx")
    onnx.save(m, path)
    centre = np.random.default_rng(2).uniform(0.3, 0.7, 64)
    box = os.path.join(base, "tiny_conv_box.json")
    with open(box, "w") as fh:
        json.dump({"lower": (centre - 0.05).tolist(), "upper": (centre + 0.05).tolist()}, fh)
    return path, box


def copy_folder(src, dst) -> str:
    shutil.copytree(src, dst)
    return str(dst)


def edit_json(path, fn) -> None:
    with open(path) as fh:
        doc = json.load(fh)
    fn(doc)
    with open(path, "w") as fh:
        json.dump(doc, fh)


def sha(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def forged_piece_folder(base) -> tuple[str, str]:
    """The issue's forgery: a certificate that claims the *unstable* ``relu1[0]`` of
    ``relu(x0 - 0.5)`` inactive by a piece tree whose right half proves it *active*.

    Built from the honest compression of the same net with bias -1.5 (where the
    unit really is inactive and is dropped), the original swapped for the -0.5
    net, every hash updated.  Returns ``(folder, model)``.
    """
    os.makedirs(base, exist_ok=True)
    safe, unsafe = os.path.join(base, "safe.onnx"), os.path.join(base, "unsafe.onnx")
    save_onnx(three_units(-1.5), safe, dtype="float32")
    save_onnx(three_units(-0.5), unsafe, dtype="float32")
    out = compress_into(safe, os.path.join(base, "forged"), "--domain", "box:0,1")
    h = sha(unsafe)

    def claim(direction):
        return {"neuron": "relu1[0]", "claim": direction, "status": "proven", "method": "interval",
                "bound": "0", "nodes": 0, "reason": "", "proof": None}

    def piece(lo, hi, direction):
        return {"lower": lo, "upper": hi, "proves": ["relu1[0]"], "claims": [claim(direction)], "lemmas": []}

    def forge(doc):
        doc["original"]["sha256"] = h
        for c in doc["regions"][0]["claims"]:
            if c["neuron"] == "relu1[0]":
                c.update(method="pieces", bound="0", proof=None)
        root = {"lower": ["0", "0"], "upper": ["1", "1"], "proves": [], "claims": [], "lemmas": [],
                "split": {"dim": 0, "at": "1/2"},
                "children": [piece(["0", "0"], ["1/2", "1"], "inactive"), piece(["1/2", "0"], ["1", "1"], "active")]}
        doc["regions"][0]["pieces"] = root

    edit_json(os.path.join(out, "proofs", "certificate.json"), forge)

    def report(doc):
        doc["model"]["sha256"] = h
        doc["model"]["source"] = unsafe

    edit_json(os.path.join(out, "report.json"), report)
    return out, unsafe
