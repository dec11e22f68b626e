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
    return nets


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
