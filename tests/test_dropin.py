"""Drop-in outputs (issue 14, part 3): the emitted ONNX keeps the original's input and output
names, element types and shapes (fixed batch 1, dynamic batch, [n], [1, 1, n], [1, c, h, w]),
ends with the original's head, runs in onnxruntime like the original, and is exactly the form
the checker kernel accepts (and nothing else is)."""
import io
import math
import warnings

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from leo_verify.compressor import compress
from leo_verify.domain import Box
from leo_verify.graph import Affine, Graph, Input, Output, Relu, neuron_id
from leo_verify.io.onnx import graph_from_onnx_model, to_onnx_model
from leo_verify.io.torch import to_torch
from leo_verify.kernel.emitted import check_emitted_onnx
from leo_verify.kernel.identity import check_identity
from leo_verify.semantics import evaluate

ort = pytest.importorskip("onnxruntime")


def _session(data: bytes):
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


class _Net(nn.Module):
    """Linear layers act on the last dim, so a [1, 1, n] input gives [1, 1, m] logits."""

    def __init__(self, n, m, head, flatten, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.flatten = nn.Flatten() if flatten else nn.Identity()
        self.fc1, self.fc2, self.fc3 = nn.Linear(n, 12), nn.Linear(12, 8), nn.Linear(8, m)
        with torch.no_grad():
            self.fc1.bias += 0.5
            self.fc2.bias -= 0.3
        self.head = head

    def forward(self, x):
        z = self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(self.flatten(x))))))
        if self.head == "softmax":
            return torch.softmax(z, dim=-1)
        if self.head == "logsoftmax":
            return torch.log_softmax(z, dim=-1)
        if self.head == "sigmoid":
            return torch.sigmoid(z)
        if self.head == "tanh":
            return torch.tanh(z)
        if self.head == "argmax":
            return torch.argmax(z, dim=-1, keepdim=True)
        return z


def _export(module, shape, dynamic: bool) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.zeros(*shape), buf, dynamo=False,
                          input_names=["obs"], output_names=["scores"], opset_version=13,
                          dynamic_axes={"obs": {0: "batch_size"}, "scores": {0: "batch_size"}}
                          if dynamic else None)
    return buf.getvalue()


def _dims(v) -> list:
    t = v.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]


# (id, example input shape, dynamic batch, flatten inside)
LAYOUTS = [
    ("1xn", (1, 16), False, False),
    ("n", (16,), False, False),
    ("1x1xn", (1, 1, 16), False, False),
    ("1xcxhxw", (1, 1, 4, 4), False, True),
    ("Bxn", (1, 16), True, False),
    ("Bx1xn", (1, 1, 16), True, False),
    ("Bxcxhxw", (1, 2, 2, 4), True, True),
]
HEADS = [None, "softmax", "logsoftmax", "sigmoid", "tanh", "argmax"]
CASES = [(lay, head) for k, lay in enumerate(LAYOUTS) for head in (None, HEADS[1 + k % 5])]


@pytest.mark.parametrize("layout, head", CASES, ids=[f"{l[0]}-{h}" for l, h in CASES])
def test_emitted_onnx_is_a_drop_in_replacement(layout, head, tmp_path):
    name, shape, dynamic, flatten = layout
    n = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    module = _Net(n, 5, head, flatten, seed=len(name))
    data = _export(module, shape, dynamic)
    original = graph_from_onnx_model(data)
    res = compress(original, Box(np.zeros(n), np.ones(n)))
    assert res.report["certificate"]["verdict"] == "certified"
    assert res.graph.summary()["neurons"] < original.summary()["neurons"]
    path = str(tmp_path / "compressed.onnx")
    res.to_onnx(path)
    emitted = open(path, "rb").read()

    # the kernel accepts exactly this file; the reader reads the same network and head
    assert check_emitted_onnx(emitted) == (True, "")
    back = graph_from_onnx_model(emitted)
    assert back.op(back.output_name).head_key() == original.op(original.output_name).head_key()
    assert back.metadata["io"] == original.metadata["io"]

    src, out = onnx.load_from_string(data).graph, onnx.load_from_string(emitted).graph
    for a, b in ((src.input[0], out.input[0]), (src.output[0], out.output[0])):
        assert (a.name, a.type.tensor_type.elem_type, _dims(a)) == \
               (b.name, b.type.tensor_type.elem_type, _dims(b))

    rng = np.random.default_rng(7)
    batches = [rng.random((3,) + tuple(shape[1:]))] if dynamic else \
        [rng.random(shape) for _ in range(4)]
    sa, sb = _session(data), _session(emitted)
    torch_module = to_torch(res.graph)
    for x in batches:
        x = x.astype(np.float32)
        want = sa.run(None, {"obs": x})[0]
        got = sb.run(None, {"obs": x})[0]
        mine = torch_module(torch.from_numpy(x)).detach().numpy()
        assert got.shape == want.shape and got.dtype == want.dtype and mine.shape == want.shape
        if head == "argmax":
            assert np.array_equal(got, want) and np.array_equal(mine, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(mine, want, rtol=1e-5, atol=1e-6)
        # and the interpreter agrees with onnxruntime on the original
        ev = evaluate(original, x.reshape(-1, n), apply_head=True)
        np.testing.assert_allclose(ev.reshape(want.shape), want, rtol=1e-5, atol=1e-6)

    # float64 emission: the same layout with DOUBLE tensors, still in the kernel's form
    m64 = to_onnx_model(res.graph, dtype="float64").SerializeToString()
    assert check_emitted_onnx(m64) == (True, "")
    assert onnx.load_from_string(m64).graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE


# -- the kernel refuses everything else --------------------------------------------------------------
@pytest.fixture(scope="module")
def emitted_cases():
    """Emitted files: a dynamic [B, 1, n] -> [B, 1, m] softmax net and a [n] -> [m] net."""
    out = {}
    for key, shape, dynamic, head in (("B1n", (1, 1, 16), True, "softmax"), ("n", (16,), False, None),
                                      ("Bn", (1, 16), True, "argmax")):
        data = _export(_Net(16, 5, head, False, seed=3), shape, dynamic)
        g = graph_from_onnx_model(data)
        res = compress(g, Box(np.zeros(16), np.ones(16)))
        out[key] = (g, res, to_onnx_model(res.graph).SerializeToString())
    return out


def _edit(data: bytes, fn) -> bytes:
    m = onnx.load_from_string(data)
    fn(m.graph)
    return m.SerializeToString()


def _node(g, op):
    return next(n for n in g.node if n.op_type == op)


def _set_attr(node, name, value):
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))


def _reshape_first(g):
    # a Reshape of a [B, n] input (the batch-mixing attack's first step)
    g.initializer.append(numpy_helper.from_array(np.array([2, -1], dtype=np.int64), "mix"))
    first = g.node[0]
    g.node.insert(0, helper.make_node("Reshape", [g.input[0].name, "mix"], ["mixed"]))
    first.input[0] = "mixed"


def _logits_shape(value):
    def fn(g):
        node = _node(g, "Reshape")
        t = next(t for t in g.initializer if t.name == node.input[1])
        t.CopyFrom(numpy_helper.from_array(np.array(value, dtype=np.int64), t.name))
    return fn


def _cast_before_head(g):
    head = g.node[-1]
    g.node.insert(len(g.node) - 1, helper.make_node("Cast", [head.input[0]], ["casted"],
                                                     to=TensorProto.DOUBLE))
    head.input[0] = "casted"


def _transpose_logits(g):
    head = g.node[-1]
    g.node.insert(len(g.node) - 1, helper.make_node("Transpose", [head.input[0]], ["tr"], perm=[1, 0, 2]))
    head.input[0] = "tr"


def _fixed_output_batch(g):
    g.output[0].type.tensor_type.shape.dim[0].Clear()
    g.output[0].type.tensor_type.shape.dim[0].dim_value = 1


def _flatten_axis_2(g):
    g.node.insert(0, helper.make_node("Flatten", [g.input[0].name], ["fl"], axis=2))
    g.node[1].input[0] = "fl"


@pytest.mark.parametrize("case, forge", [
    ("Bn", _reshape_first),
    ("B1n", _logits_shape([1, -1, 5])),        # the batch dim not first
    ("B1n", _logits_shape([-1, 0, 5])),        # 0 copies a dim
    ("B1n", _logits_shape([5, -1, 1])),        # mixes samples
    ("B1n", _logits_shape([-1, 5])),           # not the writer's split
    ("n", _logits_shape([1, 5])),              # [n] layouts end with [m]
    ("B1n", _cast_before_head),
    ("B1n", _transpose_logits),
    ("B1n", lambda g: _set_attr(g.node[-1], "axis", 1)),   # softmax over a dim of size 1
    ("Bn", lambda g: _set_attr(g.node[-1], "axis", 0)),    # argmax over the batch
    ("Bn", lambda g: _set_attr(g.node[-1], "keepdims", 0)),  # output shape no longer declared
    ("B1n", _fixed_output_batch),
    ("Bn", _flatten_axis_2),
], ids=["reshape_first", "batch_not_first", "zero_dim", "mixing", "not_split", "n_to_1m",
        "cast", "transpose", "softmax_axis", "argmax_batch", "keepdims", "fixed_batch", "flatten2"])
def test_forms_outside_the_writer_are_refused(emitted_cases, case, forge):
    _, _, data = emitted_cases[case]
    assert check_emitted_onnx(data) == (True, "")
    ok, why = check_emitted_onnx(_edit(data, forge))
    assert not ok and why


def test_a_swapped_head_is_in_form_but_the_identity_refuses_it(emitted_cases):
    original, res, data = emitted_cases["B1n"]
    forged = _edit(data, lambda g: setattr(g.node[-1], "op_type", "Sigmoid") or
                   [g.node[-1].attribute.remove(a) for a in list(g.node[-1].attribute)])
    assert check_emitted_onnx(forged) == (True, "")  # a Sigmoid head is a form the writer makes
    phase = res.facts.stable_map()
    honest = check_identity(original, graph_from_onnx_model(data), phase)
    assert honest.proven, honest.output
    swapped = check_identity(original, graph_from_onnx_model(forged), phase)
    assert not swapped.proven and swapped.output["detail"].startswith("heads differ")
    assert "softmax" in swapped.output["detail"] and "sigmoid" in swapped.output["detail"]


# -- the writer and the kernel agree on every layout, including the fallback ---------------------------
def _dim():
    return st.one_of(st.just(1), st.just("N"), st.just(None), st.integers(2, 3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(in_shape=st.lists(st.integers(1, 3), min_size=0, max_size=3), lead=_dim(),
       out_split=st.sampled_from(["2d", "1d", "3d", "bad"]),
       head=st.sampled_from(["none", "softmax", "logsoftmax", "sigmoid", "tanh", "argmax"]),
       keepdims=st.integers(0, 1), dtype=st.sampled_from(["float32", "float64"]),
       seed=st.integers(0, 2 ** 16))
def test_writer_output_is_always_in_the_kernel_form(in_shape, lead, out_split, head, keepdims, dtype,
                                                    seed):
    rng = np.random.default_rng(seed)
    n = math.prod(in_shape) if in_shape else 3
    D = [lead] + in_shape if in_shape else [n]
    m = 4
    L = {"2d": [lead, m], "1d": [m], "3d": [lead, 2, 2], "bad": [lead, 3]}[out_split]
    attrs = ()
    O = L
    if head in ("softmax", "logsoftmax"):
        attrs = (("axis", -1),)
    if head == "argmax":
        attrs = (("axis", len(L) - 1), ("keepdims", keepdims))
        O = L[:-1] + [1] if keepdims else L[:-1]
    g = Graph(name="h", metadata={"io": {"input": {"name": "in", "elem_type": 1, "shape": D},
                                         "output": {"name": "out", "elem_type": 1, "shape": O}}})
    g.add("input", Input(n))
    g.add("fc1", Affine(rng.normal(size=(5, n)), rng.normal(size=5)), ["input"])
    g.add("r", Relu([neuron_id("r", i) for i in range(5)]), ["fc1"])
    g.add("fc2", Affine(rng.normal(size=(m, 5)), rng.normal(size=m)), ["r"])
    g.add("y", Output(m, head=head, head_attrs=attrs), ["fc2"])
    model = to_onnx_model(g, dtype=dtype)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    assert check_emitted_onnx(data) == (True, "")
    back = graph_from_onnx_model(data)
    assert back.op(back.output_name).head_key() == g.op(g.output_name).head_key()
    # run it as a runtime would, with the declared input shape (batch 2 where it is dynamic)
    gi = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else 2 for d in gi.type.tensor_type.shape.dim]
    x = rng.random(dims).astype(np.float32 if dtype == "float32" else np.float64)
    y = _session(data).run(None, {gi.name: x})[0]
    want = evaluate(g, x.reshape(-1, n).astype(np.float64), apply_head=True)
    if head == "argmax":
        assert np.array_equal(y.reshape(-1), want.reshape(-1))
    else:
        np.testing.assert_allclose(y.reshape(want.shape), want, rtol=1e-4, atol=1e-5)
