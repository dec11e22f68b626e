"""Tests of the ONNX reader and writer (leo_verify.io.onnx)."""
from __future__ import annotations

import io
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

from leo_verify.errors import GraphError, LeoError, ModelFormatError, UnsupportedOp
from leo_verify.graph import Affine, Graph, Input, Output, Relu, neuron_id
from leo_verify.io.onnx import graph_from_onnx_model, load_onnx, save_onnx, to_onnx_model
from leo_verify.semantics import evaluate, evaluate_exact

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
ACAS = sorted((BENCH / "acasxu").glob("*.onnx")) if BENCH.is_dir() else []
MNIST = BENCH / "mnistfc" / "mnist-net_256x2.onnx"
TOY = sorted((BENCH / "toy").glob("*.onnx")) if BENCH.is_dir() else []
needs_bench = pytest.mark.skipif(not ACAS, reason=f"benchmarks not found at {BENCH}")

# (file, low, high) of a plausible input domain
BENCH_CASES = ([(p, -0.5, 0.5) for p in ACAS] + ([(MNIST, 0.0, 1.0)] if MNIST.exists() else [])
               + [(p, -1.0, 1.0) for p in TOY])


def _ids(cases):
    return [c[0].name for c in cases]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _session(model) -> ort.InferenceSession:
    if isinstance(model, Path):
        data = str(model)
    elif isinstance(model, (bytes, str)):
        data = model
    else:
        data = model.SerializeToString()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _run_ort(sess, x: np.ndarray) -> np.ndarray:
    """Run ``sess`` on the points ``x`` (batch, n), one point at a time if the batch is fixed."""
    inp = sess.get_inputs()[0]
    dtype = np.float64 if inp.type == "tensor(double)" else np.float32
    dims = list(inp.shape)
    if dims and not isinstance(dims[0], int):
        shape = [len(x)] + [int(d) for d in dims[1:]]
        return sess.run(None, {inp.name: x.astype(dtype).reshape(shape)})[0].reshape(len(x), -1)
    shape = [int(d) for d in dims]
    out = [sess.run(None, {inp.name: p.astype(dtype).reshape(shape)})[0].ravel() for p in x]
    return np.array(out)


def _close(y, ref, rel):
    scale = np.maximum(1.0, np.abs(ref))
    err = np.abs(y - ref) / scale
    assert err.max() <= rel, f"max scaled error {err.max():.3g} > {rel}"


def _model(nodes, inits, in_shape, out_shape=None, *, opset=13, in_type=TensorProto.FLOAT,
           name="x", out="y", extra_inputs=(), out_type=None):
    """A one-input, one-output model; the output shape is inferred unless given."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]

    def build(shape):
        g = helper.make_graph(
            nodes, "test",
            [helper.make_tensor_value_info(name, in_type, in_shape), *extra_inputs],
            [helper.make_tensor_value_info(out, out_type or TensorProto.FLOAT, shape)],
            initializer=inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 7
        return m

    if out_shape is None:
        # the checker wants a shape on graph outputs: take the inferred one
        out_shape = ["out"]
        try:
            inferred = onnx.shape_inference.infer_shapes(build(None), strict_mode=True)
            tt = inferred.graph.output[0].type.tensor_type
            if tt.HasField("shape"):
                out_shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "d")
                             for d in tt.shape.dim]
        except Exception:
            pass
    return build(out_shape)


def _check_model_vs_ort(model, n_points=50, rel=1e-5, seed=0):
    """Load ``model`` and compare evaluate with onnxruntime; returns the graph."""
    g = graph_from_onnx_model(model)
    x = np.random.default_rng(seed).uniform(-1, 1, (n_points, g.input_size)).astype(np.float32)
    ref = _run_ort(_session(model), x.astype(np.float64))
    _close(evaluate(g, x.astype(np.float64)), ref, rel)
    return g


def _random_mlp(rng, n_in, widths, n_out, dtype=np.float32) -> Graph:
    g = Graph(name="mlp")
    prev = g.add("input", Input(n_in))
    size = n_in
    for k, w in enumerate(widths):
        W = rng.uniform(-1, 1, (w, size)).astype(dtype)
        b = rng.uniform(-1, 1, w).astype(dtype)
        a = g.add(f"fc{k}", Affine(W, b), [prev])
        prev = g.add(f"relu{k}", Relu([neuron_id(f"relu{k}", i) for i in range(w)]), [a])
        size = w
    W = rng.uniform(-1, 1, (n_out, size)).astype(dtype)
    b = rng.uniform(-1, 1, n_out).astype(dtype)
    a = g.add("head", Affine(W, b), [prev])
    g.add("output", Output(n_out), [a])
    return g.lint()


# ---------------------------------------------------------------------------
# 1-3: benchmark networks
# ---------------------------------------------------------------------------
@needs_bench
@pytest.mark.parametrize("path,lo,hi", BENCH_CASES, ids=_ids(BENCH_CASES))
def test_benchmark_matches_onnxruntime(path, lo, hi):
    g = load_onnx(path)
    x = np.random.default_rng(1).uniform(lo, hi, (1000, g.input_size)).astype(np.float32)
    ref = _run_ort(_session(path), x.astype(np.float64))
    _close(evaluate(g, x.astype(np.float64)), ref, 1e-5)
    assert g.metadata["format"] == "onnx" and g.metadata["dtype"] == "float32"
    assert g.metadata["source"] == str(path)


@needs_bench
def test_exact_interpreter_matches_float():
    # mnist-net_256x2 takes ~2 s per exact point: use ACAS and the toy nets.
    cases = [(ACAS[0], 40, -0.5, 0.5)] + [(p, 5, -1.0, 1.0) for p in TOY]
    total = 0
    for path, n, lo, hi in cases:
        g = load_onnx(path)
        x = np.random.default_rng(2).uniform(lo, hi, (n, g.input_size))
        yf = evaluate(g, x)
        for p, y in zip(x, yf):
            ye = np.array([float(v) for v in evaluate_exact(g, p)])
            np.testing.assert_allclose(ye, y, rtol=0, atol=1e-9 * max(1.0, np.abs(y).max()))
        total += n
    assert total >= 50


@needs_bench
@pytest.mark.parametrize("path", ACAS, ids=[p.name for p in ACAS])
def test_acas_structure(path):
    g = load_onnx(path)
    s = g.summary()
    assert (s["inputs"], s["outputs"], s["widths"]) == (5, 5, [50] * 6)
    assert g.is_chain()
    assert g.op(g.input_name).shape == (1, 1, 1, 5)
    assert g.metadata["opset"] == 8 and g.metadata["input_name"] == "input"
    assert g.neurons()[0] == neuron_id("relu_1", 0)


# ---------------------------------------------------------------------------
# 4: writer round trip
# ---------------------------------------------------------------------------
ROUND_TRIP = ([(ACAS[0], -0.5, 0.5)] if ACAS else []) + \
    ([(MNIST, 0.0, 1.0)] if MNIST.exists() else []) + [(p, -1.0, 1.0) for p in TOY]


@needs_bench
@pytest.mark.parametrize("path,lo,hi", ROUND_TRIP, ids=_ids(ROUND_TRIP))
def test_round_trip(tmp_path, path, lo, hi):
    g = load_onnx(path)
    x = np.random.default_rng(3).uniform(lo, hi, (200, g.input_size)).astype(np.float32)
    x = x.astype(np.float64)
    y = evaluate(g, x)

    out = tmp_path / "net.onnx"
    assert save_onnx(g, out) == str(out)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    g2 = load_onnx(out)
    _close(evaluate(g2, x), y, 1e-6)
    assert g2.neurons() == g.neurons()  # relu layer names survive the trip
    # the emitted file runs in onnxruntime with the same outputs as the original
    _close(_run_ort(_session(out), x), _run_ort(_session(path), x), 1e-5)
    _close(_run_ort(_session(out), x), y, 1e-5)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file
    assert out.stat().st_mode & 0o044  # not mkstemp's private 0600

    # float64: bit-exact weights and outputs
    out64 = tmp_path / "net64.onnx"
    save_onnx(g, out64, dtype="float64")
    onnx.checker.check_model(onnx.load(str(out64)), full_check=True)
    g3 = load_onnx(out64)
    assert g3.metadata["dtype"] == "float64"
    assert [op.kind for _, op in g3.items()] == [op.kind for _, op in g.items()]
    for (_, a), (_, b) in zip(g.items(), g3.items()):
        if a.kind == "affine":
            assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    assert np.array_equal(evaluate(g3, x), y)
    np.testing.assert_allclose(_run_ort(_session(out64), x), y, rtol=1e-12, atol=1e-12)


def test_writer_residual_and_add_chain(tmp_path):
    from leo_verify.graph import Add
    rng = np.random.default_rng(4)
    g = Graph(name="res")
    g.add("input", Input(3))
    g.add("a", Affine(rng.normal(size=(3, 3)), rng.normal(size=3)), ["input"])
    g.add("r", Relu([neuron_id("r", i) for i in range(3)]), ["a"])
    g.add("b", Affine(rng.normal(size=(3, 3)), rng.normal(size=3)), ["r"])
    g.add("sum", Add(3, 3), ["input", "r", "b"])
    g.add("out", Output(3), ["sum"])
    g.lint()
    save_onnx(g, tmp_path / "res.onnx", dtype="float64")
    onnx.checker.check_model(onnx.load(str(tmp_path / "res.onnx")), full_check=True)
    x = rng.uniform(-1, 1, (20, 3))
    g2 = load_onnx(tmp_path / "res.onnx")
    assert np.array_equal(evaluate(g2, x), evaluate(g, x))
    np.testing.assert_allclose(_run_ort(_session(tmp_path / "res.onnx"), x), evaluate(g, x),
                               rtol=1e-12, atol=1e-12)
    assert sum(op.kind == "add" for _, op in g2.items()) == 2  # a 3-ary add became two Adds


def test_writer_identity_network(tmp_path):
    g = Graph(name="id")
    g.add("input", Input(2))
    g.add("out", Output(2), ["input"])
    save_onnx(g.lint(), tmp_path / "id.onnx")
    g2 = load_onnx(tmp_path / "id.onnx")
    x = np.array([[1.5, -2.0]])
    assert np.array_equal(evaluate(g2, x), x)
    assert len(g2) == 2


# ---------------------------------------------------------------------------
# 5: torch-exported models
# ---------------------------------------------------------------------------
torch = pytest.importorskip("torch")


class _Residual(torch.nn.Module):
    def __init__(self, n=6):
        super().__init__()
        self.inp = torch.nn.Linear(4, n)
        self.fc = torch.nn.Linear(n, n)
        self.head = torch.nn.Linear(n, 3)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        h = h + self.fc(h)
        return self.head(torch.relu(h))


def _torch_nets():
    torch.manual_seed(0)
    seq = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
        torch.nn.Dropout(0.3), torch.nn.Linear(8, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    with torch.no_grad():
        bn = seq[2]
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(-1, 1)
        bn.bias.uniform_(-1, 1)
    return [("sequential", seq, (2, 3)), ("residual", _Residual(), (4,))]


def _export(net, shape, opset, dtype):
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros((1,) + shape, dtype=dtype), f, dynamo=False,
                          opset_version=opset, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return f.getvalue()


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("which", ["sequential", "residual"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_exported(which, opset, dtype):
    name, net, shape = {n: (n, m, s) for n, m, s in _torch_nets()}[which]
    tdt = getattr(torch, dtype)
    net = net.to(tdt).eval()
    g = graph_from_onnx_model(_export(net, shape, opset, tdt), source=f"{name}.onnx")
    assert g.metadata["dtype"] == dtype and g.metadata["opset"] == opset
    x = torch.rand((200,) + shape, dtype=tdt) * 2 - 1
    with torch.no_grad():
        ref = net(x).double().numpy()
    y = evaluate(g, x.double().reshape(200, -1).numpy())
    _close(y, ref, 1e-6 if dtype == "float64" else 1e-5)
    if which == "residual":
        assert sum(op.kind == "add" for _, op in g.items()) == 1
        assert g.summary()["widths"] == [6, 6]


# ---------------------------------------------------------------------------
# 6: the exactness rule
# ---------------------------------------------------------------------------
def _acas_weights(path):
    m = onnx.load(str(path))
    return m, {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


@needs_bench
def test_acas_exact_first_layer():
    m, w = _acas_weights(ACAS[0])
    assert not np.any(w["input_AvgImg"])  # the published nets subtract a zero mean...
    g = load_onnx(ACAS[0])
    affines = [(n, op) for n, op in g.items() if op.kind == "affine"]
    assert len(affines) == 7  # ...so Sub(0) composes exactly: no normalisation node
    W1 = w["Operation_1_MatMul_W"].astype(np.float64).T
    assert np.array_equal(affines[0][1].weight, W1)  # bitwise: composition was exact
    assert np.array_equal(affines[0][1].bias, w["Operation_1_Add_B"].astype(np.float64))


@needs_bench
def test_acas_nonzero_mean_gets_own_affine():
    m, w = _acas_weights(ACAS[0])
    avg = np.array([0.1, -0.25, 0.3, 1e-3, 7.0], dtype=np.float32)
    for t in m.graph.initializer:
        if t.name == "input_AvgImg":
            t.CopyFrom(numpy_helper.from_array(avg.reshape(1, 1, 1, 5), "input_AvgImg"))
    g = graph_from_onnx_model(m)
    names = g.nodes()
    norm, first = g.op(names[1]), g.op(names[2])
    assert norm.kind == "affine" and first.kind == "affine"
    assert np.array_equal(norm.weight, np.eye(5))
    assert np.array_equal(norm.bias, -avg.astype(np.float64))
    assert np.array_equal(first.weight, w["Operation_1_MatMul_W"].astype(np.float64).T)
    assert np.array_equal(first.bias, w["Operation_1_Add_B"].astype(np.float64))
    _check_model_vs_ort(m, rel=1e-5)


@needs_bench
def test_gemm_with_bias_is_one_affine():
    g = load_onnx(MNIST)
    assert [op.kind for _, op in g.items()] == \
        ["input", "affine", "relu", "affine", "relu", "affine", "output"]
    m, w = _acas_weights(MNIST)
    assert np.array_equal(g.op(g.nodes()[1]).weight, w["layers.0.weight"].astype(np.float64))


def test_scaled_bias_is_materialized_not_rounded():
    # (x + 0.1) * 3: composing would compute 3 * 0.1 in float64 and round.
    c = np.float32(0.1)
    nodes = [helper.make_node("Add", ["x", "c"], ["h"], name="shift"),
             helper.make_node("Mul", ["h", "s"], ["y"], name="scale")]
    m = _model(nodes, {"c": np.full(3, c, np.float32), "s": np.full(3, 3.0, np.float32)}, [1, 3])
    g = _check_model_vs_ort(m)
    kinds = [op.kind for _, op in g.items()]
    assert kinds == ["input", "affine", "affine", "output"]
    x = [Fraction(1, 3), Fraction(0), Fraction(-2)]
    y = evaluate_exact(g, [float(v) for v in x])
    assert y == [(Fraction(float(v)) + Fraction(float(c))) * 3 for v in x]


def test_div_by_non_power_of_two_is_exact():
    nodes = [helper.make_node("Div", ["x", "d"], ["y"], name="div")]
    d = np.array([3.0, 0.5, 10.0], np.float32)
    g = _check_model_vs_ort(_model(nodes, {"d": d}, [1, 3]))
    p = [1.0, -2.0, 0.7]
    assert evaluate_exact(g, p) == [Fraction(v) / Fraction(float(di)) for v, di in zip(p, d)]


# ---------------------------------------------------------------------------
# op coverage against onnxruntime
# ---------------------------------------------------------------------------
def test_transpose_reshape_squeeze_unsqueeze_opset13():
    rng = np.random.default_rng(5)
    W = rng.normal(size=(6, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1], name="tr"),    # (1,3,2)
        helper.make_node("Reshape", ["t", "s1"], ["r"], name="rs"),                 # (0,-1)->(1,6)
        helper.make_node("Unsqueeze", ["r", "ax0"], ["u"], name="unsq"),            # (1,1,6)
        helper.make_node("Squeeze", ["u", "ax0"], ["q"], name="sq"),                # (1,6)
        helper.make_node("MatMul", ["q", "W"], ["m"], name="mm"),
        helper.make_node("Sub", ["c", "m"], ["n"], name="csub"),                    # c - m
        helper.make_node("Relu", ["n"], ["y"], name="act"),
    ]
    inits = {"s1": np.array([0, -1], np.int64), "ax0": np.array([1], np.int64), "W": W,
             "c": rng.normal(size=4).astype(np.float32)}
    g = _check_model_vs_ort(_model(nodes, inits, [1, 2, 3]))
    assert g.op(g.input_name).shape == (1, 2, 3)
    assert g.neurons() == [neuron_id("act", i) for i in range(4)]


def test_squeeze_unsqueeze_attribute_form_opset11():
    W = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0], name="unsq"),   # (1,3)->(1,1,3)
        helper.make_node("Squeeze", ["u"], ["q"], axes=[0], name="sq"),
        helper.make_node("MatMul", ["q", "W"], ["y"], name="mm"),
    ]
    _check_model_vs_ort(_model(nodes, {"W": W}, [1, 3], opset=11))


def test_gemm_variants():
    rng = np.random.default_rng(6)
    A = rng.normal(size=(4, 3)).astype(np.float32)   # const A with var B
    C = rng.normal(size=(4, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], name="t"),                      # (3,1)
        helper.make_node("Gemm", ["A", "xt", "C"], ["g1"], alpha=0.5, beta=2.0, name="g1"),  # (4,1)
        helper.make_node("Gemm", ["g1", "B", "bias"], ["y"], transA=1, transB=1, alpha=0.3,
                         name="g2"),                                                 # (1,2)
    ]
    inits = {"A": A, "C": C, "B": rng.normal(size=(2, 4)).astype(np.float32),
             "bias": rng.normal(size=(2,)).astype(np.float32)}
    _check_model_vs_ort(_model(nodes, inits, [1, 3]))


def test_gemm_alpha_that_would_round_is_a_separate_step():
    # float64 weights times alpha=0.3 round in float64: scale in a separate affine
    rng = np.random.default_rng(10)
    B = rng.normal(size=(3, 2))
    nodes = [helper.make_node("Gemm", ["x", "B"], ["y"], alpha=0.3, name="g")]
    m = _model(nodes, {"B": B}, [1, 3], [1, 2], in_type=TensorProto.DOUBLE,
               out_type=TensorProto.DOUBLE)
    g = _check_model_vs_ort(m, rel=1e-12)
    affines = [op for _, op in g.items() if op.kind == "affine"]
    assert len(affines) == 2 and np.array_equal(affines[0].weight, B.T)
    alpha = float(np.float32(0.3))  # ONNX float attributes are float32
    assert np.array_equal(affines[1].weight, alpha * np.eye(2))
    nodes = [helper.make_node("Gemm", ["x", "B", "C"], ["y"], beta=0.3, name="g")]
    m = _model(nodes, {"B": B, "C": rng.normal(size=2)}, [1, 3], [1, 2],
               in_type=TensorProto.DOUBLE, out_type=TensorProto.DOUBLE)
    with pytest.raises(UnsupportedOp, match="beta"):
        graph_from_onnx_model(m)


def test_matmul_const_left_2d_and_broadcast_add():
    rng = np.random.default_rng(7)
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["r"], name="rs"),          # (1,6) -> (3,2)
        helper.make_node("MatMul", ["L", "r"], ["m"], name="left"),         # (4,3)@(3,2)=(4,2)
        helper.make_node("Add", ["m", "row"], ["a"], name="addrow"),        # + (2,)
        helper.make_node("Mul", ["a", "col"], ["b"], name="mulcol"),        # * (4,1)
        helper.make_node("Flatten", ["b"], ["f"], axis=0, name="flat"),     # (1,8)
        helper.make_node("Add", ["f", "big"], ["y"], name="bcast"),         # (1,8) + (2,8) -> (2,8)
    ]
    inits = {"s": np.array([3, 2], np.int64), "L": rng.normal(size=(4, 3)).astype(np.float32),
             "row": rng.normal(size=2).astype(np.float32),
             "col": rng.normal(size=(4, 1)).astype(np.float32),
             "big": rng.normal(size=(2, 8)).astype(np.float32)}
    g = _check_model_vs_ort(_model(nodes, inits, [1, 6]))
    assert g.output_size == 16


def test_residual_same_source_and_subtraction():
    rng = np.random.default_rng(8)
    nodes = [
        helper.make_node("Relu", ["x"], ["h"], name="r1"),
        helper.make_node("Add", ["h", "h"], ["d"], name="double"),          # h + h = 2h
        helper.make_node("MatMul", ["h", "W"], ["m"], name="mm"),
        helper.make_node("Sub", ["d", "m"], ["y"], name="diff"),            # 2h - hW
    ]
    g = _check_model_vs_ort(_model(nodes, {"W": rng.normal(size=(3, 3)).astype(np.float32)},
                                   ["N", 3]))
    assert sum(op.kind == "add" for _, op in g.items()) == 1


def test_output_is_input_or_constant():
    g = _check_model_vs_ort(_model([helper.make_node("Identity", ["x"], ["y"])], {}, [1, 3]))
    assert [op.kind for _, op in g.items()] == ["input", "output"]
    c = np.array([1.0, 2.0], np.float32)
    nodes = [helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(c))]
    g = graph_from_onnx_model(_model(nodes, {}, [1, 3]))
    assert np.array_equal(evaluate(g, np.ones((2, 3))), np.array([[1.0, 2.0]] * 2))


def test_batchnorm_and_dropout_direct():
    rng = np.random.default_rng(9)
    nodes = [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["n"], name="bn",
                              epsilon=1e-3),
             helper.make_node("Dropout", ["n"], ["y"], name="drop")]
    inits = {"g": rng.normal(size=3).astype(np.float32), "b": rng.normal(size=3).astype(np.float32),
             "m": rng.normal(size=3).astype(np.float32),
             "v": rng.uniform(0.5, 2, size=3).astype(np.float32)}
    _check_model_vs_ort(_model(nodes, inits, [1, 3, 2]))


def test_dead_branch_is_ignored():
    nodes = [helper.make_node("Relu", ["x"], ["dead"], name="unused"),
             helper.make_node("Sigmoid", ["dead"], ["dead2"], name="unused_sig"),
             helper.make_node("Relu", ["x"], ["y"], name="used")]
    g = _check_model_vs_ort(_model(nodes, {}, [1, 3]))
    assert [n for n, _ in g.relus()] == ["used"]


# ---------------------------------------------------------------------------
# 7: errors
# ---------------------------------------------------------------------------
def test_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty"):
        load_onnx(p)


@needs_bench
def test_truncated_file(tmp_path):
    data = ACAS[0].read_bytes()
    p = tmp_path / "half.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="half.onnx"):
        load_onnx(p)


def test_missing_file(tmp_path):
    from leo_verify.errors import InputFileError
    with pytest.raises(InputFileError):
        load_onnx(tmp_path / "nope.onnx")


def test_garbage_file(tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"\xff\xfe not a protobuf at all" * 10)
    with pytest.raises(ModelFormatError, match="junk.onnx"):
        load_onnx(p)


def test_unsupported_conv_transpose():
    # convolutions are supported (tests/test_conv.py); their transpose is not
    w = np.ones((1, 2, 3, 3), np.float32)
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="deconv1")]
    with pytest.raises(UnsupportedOp, match=r"deconv1.*ConvTranspose"):
        graph_from_onnx_model(_model(nodes, {"w": w}, [1, 1, 5, 5]))


def test_unsupported_sigmoid_unnamed_node():
    nodes = [helper.make_node("Sigmoid", ["x"], ["sig_out"]),
             helper.make_node("Relu", ["sig_out"], ["y"])]
    with pytest.raises(UnsupportedOp, match=r"sig_out.*Sigmoid"):
        graph_from_onnx_model(_model(nodes, {}, [1, 3]))


def test_nan_weight_fails_lint():
    W = np.ones((3, 2), np.float32)
    W[1, 0] = np.nan
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="fc1"),
             helper.make_node("Relu", ["m"], ["y"], name="act")]
    with pytest.raises(GraphError, match=r"<memory>.*fc1.*not finite"):
        graph_from_onnx_model(_model(nodes, {"W": W}, [1, 3]))


def test_shape_mismatched_matmul():
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="bad_mm")]
    with pytest.raises(LeoError, match=r"bad_mm.*\[1, 3\].*\[4, 2\]"):
        graph_from_onnx_model(_model(nodes, {"W": np.ones((4, 2), np.float32)}, [1, 3]))


def test_division_by_zero():
    nodes = [helper.make_node("Div", ["x", "d"], ["y"], name="div0")]
    with pytest.raises(ModelFormatError, match=r"div0.*zero"):
        graph_from_onnx_model(_model(nodes, {"d": np.array([1, 0, 2], np.float32)}, [1, 3]))


def test_external_data_refused(tmp_path):
    W = np.ones((3, 2), np.float32)
    m = _model([helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")], {"W": W}, [1, 3])
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.data", size_threshold=0)
    with pytest.raises(ModelFormatError, match="external data"):
        load_onnx(tmp_path / "ext.onnx")


def test_non_float_input():
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)]
    with pytest.raises(LeoError, match="INT64"):
        graph_from_onnx_model(_model(nodes, {}, [1, 3], in_type=TensorProto.INT64))


@pytest.mark.parametrize("shape,match", [([1, 0], "dimension 1 as 0"),
                                         (["N", "M"], "dynamic dimension 1")])
def test_bad_input_dims(shape, match):
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    with pytest.raises(ModelFormatError, match=match):
        graph_from_onnx_model(_model(nodes, {}, shape))


def test_two_real_inputs():
    nodes = [helper.make_node("Add", ["x", "z"], ["y"])]
    extra = [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3])]
    with pytest.raises(ModelFormatError, match="exactly one network input"):
        graph_from_onnx_model(_model(nodes, {}, [1, 3], extra_inputs=extra))


def test_product_of_network_values():
    nodes = [helper.make_node("Mul", ["x", "x"], ["y"], name="square")]
    with pytest.raises(UnsupportedOp, match=r"square.*Mul"):
        graph_from_onnx_model(_model(nodes, {}, [1, 3]))


def test_save_to_missing_folder(tmp_path):
    from leo_verify.errors import InputFileError
    g = _random_mlp(np.random.default_rng(0), 2, [2], 1)
    with pytest.raises(InputFileError):
        save_onnx(g, tmp_path / "no" / "such" / "net.onnx")


# ---------------------------------------------------------------------------
# 8: property test of the writer/reader pair
# ---------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(n_in=st.integers(1, 6), widths=st.lists(st.integers(1, 8), min_size=1, max_size=3),
       n_out=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_random_mlp_round_trip(n_in, widths, n_out, seed):
    rng = np.random.default_rng(seed)
    g = _random_mlp(rng, n_in, widths, n_out)
    x = rng.uniform(-1, 1, (20, n_in)).astype(np.float32).astype(np.float64)
    y = evaluate(g, x)
    model = to_onnx_model(g)  # float32: the weights are float32 values, so nothing rounds
    onnx.checker.check_model(model, full_check=True)
    g2 = graph_from_onnx_model(model.SerializeToString())
    assert np.array_equal(evaluate(g2, x), y)  # identical weights: bitwise equal
    _close(_run_ort(_session(model), x), y, 1e-6)
