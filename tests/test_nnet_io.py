"""Tests of the .nnet reader/writer (leo_verify.io.nnet)."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from leo_verify.errors import InputFileError, ModelFormatError, UnsupportedOp, UsageError
from leo_verify.graph import Add, Affine, Graph, Input, Output, Relu, neuron_id
from leo_verify.io import load
from leo_verify.io.nnet import load_nnet, save_nnet
from leo_verify.semantics import evaluate, evaluate_exact

ACAS = Path("/work/shared/benchmarks/acasxu/ACASXU_run2a_1_1_batch_2000.onnx")

# 2 inputs -> 3 ReLUs -> 1 output:
#   h = relu([x0, x1, x0 + x1 - 1]);  y = h0 + h1 - h2 + 0.5
TINY = """\
// a hand-written 2-3-1 network
// second comment line
2,2,1,3,
2,3,1,
0,
-1,-2,
1,2,
0.5,-1,10,
2,4,3,
1,0,
0,1,
1,1,
0,
0,
-1,
1,1,-1,
0.5,
"""


def _write(tmp_path, text, name="net.nnet"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _reference(x, layers):
    """The NNet network on normalised inputs, in plain numpy."""
    h = np.asarray(x, dtype=np.float64)
    for k, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if k < len(layers) - 1:
            h = np.maximum(h, 0)
    return h


def _random_chain(sizes, seed=0, name="acas_like"):
    rng = np.random.default_rng(seed)
    g = Graph(name=name)
    prev = g.add("input", Input(sizes[0]))
    for k in range(1, len(sizes)):
        w = rng.normal(size=(sizes[k], sizes[k - 1])) / np.sqrt(sizes[k - 1])
        prev = g.add(f"fc{k}", Affine(w, rng.normal(size=sizes[k]) * 0.1), [prev])
        if k < len(sizes) - 1:
            prev = g.add(f"r{k}", Relu([neuron_id(f"r{k}", i) for i in range(sizes[k])]), [prev])
    g.add("output", Output(sizes[-1]), [prev])
    return g.lint()


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------
def test_tiny_known_outputs(tmp_path):
    g = load_nnet(_write(tmp_path, TINY))
    assert g.summary()["widths"] == [3]
    assert g.neurons() == ["relu1[0]", "relu1[1]", "relu1[2]"]
    x = [[1, 2], [-1, 0.5], [0, 0]]
    np.testing.assert_array_equal(evaluate(g, x), [[1.5], [1.0], [0.5]])
    meta = g.metadata["nnet"]
    assert meta == {"mins": [-1.0, -2.0], "maxes": [1.0, 2.0], "means": [0.5, -1.0, 10.0],
                    "ranges": [2.0, 4.0, 3.0], "normalized": False}
    assert g.metadata["format"] == "nnet" and g.metadata["dtype"] == "float64"
    assert load(str(tmp_path / "net.nnet")).neurons() == g.neurons()  # dispatcher


def test_tiny_normalized(tmp_path):
    g = load_nnet(_write(tmp_path, TINY), normalize=True)
    assert g.metadata["nnet"]["normalized"] is True
    layers = [(np.array([[1.0, 0], [0, 1], [1, 1]]), np.array([0.0, 0, -1])),
              (np.array([[1.0, 1, -1]]), np.array([0.5]))]
    raw = np.random.default_rng(0).uniform(-1, 1, size=(50, 2)) * [1, 2]
    # what the NNet tools compute (inside [min, max], where clipping is the identity)
    want = _reference((raw - [0.5, -1.0]) / [2.0, 4.0], layers) * 3.0 + 10.0
    np.testing.assert_allclose(evaluate(g, raw), want, rtol=0, atol=1e-12)
    # the normalisation's exact weights are the rationals 1/range, -mean/range
    w, b = g.op("normalize_input").rational()
    assert w[1, 1] == Fraction(1, 4) and b[0] == Fraction(-1, 4) and b[1] == Fraction(1, 4)
    # x = (1, 2): normalised (1/4, 3/4), h = (1/4, 3/4, 0), y = 3/2, out = 3/2 * 3 + 10
    assert evaluate_exact(g, [1, 2]) == [Fraction(29, 2)]


def test_normalize_zero_range_refused(tmp_path):
    text = TINY.replace("2,4,3,", "2,0,3,")
    load_nnet(_write(tmp_path, text))  # not used when not normalising
    with pytest.raises(ModelFormatError, match=r"line 9: input 1 has range 0"):
        load_nnet(_write(tmp_path, text), normalize=True)


@pytest.mark.parametrize("old, new, match", [
    # wrong count: a weight row with one value too few
    ("1,0,\n0,1,", "1,0,\n0,", r"line 11: expected 2 value\(s\) \(row 1 of the weights of layer 1\), found 1"),
    # non-numeric token
    ("0,1,\n1,1,", "0,1,\n1,abc,", r"line 12: 'abc' is not a number"),
    # inconsistent sizes: header says 3 inputs, layer sizes say 2
    ("2,2,1,3,", "2,3,1,3,", r"line 4: inputSize is 3 on line 3 but the layer sizes \[2, 3, 1\] give 2"),
    ("2,2,1,3,", "2,2,1,7,", r"line 4: maxLayerSize is 7"),
    ("2,3,1,", "2,3,1,1,", r"line 4: expected 3 value\(s\)"),
    ("2,2,1,3,", "2,2.5,1,3,", r"line 3: '2.5' is not an integer"),
    ("1,1,-1,\n0.5,\n", "1,1,-1,\n0.5,\n\n7,\n", r"line 19: unexpected content"),
    ("1,2,\n0.5,-1,10,", "1,2,\n0.5,,10,", r"line 8: empty value"),
    ("-1,-2,", "-1,-2,3,", r"line 6: expected 2 value\(s\) \(input mins\)"),
    ("-1,-2,\n1,2,", "-1,-2,\n1,-3,", r"line 7: input 1: minimum -2.0 > maximum -3.0"),
    ("0,\n0,\n-1,", "0,\n1e999,\n-1,", r"line 14: '1e999' overflows"),
    ("0,\n0,\n-1,", "0,\nnan,\n-1,", r"line 14: 'nan' is not a number"),
])
def test_malformed_names_line(tmp_path, old, new, match):
    assert old in TINY
    p = _write(tmp_path, TINY.replace(old, new, 1))
    with pytest.raises(ModelFormatError, match=match) as info:
        load_nnet(p)
    assert str(p) in str(info.value)


def test_truncated(tmp_path):
    text = TINY[: TINY.index("1,1,-1,")]
    with pytest.raises(ModelFormatError, match=r"ends early.*row 0 of the weights of layer 2"):
        load_nnet(_write(tmp_path, text))
    with pytest.raises(ModelFormatError, match="ends early"):
        load_nnet(_write(tmp_path, "// only a comment\n"))


def test_size_limits_checked_before_allocating(tmp_path):
    huge = "// huge\n1,2,3,5000000,\n2,5000000,\n"
    with pytest.raises(ModelFormatError, match=r"line 3: layer size 5000000"):
        load_nnet(_write(tmp_path, huge))
    many = "2,100000,1,900000,\n100000,900000,1,\n"  # 9e10 parameters
    with pytest.raises(ModelFormatError, match="parameters"):
        load_nnet(_write(tmp_path, many))


def test_blank_lines_windows_newlines_and_binary(tmp_path):
    text = TINY.replace("\n", "\r\n").replace("0,\r\n-1,", "0,\r\n\r\n-1,")
    p = tmp_path / "crlf.nnet"
    p.write_bytes(text.encode())
    np.testing.assert_array_equal(evaluate(load_nnet(p), [[1, 2]]), [[1.5]])
    b = tmp_path / "bin.nnet"
    b.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelFormatError, match="not UTF-8"):
        load_nnet(b)
    with pytest.raises(InputFileError):
        load_nnet(tmp_path / "missing.nnet")


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------
def test_round_trip_acas_like(tmp_path):
    g = _random_chain([5, 50, 50, 50, 50, 50, 50, 5], seed=1)
    p = tmp_path / "acas.nnet"
    save_nnet(g, p)
    assert sorted(os.listdir(tmp_path)) == ["acas.nnet"]
    g2 = load_nnet(p)
    for (_, a), (_, b) in zip([x for x in g.items() if x[1].kind == "affine"],
                              [x for x in g2.items() if x[1].kind == "affine"]):
        np.testing.assert_array_equal(a.weight, b.weight)  # repr() reads back exactly
        np.testing.assert_array_equal(a.bias, b.bias)
    x = np.random.default_rng(2).uniform(-1, 1, size=(200, 5))
    np.testing.assert_allclose(evaluate(g2, x), evaluate(g, x), rtol=0, atol=1e-12)
    assert g2.summary()["widths"] == [50] * 6


def test_round_trip_keeps_normalisation(tmp_path):
    g = load_nnet(_write(tmp_path, TINY))
    save_nnet(g, tmp_path / "again.nnet")
    g2 = load_nnet(tmp_path / "again.nnet")
    assert g2.metadata["nnet"] == g.metadata["nnet"]
    save_nnet(g, tmp_path / "given.nnet", mins=[0, 0], maxes=[1, 1])
    assert load_nnet(tmp_path / "given.nnet").metadata["nnet"]["maxes"] == [1.0, 1.0]
    with pytest.raises(UsageError, match="means must be 3"):
        save_nnet(g, tmp_path / "bad.nnet", means=[0, 0])


def test_save_refuses_dag(tmp_path):
    g = Graph(name="res")
    g.add("input", Input(2))
    g.add("a", Affine(np.eye(2), np.zeros(2)), ["input"])
    g.add("r", Relu(["r[0]", "r[1]"]), ["a"])
    g.add("s", Add(2), ["r", "input"])
    g.add("output", Output(2), ["s"])
    with pytest.raises(UnsupportedOp, match="residual"):
        save_nnet(g.lint(), tmp_path / "x.nnet")
    assert not os.listdir(tmp_path)


def _two_affines(w1, b1, w2, b2):
    g = Graph(name="two")
    g.add("input", Input(np.shape(w1)[1]))
    g.add("a1", Affine(w1, b1), ["input"])
    g.add("a2", Affine(w2, b2), ["a1"])
    g.add("r", Relu([f"r[{i}]" for i in range(np.shape(w2)[0])]), ["a2"])
    g.add("a3", Affine(np.ones((1, np.shape(w2)[0])), [0.0]), ["r"])
    g.add("output", Output(1), ["a3"])
    return g.lint()


def test_consecutive_affines(tmp_path):
    # exactly representable composition (a power-of-two scaling): written silently
    g = _two_affines(2 * np.eye(2), [0.5, 0.25], [[1.0, 3.0], [0.5, -1.0]], [1.0, 0.0])
    save_nnet(g, tmp_path / "ok.nnet")
    g2 = load_nnet(tmp_path / "ok.nnet")
    assert g2.summary()["widths"] == [2]
    x = np.random.default_rng(3).normal(size=(20, 2))
    # the same real-valued network (float evaluation order differs: compare exactly)
    for p in x[:5]:
        assert evaluate_exact(g2, p) == evaluate_exact(g, p)
    np.testing.assert_allclose(evaluate(g2, x), evaluate(g, x), rtol=0, atol=1e-12)
    # a composition that needs rounding: refused unless compose=True
    g = _two_affines([[0.1, 0.2], [0.3, 0.7]], [0.1, 0.3], [[1 / 3, 0.2], [0.7, 0.9]], [0.1, 0.2])
    with pytest.raises(UnsupportedOp, match=r"\['a1', 'a2'\].*compose=True"):
        save_nnet(g, tmp_path / "no.nnet")
    save_nnet(g, tmp_path / "rounded.nnet", compose=True)
    np.testing.assert_allclose(evaluate(load_nnet(tmp_path / "rounded.nnet"), x), evaluate(g, x),
                               rtol=0, atol=1e-12)


def test_edge_layers_are_exact(tmp_path):
    # ReLU right after the input and before the output, a ReLU run, and a
    # hidden layer with no units: all written with exact identity / dead units.
    g = Graph(name="edges")
    g.add("input", Input(3))
    g.add("r0", Relu(["r0[0]", "r0[1]", "r0[2]"]), ["input"])
    g.add("a", Affine(np.zeros((0, 3)), np.zeros(0)), ["r0"])
    g.add("r1", Relu([]), ["a"])
    g.add("b", Affine(np.zeros((2, 0)), [1.5, -2.0]), ["r1"])
    g.add("r2", Relu(["r2[0]", "r2[1]"]), ["b"])
    g.add("r3", Relu(["r3[0]", "r3[1]"]), ["r2"])
    g.add("output", Output(2), ["r3"])
    g.lint()
    save_nnet(g, tmp_path / "e.nnet")
    g2 = load_nnet(tmp_path / "e.nnet")
    x = np.random.default_rng(4).normal(size=(10, 3))
    np.testing.assert_array_equal(evaluate(g2, x), evaluate(g, x))
    assert g2.summary()["widths"] == [3, 1, 2]


def test_save_normalized_graph_does_not_double_normalisation(tmp_path):
    g = load_nnet(_write(tmp_path, TINY.replace("2,4,3,", "3,4,3,")), normalize=True)
    with pytest.raises(UnsupportedOp, match="compose=True"):
        save_nnet(g, tmp_path / "n.nnet")  # (x - m) / r folded into layer 1 rounds
    save_nnet(g, tmp_path / "n.nnet", compose=True)
    g2 = load_nnet(tmp_path / "n.nnet")
    assert g2.metadata["nnet"]["means"] == [0.0, 0.0, 0.0]
    assert g2.metadata["nnet"]["ranges"] == [1.0, 1.0, 1.0]
    assert g2.metadata["nnet"]["mins"] == g.metadata["nnet"]["mins"]  # raw units still apply
    x = np.random.default_rng(5).uniform(-1, 1, size=(30, 2))
    np.testing.assert_allclose(evaluate(g2, x), evaluate(g, x), rtol=0, atol=1e-12)


def test_save_unwritable(tmp_path):
    g = load_nnet(_write(tmp_path, TINY))
    with pytest.raises(InputFileError):
        save_nnet(g, tmp_path / "missing" / "x.nnet")


# ---------------------------------------------------------------------------
# the real ACAS Xu network (needs the ONNX loader)
# ---------------------------------------------------------------------------
@pytest.mark.skipif(not ACAS.exists(), reason="ACAS Xu benchmark not available")
def test_acas_onnx_to_nnet_round_trip(tmp_path):
    onnx_io = pytest.importorskip("leo_verify.io.onnx")  # written separately
    g = onnx_io.load_onnx(ACAS)
    assert g.summary()["widths"] == [50] * 6
    p = tmp_path / "acas_1_1.nnet"
    save_nnet(g, p, compose=True)  # folds the input Sub(AvgImg) if the loader kept it apart
    g2 = load_nnet(p)
    assert g2.summary()["widths"] == [50] * 6
    x = np.random.default_rng(6).uniform(-0.5, 0.5, size=(500, 5))
    np.testing.assert_allclose(evaluate(g2, x), evaluate(g, x), rtol=0, atol=1e-12)


def test_exact_composition_cost_is_bounded(tmp_path, monkeypatch):
    import leo_verify.io.nnet as nnet_io

    monkeypatch.setattr(nnet_io, "MAX_EXACT_COMPOSE", 3)
    g = _two_affines(2 * np.eye(2), [0.5, 0.25], [[1.0, 3.0], [0.5, -1.0]], [1.0, 0.0])
    with pytest.raises(UnsupportedOp, match="limit 3"):
        save_nnet(g, tmp_path / "x.nnet", compose=True)
