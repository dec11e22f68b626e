"""The command line as a newcomer meets it: help text, leftovers, and the README's exit-code table.

Every row of the README's "Exit codes" table is produced here by a real
command on a real file (130 and 141 are covered by tests/test_cli.py and
tests/test_resume.py, which send the signals).
"""
from __future__ import annotations

import argparse
import json
import os
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernel_cases import ROOT, TINY, TINY_DOM, run_cli
from leo_verify.cli import build_parser

README = os.path.join(ROOT, "README.md")


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_with_a_default_shows_it_and_every_verb_has_an_example():
    for verb, p in _subparsers().items():
        text = p.format_help()
        assert "example:\n  leo-verify " + verb in text, verb
        for a in p._actions:
            if not a.option_strings or a.default in (None, False, argparse.SUPPRESS) or a.help is None:
                continue
            assert "default" in p._get_formatter()._get_help_string(a) % {"default": a.default}, (verb, a.dest)
            if a.metavar == "S":
                assert "second" in a.help, (verb, a.dest)


def test_options_with_defaults_all_have_help():
    for verb, p in _subparsers().items():
        for a in p._actions:
            if a.option_strings and a.default not in (None, False, argparse.SUPPRESS) and a.dest != "help":
                assert a.help, f"{verb} {a.option_strings[0]} has a default but no help"


def test_a_run_leaves_no_lock_and_a_refused_run_no_empty_folder(tmp_path):
    out = tmp_path / "ok"
    code, so, se = run_cli(["compress", TINY, "--domain", TINY_DOM, "-o", out, "--no-checkpoint"])
    assert code == 0, so + se
    assert not (out / ".lock").exists()
    bad = tmp_path / "refused"
    code, _, se = run_cli(["compress", TINY, "--domain", "box:1,0", "-o", bad])
    assert code == 8 and not bad.exists(), se
    code, _, se = run_cli(["compress", str(tmp_path / "missing.onnx"), "--domain", "box:0,1", "-o", bad])
    assert code == 4 and not bad.exists(), se
    # a second run on the same folder works (the lock was released and removed)
    code, so, se = run_cli(["compress", TINY, "--domain", TINY_DOM, "-o", out, "--no-checkpoint"])
    assert code == 0 and not (out / ".lock").exists(), so + se


# -- the README's exit-code table, row by row ---------------------------------------------------
def _table() -> dict:
    text = open(README).read()
    part = text[text.index("### Exit codes"):]
    part = part[:part.index("\n\n", part.index("| --- |"))]
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \| (.+) \|$", part, re.M)}


def _model(tmp_path, name, nodes, inits, *, domain_opset=None):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], initializer=inits)
    ops = [helper.make_opsetid("", 13)] + ([helper.make_opsetid(domain_opset, 1)] if domain_opset else [])
    m = helper.make_model(g, opset_imports=ops)
    path = str(tmp_path / name)
    onnx.save(m, path)
    return path


def _cases(tmp_path) -> dict:
    """exit code -> a command line that must give it."""
    w = numpy_helper.from_array(np.eye(2, dtype=np.float32), "w")
    b = numpy_helper.from_array(np.zeros(2, dtype=np.float32), "b")
    cyclic = _model(tmp_path, "cyclic.onnx", [helper.make_node("Gemm", ["z", "w", "b"], ["a"]),
                                               helper.make_node("Relu", ["a"], ["z"]),
                                               helper.make_node("Identity", ["z"], ["y"])], [w, b])
    custom = _model(tmp_path, "custom.onnx", [helper.make_node("Gemm", ["x", "w", "b"], ["a"]),
                                               helper.make_node("Frobnicate", ["a"], ["y"], domain="com.example")],
                    [w, b], domain_opset="com.example")
    unsupported = _model(tmp_path, "conv.onnx", [helper.make_node("Gemm", ["x", "w", "b"], ["a"]),
                                                  helper.make_node("Erf", ["a"], ["y"])], [w, b])
    malformed = tmp_path / "garbage.onnx"
    malformed.write_bytes(b"\x08\x07not a model")
    points = tmp_path / "bad_points.json"
    points.write_text(json.dumps([[0.1, "x", 0.3, 0.4]]))
    afile = tmp_path / "afile"
    afile.write_text("x")
    good = str(tmp_path / "good")
    run_cli(["compress", TINY, "--domain", TINY_DOM, "-o", good, "--no-checkpoint"])
    notcert = str(tmp_path / "notcert")
    run_cli(["compress", TINY, "--domain", TINY_DOM, "-o", notcert, "--no-checkpoint"])
    with open(os.path.join(notcert, "compressed.onnx"), "ab") as fh:
        fh.write(b"\x00")
    wrong = str(tmp_path / "wrong.onnx")
    from leo_verify.io import load
    from leo_verify.io.onnx import save_onnx
    from leo_verify.graph import Affine
    g = load(TINY)
    first = [n for n in g.nodes() if g.op(n).kind == "affine"][0]
    op = g.op(first)
    g.replace(first, Affine(op.weight + 0.25, op.bias))
    save_onnx(g, wrong)
    return {
        0: ["recheck", good],
        1: ["check", TINY, wrong, "--domain", TINY_DOM, "--epsilon", "1e-6"],
        2: ["recheck", notcert],
        3: ["compress", TINY, "--domain", TINY_DOM, "-o", str(tmp_path / "u"), "--format", "xml"],
        4: ["info", str(tmp_path / "nope.onnx")],
        5: ["info", str(malformed)],
        6: ["info", unsupported],
        7: ["info", cyclic],
        8: ["analyze", TINY, "--domain", "box:1,0", "-o", str(tmp_path / "f.json")],
        9: ["eval", TINY, "--input", str(points)],
        10: ["compress", TINY, "--domain", TINY_DOM, "-o", str(afile / "sub")],
        "6b": ["info", custom],
    }


def test_every_row_of_the_exit_code_table_is_what_the_tool_does(tmp_path):
    table = _table()
    assert {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 70, 130, 141} <= set(table)
    for code, argv in _cases(tmp_path).items():
        want = 6 if code == "6b" else code
        got, so, se = run_cli(argv)
        assert got == want, (code, table.get(want), argv, so[-500:], se[-500:])
        if want >= 3:
            assert len(se.strip().splitlines()) == 1 and se.startswith("leo-verify: error: "), (code, se)


def test_an_internal_error_is_exit_70_with_a_traceback(monkeypatch):
    from leo_verify import cli

    def boom(args):
        raise RuntimeError("a bug")
    monkeypatch.setitem(cli.COMMANDS, "boom70", cli.Command("boom70", "test only", lambda p: None, boom))
    code, _, se = run_cli(["boom70"])
    assert code == 70 and "Traceback" in se and "internal error" in se
