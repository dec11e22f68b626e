"""Convolutional networks: the ONNX ops Conv/Pad/pools against onnxruntime, their exact
semantics, the conv layout of the IR, the writers' conv form and the kernel's form check."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

from leo_verify.conv_layout import ConvLayout
from leo_verify.errors import GraphError, UnsupportedOp
from leo_verify.graph import Affine
from leo_verify.io.onnx import graph_from_onnx_model, to_onnx_model
from leo_verify.kernel.emitted import check_emitted_onnx
from leo_verify.passes.drop import drop_inactive
from leo_verify.semantics import evaluate, evaluate_exact


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _model(nodes, inits, in_shape, *, opset=13, out="y"):
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, "n"])],
                          initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _ort(model, x: np.ndarray, in_shape) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: p.astype(np.float32).reshape(in_shape)})[0].reshape(1, -1)
                           for p in x])


def _agree(model, in_shape, *, seed=0, points=4):
    """The graph of ``model`` agrees with onnxruntime (float32 tolerance) and, at one point,
    its exact interpreter with its float one; returns the graph."""
    g = graph_from_onnx_model(model)
    x = np.random.default_rng(seed).uniform(-1, 1, (points, g.input_size)).astype(np.float32)
    x = x.astype(np.float64)
    ref = _ort(model, x, in_shape)
    ours = evaluate(g, x)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    exact = evaluate_exact(g, [Fraction(float(v)) for v in x[0]])
    np.testing.assert_allclose([float(v) for v in exact], ours[0], rtol=1e-12, atol=1e-12)
    return g


def _conv_node(rng, C, M, k, groups, **attrs):
    w = rng.normal(size=(M, C // groups) + tuple(k)).astype(np.float32)
    b = rng.normal(size=M).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["c"], group=groups, **attrs)
    return node, {"w": w, "b": b}


def _flat_out(src="c"):
    return helper.make_node("Flatten", [src], ["y"], axis=1)


# ---------------------------------------------------------------------------
# Conv against onnxruntime, and the writer's conv form
# ---------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.data())
def test_conv_matches_onnxruntime_and_round_trips_in_conv_form(data):
    nsp = data.draw(st.sampled_from([1, 2]), label="spatial dims")
    groups = data.draw(st.sampled_from([1, 2]), label="groups")
    C = groups * data.draw(st.integers(1, 2))
    M = groups * data.draw(st.integers(1, 2))
    k = [data.draw(st.integers(1, 3)) for _ in range(nsp)]
    s = [data.draw(st.integers(1, 2)) for _ in range(nsp)]
    d = [data.draw(st.integers(1, 2)) for _ in range(nsp)]
    size = [data.draw(st.integers((kk - 1) * dd + 1, 7)) for kk, dd in zip(k, d)]
    auto = data.draw(st.sampled_from(["NOTSET", "NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]))
    attrs = {"kernel_shape": k, "strides": s, "dilations": d}
    if auto == "NOTSET":
        attrs["pads"] = [data.draw(st.integers(0, kk - 1)) for kk in k + k]
    else:
        attrs["auto_pad"] = auto
        if auto.startswith("SAME"):
            attrs["dilations"] = [1] * nsp  # onnxruntime's SAME with dilations differs by version
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    node, inits = _conv_node(rng, C, M, k, groups, **attrs)
    in_shape = [1, C] + size
    model = _model([node, helper.make_node("Relu", ["c"], ["r"]), _flat_out("r")], inits, in_shape)
    g = _agree(model, in_shape)
    convs = [op for _, op in g.items() if op.kind == "affine"]
    assert len(convs) == 1 and convs[0].layout is not None
    assert convs[0].parameters == inits["w"].size + inits["b"].size
    # the writer emits a Conv the kernel accepts, and reading it back gives the same weights
    emitted = to_onnx_model(g)
    assert "Conv" in [n.op_type for n in emitted.graph.node]
    assert "Gemm" not in [n.op_type for n in emitted.graph.node]
    assert check_emitted_onnx(emitted.SerializeToString()) == (True, "")
    back = graph_from_onnx_model(emitted)
    (_, a), = [(n, op) for n, op in back.items() if op.kind == "affine"]
    assert np.array_equal(a.weight, convs[0].weight) and np.array_equal(a.bias, convs[0].bias)
    x = rng.uniform(-1, 1, (3, g.input_size))
    np.testing.assert_allclose(_ort(emitted, x, [1, g.input_size]), evaluate(g, x), rtol=1e-4, atol=1e-4)


def test_nhwc_transpose_before_conv_is_a_column_permutation():
    rng = np.random.default_rng(3)
    node, inits = _conv_node(rng, 3, 4, (3, 3), 1, kernel_shape=[3, 3], strides=[2, 2])
    node.input[0] = "t"
    tr = helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2])
    model = _model([tr, node, helper.make_node("Relu", ["c"], ["r"]),
                    helper.make_node("Transpose", ["r"], ["rt"], perm=[0, 2, 3, 1]),
                    helper.make_node("Flatten", ["rt"], ["y"], axis=1)], inits, [1, 7, 7, 3])
    g = _agree(model, [1, 7, 7, 3])
    conv = next(op for _, op in g.items() if op.kind == "affine")
    assert conv.layout is not None and sorted(conv.layout.cols) == list(range(147))
    assert not np.array_equal(conv.layout.cols, np.arange(147))  # NHWC order, not NCHW
    emitted = to_onnx_model(g)
    assert [n.op_type for n in emitted.graph.node][:3] == ["Gather", "Reshape", "Conv"]
    assert check_emitted_onnx(emitted.SerializeToString())[0]


# ---------------------------------------------------------------------------
# Pad and the pools
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [10, 13])
@pytest.mark.parametrize("value", [0.0, 0.75])
def test_constant_pad_matches_onnxruntime(opset, value):
    pads = [0, 0, 1, 2, 0, 0, 2, 0]
    if opset < 11:
        pad = helper.make_node("Pad", ["x"], ["p"], mode="constant", pads=pads, value=value)
        inits = {}
    else:
        pad = helper.make_node("Pad", ["x", "pads", "v"], ["p"], mode="constant")
        inits = {"pads": np.array(pads, dtype=np.int64), "v": np.array(value, dtype=np.float32)}
    model = _model([pad, helper.make_node("Relu", ["p"], ["r"]), _flat_out("r")], inits, [1, 2, 3, 3],
                   opset=opset)
    _agree(model, [1, 2, 3, 3])


POOLS = [
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2])),                       # 1/4: a float
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),    # 1/9, 1/6, 1/4
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[1, 1], dilations=[2, 2])),
    ("MaxPool", dict(kernel_shape=[3], strides=[2])),
    ("MaxPool", dict(kernel_shape=[1, 1], strides=[2, 2])),                          # a selection
    ("GlobalAveragePool", {}),
    ("GlobalMaxPool", {}),
]


@pytest.mark.parametrize("op, attrs", POOLS, ids=[f"{o}-{i}" for i, (o, _) in enumerate(POOLS)])
def test_pools_match_onnxruntime(op, attrs):
    rng = np.random.default_rng(5)
    one_d = len(attrs.get("kernel_shape", [0, 0])) == 1
    in_shape = [1, 2, 7] if one_d else [1, 2, 7, 6]
    k = [2] if one_d else [2, 2]
    conv, inits = _conv_node(rng, 2, 2, k, 1, kernel_shape=k)
    model = _model([conv, helper.make_node("Relu", ["c"], ["r"]),
                    helper.make_node(op, ["r"], ["p"], **attrs), _flat_out("p")], inits, in_shape)
    g = _agree(model, in_shape, points=8)
    pool_relus = [n for n, _ in g.relus() if "/max" in n]
    if op.endswith("MaxPool") and int(np.prod(attrs.get("kernel_shape", [2]))) > 1:
        # max(a, b) = b + relu(a - b): the pool's ReLU units are neurons named after the node
        assert pool_relus
    else:  # a 1x1 window is a selection; an average has no ReLU
        assert not pool_relus
    # the emitted file (conv form, pools as exact Gemm/Relu/Add) runs and agrees
    emitted = to_onnx_model(g)
    assert check_emitted_onnx(emitted.SerializeToString()) == (True, "")
    x = rng.uniform(-1, 1, (4, g.input_size))
    np.testing.assert_allclose(_ort(emitted, x, [1, g.input_size]), evaluate(g, x), rtol=1e-4, atol=1e-4)


def test_average_pool_of_nine_is_exactly_one_ninth():
    model = _model([helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[3, 3]),
                    _flat_out("p")], {}, [1, 1, 3, 3])
    g = graph_from_onnx_model(model)
    x = [Fraction(k, 7) for k in range(9)]
    assert evaluate_exact(g, x) == [sum(x) / 9]


def test_max_pool_is_exact_on_ties_and_negative_values():
    model = _model([helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                    _flat_out("p")], {}, [1, 1, 2, 4])
    g = graph_from_onnx_model(model)
    x = [Fraction(-3), Fraction(-3), Fraction(-1, 3), Fraction(-5),
         Fraction(-7), Fraction(-3), Fraction(-1, 2), Fraction(-1, 3)]
    assert evaluate_exact(g, x) == [Fraction(-3), Fraction(-1, 3)]


# ---------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------
def test_unsupported_conv_variants_name_the_node():
    rng = np.random.default_rng(0)
    node, inits = _conv_node(rng, 1, 1, (2, 2, 2), 1, kernel_shape=[2, 2, 2])
    node.name = "conv3d"
    with pytest.raises(UnsupportedOp, match=r"conv3d.*3 spatial dimensions"):
        graph_from_onnx_model(_model([node, _flat_out()], inits, [1, 1, 3, 3, 3]))
    for mode in ("reflect", "edge"):
        pad = helper.make_node("Pad", ["x", "pads"], ["y"], mode=mode, name="padnode")
        with pytest.raises(UnsupportedOp, match=f"padnode.*Pad mode '{mode}'"):
            graph_from_onnx_model(_model([pad], {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1])},
                                         [1, 1, 3, 3]))
    # pads computed from the network input are not a constant
    shape = helper.make_node("Shape", ["x"], ["s"])
    pad = helper.make_node("Pad", ["x", "q"], ["y"], name="dyn")
    relu = helper.make_node("Relu", ["x"], ["q0"])
    flat = helper.make_node("Flatten", ["q0"], ["q1"], axis=0)
    cast = helper.make_node("Cast", ["q1"], ["q"], to=TensorProto.INT64)
    with pytest.raises(UnsupportedOp, match="dyn|Cast"):
        graph_from_onnx_model(_model([shape, relu, flat, cast, pad], {}, [1, 1, 2, 4]))
    mp = helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], name="mpi")
    with pytest.raises(UnsupportedOp, match="mpi.*Indices"):
        graph_from_onnx_model(_model([mp], {}, [1, 1, 4, 4]))


# ---------------------------------------------------------------------------
# the layout invariant, passes, and the kernel's form check
# ---------------------------------------------------------------------------
def _two_convs(seed=1):
    rng = np.random.default_rng(seed)
    c1, i1 = _conv_node(rng, 1, 3, (2, 2), 1, kernel_shape=[2, 2])
    c2 = helper.make_node("Conv", ["r", "w2", "b2"], ["c2"], kernel_shape=[2, 2])
    i1.update(w2=rng.normal(size=(2, 3, 2, 2)).astype(np.float32), b2=np.zeros(2, np.float32))
    nodes = [c1, helper.make_node("Relu", ["c"], ["r"], name="r1"), c2,
             helper.make_node("Relu", ["c2"], ["r2"], name="r2"), helper.make_node("Flatten", ["r2"], ["f"]),
             helper.make_node("Gemm", ["f", "wd", "bd"], ["y"], transB=1)]
    i1.update(wd=rng.normal(size=(2, 2 * 3 * 3)).astype(np.float32), bd=np.zeros(2, np.float32))
    return _model(nodes, i1, [1, 1, 5, 5])


def test_layout_must_be_the_weight_exactly():
    g = graph_from_onnx_model(_two_convs())
    op = next(op for _, op in g.items() if op.kind == "affine")
    w = np.array(op.weight)
    w[0, np.nonzero(w[0])[0][0]] += 2.0 ** -30
    with pytest.raises(GraphError, match="not the unrolled convolution"):
        Affine(w, op.bias, layout=op.layout)
    with pytest.raises(GraphError, match="exact weights"):
        Affine(op.weight, op.bias, exact=op.rational(), layout=op.layout)
    with pytest.raises(ValueError, match="distinct"):
        ConvLayout(op.layout.kernel, op.layout.bias, op.layout.in_shape, op.layout.out_hw,
                   op.layout.strides, op.layout.dilations, op.layout.begin, 1, 2,
                   np.array([0, 0]), op.layout.cols)


def test_drop_removes_whole_channels_before_a_conv_and_positions_before_a_gemm():
    model = _two_convs()
    g = graph_from_onnx_model(model)
    r1 = [op for n, op in g.relus()][0]
    r2 = [op for n, op in g.relus()][1]
    # channel 1 of the first conv is dead everywhere; channel 0 only at one position
    stable = {nid: "inactive" for nid in r1.neurons[16:32]}
    stable[r1.neurons[0]] = "inactive"
    stable.update({r2.neurons[k]: "inactive" for k in (0, 4, 17)})
    out, log = drop_inactive(g, stable)
    kept = [e for e in log if e.get("action") == "kept"]
    assert kept and kept[0]["neurons"] == [r1.neurons[0]]   # held: part of a live channel
    w1, w2 = [op for _, op in out.items() if op.kind == "affine"][:2]
    assert w1.layout is not None and w2.layout is not None
    assert w1.size == 32 and list(w1.layout.row_channels()) == [0, 2]
    assert list(w2.layout.col_channels()) == [0, 2]
    assert out.op(out.relus()[1][0]).size == 18 - 3
    emitted = to_onnx_model(out)
    assert check_emitted_onnx(emitted.SerializeToString()) == (True, "")
    kinds = [n.op_type for n in emitted.graph.node]
    assert kinds.count("Conv") == 2 and "Gather" in kinds  # positions of conv 2 gathered
    conv_w = [numpy_helper.to_array(t) for t in emitted.graph.initializer if t.dims and len(t.dims) == 4]
    assert sorted(w.shape for w in conv_w) == [(2, 1, 2, 2), (2, 2, 2, 2)]  # channel 1 gone
    # the emitted network is the rewritten graph
    x = np.random.default_rng(0).uniform(-1, 1, (5, 25))
    np.testing.assert_allclose(_ort(emitted, x, [1, 25]), evaluate(out, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("edit", ["gather_axis0", "gather_range", "conv_auto_pad", "reshape_mix",
                                  "flatten_axis2"])
def test_emitted_form_refuses_batch_mixing_and_unknown_conv_variants(edit):
    g = graph_from_onnx_model(_two_convs())
    m = to_onnx_model(g)
    nodes = list(m.graph.node)
    conv = next(n for n in nodes if n.op_type == "Conv")
    reshape = next(n for n in nodes if n.op_type == "Reshape")
    flat = next(n for n in nodes[1:] if n.op_type == "Flatten")
    if edit.startswith("gather"):
        # a Gather after the first conv, re-wired into the relu
        idx = numpy_helper.from_array(np.array([0, 1] if edit == "gather_axis0" else [0, 99],
                                               dtype=np.int64), "gidx")
        m.graph.initializer.append(idx)
        gat = helper.make_node("Gather", [flat.output[0], "gidx"], ["gout"],
                               axis=0 if edit == "gather_axis0" else 1)
        at = nodes.index(flat) + 1
        nodes[at].input[0] = "gout"
        nodes.insert(at, gat)
    elif edit == "conv_auto_pad":
        conv.attribute.append(helper.make_attribute("auto_pad", "SAME_UPPER"))
    elif edit == "reshape_mix":
        shape = next(t for t in m.graph.initializer if t.name == reshape.input[1])
        shape.CopyFrom(numpy_helper.from_array(np.array([1, -1, 5, 5], dtype=np.int64), shape.name))
    else:
        flat.attribute[0].i = 2
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    ok, why = check_emitted_onnx(m.SerializeToString())
    assert not ok and why


def test_batchnorm_after_conv_is_a_grouped_1x1_conv():
    rng = np.random.default_rng(7)
    conv, inits = _conv_node(rng, 2, 3, (3, 3), 1, kernel_shape=[3, 3])
    bn = helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["n"], epsilon=1e-3)
    inits.update(g=rng.uniform(0.5, 2, 3).astype(np.float32), be=rng.normal(size=3).astype(np.float32),
                 mu=rng.normal(size=3).astype(np.float32), var=rng.uniform(0.5, 2, 3).astype(np.float32))
    model = _model([conv, bn, helper.make_node("Relu", ["n"], ["r"]), _flat_out("r")], inits, [1, 2, 6, 6])
    g = _agree(model, [1, 2, 6, 6])
    layouts = [op.layout for _, op in g.items() if op.kind == "affine"]
    assert len(layouts) == 2 and all(lay is not None for lay in layouts)
    assert layouts[1].groups == 3 and layouts[1].kernel.shape == (3, 1, 1, 1)
    emitted = to_onnx_model(g)
    assert [n.op_type for n in emitted.graph.node].count("Conv") == 2
    x = rng.uniform(-1, 1, (3, g.input_size))
    np.testing.assert_allclose(_ort(emitted, x, [1, g.input_size]), evaluate(g, x), rtol=1e-4, atol=1e-4)


def test_torch_conv_module_is_read_through_onnx_and_written_in_conv_form():
    torch = pytest.importorskip("torch")
    from torch import nn
    from leo_verify.io.torch import from_torch, to_torch
    from leo_verify.errors import UsageError
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3, stride=2),
                        nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4, 5)).eval()
    g = from_torch(net, input_size=(1, 10, 10))
    x = np.random.default_rng(0).random((4, 100))
    with torch.no_grad():
        ref = net(torch.tensor(x, dtype=torch.float32).reshape(4, 1, 10, 10)).numpy()
    np.testing.assert_allclose(evaluate(g, x), ref, rtol=1e-5, atol=1e-5)
    back = to_torch(g, dtype="float64")
    assert sum(isinstance(m, nn.Conv2d) for m in back.modules()) >= 4  # convs, pool levels, avgpool
    assert not any(isinstance(m, nn.Linear) and m.in_features > 50 for m in back.modules())
    with torch.no_grad():
        mine = back(torch.tensor(x).reshape(4, 1, 10, 10)).numpy()
    np.testing.assert_allclose(mine, evaluate(g, x), rtol=1e-12, atol=1e-12)
    with pytest.raises(UsageError, match="per-example shape"):
        from_torch(net, input_size=100)


def test_points_in_a_wide_box_are_drawn_in_bulk_and_stay_inside():
    from hypothesis import HealthCheck
    from leo_verify.domain import Box
    from leo_verify.sampling import points_in
    lo = np.linspace(-1, 0, 3072)
    box = Box(lo, lo + 0.05)
    seen = []

    @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(points_in(box))
    def check(x):
        assert x.shape == (3072,) and np.all(x >= box.lower) and np.all(x <= box.upper)
        seen.append(x)
    check()
    assert len({p.tobytes() for p in seen}) > 5  # different points, not one repeated
    assert any(np.any(p == box.lower) and np.any(p == box.upper) for p in seen)  # bounds too


# ---------------------------------------------------------------------------
# end to end: compress, certify, recheck, and a hostile edit of the emitted conv
# ---------------------------------------------------------------------------
def _small_pool_net(tmp_path, pool: str):
    from kernel_cases import tiny_conv  # the mutation campaign's conv net, with either pool
    path, box = tiny_conv(str(tmp_path), pool=pool)
    return Path(path), Path(box)


@pytest.mark.parametrize("pool", ["AveragePool", "MaxPool"])
def test_compress_certifies_a_conv_net_and_recheck_refuses_an_edited_kernel(tmp_path, pool):
    import json
    from leo_verify.cli import main
    from leo_verify.domain import parse_domain
    model, box = _small_pool_net(tmp_path, pool)
    out = tmp_path / "out"
    assert main(["compress", str(model), "--domain", str(box), "-o", str(out), "--no-checkpoint",
                 "--no-progress", "--no-smt2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["certificate"]["verdict"] == "certified"
    assert report["after"]["neurons"] < report["before"]["neurons"]
    emitted = onnx.load(out / "compressed.onnx")
    kinds = [n.op_type for n in emitted.graph.node]
    assert "Conv" in kinds
    # the emitted conv net agrees with the original in onnxruntime on the region
    dom = parse_domain(str(box), n=64)
    x = np.vstack([dom.sample(300, np.random.default_rng(0)), dom.lower[None], dom.upper[None]])
    np.testing.assert_allclose(_ort(emitted, x, [1, 1, 8, 8]), _ort(onnx.load(model), x, [1, 1, 8, 8]),
                               rtol=1e-5, atol=1e-5)
    assert main(["recheck", str(out)]) == 0
    pristine = (out / "compressed.onnx").read_bytes()

    def edited(edit):
        m = onnx.load_from_string(pristine)
        edit(m)
        (out / "compressed.onnx").write_bytes(m.SerializeToString())
        return main(["recheck", str(out)])

    def nudge_kernel(m):  # one ulp in one kernel weight of the emitted Conv
        conv = next(n for n in m.graph.node if n.op_type == "Conv")
        w = next(t for t in m.graph.initializer if t.name == conv.input[1])
        arr = numpy_helper.to_array(w).copy()
        arr.flat[0] = np.nextafter(arr.flat[0], np.float32(np.inf))
        w.CopyFrom(numpy_helper.from_array(arr, w.name))

    def swap_gather(m):  # two kept output units exchanged
        g = next((n for n in m.graph.node if n.op_type == "Gather"), None)
        if g is None:
            nudge_kernel(m)
            return
        t = next(t for t in m.graph.initializer if t.name == g.input[1])
        idx = numpy_helper.to_array(t).copy()
        idx[[0, -1]] = idx[[-1, 0]]
        t.CopyFrom(numpy_helper.from_array(idx, t.name))

    def stride_one(m):  # the last Conv reads other positions (its output grows: shapes break)
        conv = [n for n in m.graph.node if n.op_type == "Conv"][-1]
        for a in conv.attribute:
            if a.name == "pads":
                a.ints[:] = [a.ints[0] + 1] + list(a.ints[1:])

    for edit in (nudge_kernel, swap_gather, stride_one):
        assert edited(edit) != 0, edit.__name__


def test_float64_emission_writes_convolutions_as_gemm_for_onnxruntime():
    g = graph_from_onnx_model(_two_convs())
    m = to_onnx_model(g, dtype="float64")
    kinds = [n.op_type for n in m.graph.node]
    assert "Conv" not in kinds and "Gemm" in kinds  # onnxruntime has no float64 Conv
    assert check_emitted_onnx(m.SerializeToString()) == (True, "")
    x = np.random.default_rng(4).uniform(-1, 1, (3, 25))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, evaluate(g, x), rtol=1e-12, atol=1e-12)


def test_info_names_the_conv_shape_of_a_layer(tmp_path):
    from leo_verify.cli_info import model_facts
    path = tmp_path / "two.onnx"
    onnx.save(_two_convs(), path)
    g = graph_from_onnx_model(_two_convs())
    layers = model_facts(str(path), g)["hidden_layers"]
    assert [l.get("conv") for l in layers] == [[3, 4, 4], [2, 3, 3]]


def test_compress_format_torch_refuses_a_conv_net_up_front(tmp_path):
    from leo_verify.cli import main
    path = tmp_path / "two.onnx"
    onnx.save(_two_convs(), path)
    out = tmp_path / "out"
    assert main(["compress", str(path), "--domain", "box:0,1", "-o", str(out), "--format", "torch",
                 "--no-checkpoint", "--no-progress"]) != 0
    assert not out.exists()  # refused before any work, no empty OUT/


@settings(max_examples=60, deadline=None)
@given(op=st.sampled_from(["Conv", "MaxPool", "AveragePool"]),
       kernel=st.lists(st.integers(-2, 10 ** 6), min_size=0, max_size=3),
       strides=st.lists(st.integers(-1, 10 ** 6), min_size=0, max_size=3),
       pads=st.lists(st.integers(-3, 10 ** 6), min_size=0, max_size=5),
       auto=st.sampled_from([None, "SAME_UPPER", "VALID", "BOGUS"]))
def test_hostile_conv_and_pool_attributes_load_or_raise_a_leo_error(op, kernel, strides, pads, auto):
    from leo_verify.errors import LeoError
    attrs = {}
    for key, v in (("kernel_shape", kernel), ("strides", strides), ("pads", pads)):
        if v:
            attrs[key] = v
    if auto:
        attrs["auto_pad"] = auto
    inits = {}
    ins = ["x"]
    if op == "Conv":
        k = [min(max(a, 1), 3) for a in (kernel or [2, 2])][:2] + [1] * max(0, 2 - len(kernel or [2, 2]))
        inits = {"w": np.ones((2, 1) + tuple(k[:2]), np.float32)}
        ins = ["x", "w"]
    node = helper.make_node(op, ins, ["p"], **attrs)
    model = _model([node, _flat_out("p")], inits, [1, 1, 5, 4])
    try:
        g = graph_from_onnx_model(model)
    except LeoError:
        return
    x = np.random.default_rng(0).uniform(-1, 1, (2, 20))
    assert np.all(np.isfinite(evaluate(g, x)))


def test_checkpoint_fingerprint_covers_the_conv_layout():
    from leo_verify.analysis.checkpoint import graph_fingerprint
    g = graph_from_onnx_model(_two_convs())
    assert graph_fingerprint(g) == graph_fingerprint(graph_from_onnx_model(_two_convs()))
    assert graph_fingerprint(g) != graph_fingerprint(graph_from_onnx_model(_two_convs(seed=2)))
