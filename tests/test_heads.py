"""Output heads (issue 14, part 1): Softmax, LogSoftmax, Sigmoid, Tanh and ArgMax after the
last affine layer, in ONNX and PyTorch; their proven Lipschitz constants; evaluation, the
kernel's identity check and ``check`` see the logits."""
import io
import json
import warnings
from fractions import Fraction

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from leo_verify import cli
from leo_verify.certify.equivalence import check_equivalence
from leo_verify.domain import Box
from leo_verify.errors import GraphError, UnsupportedOp
from leo_verify.graph import Graph, Output
from leo_verify.heads import HEADS, apply_head, head_report, lipschitz
from leo_verify.io.onnx import graph_from_onnx_model, to_onnx_model
from leo_verify.io.torch import from_torch, save_torch, to_torch
from leo_verify.kernel.identity import check_identity
from leo_verify.semantics import evaluate

ort = pytest.importorskip("onnxruntime")


def _session(data: bytes):
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


class _ArgMaxNet(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.argmax(self.net(x), dim=1)


def _classifier(n: int, m: int, head: str | None, seed: int = 0, hidden=(24, 12)) -> nn.Module:
    torch.manual_seed(seed)
    layers, k = [], n
    for h in hidden:
        layers += [nn.Linear(k, h), nn.ReLU()]
        k = h
    layers.append(nn.Linear(k, m))
    with torch.no_grad():  # some stable neurons over [0, 1]^n
        layers[0].bias += 0.5
    heads = {"softmax": nn.Softmax(dim=1), "logsoftmax": nn.LogSoftmax(dim=-1),
             "sigmoid": nn.Sigmoid(), "tanh": nn.Tanh()}
    if head in heads:
        layers.append(heads[head])
    net = nn.Sequential(*layers).eval()
    return _ArgMaxNet(net).eval() if head == "argmax" else net


def _export(module, shape, *, dynamic=False, opset=13) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(*shape), buf, dynamo=False, input_names=["x"],
                          output_names=["y"], opset_version=opset,
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}} if dynamic else None)
    return buf.getvalue()


HEAD_LIST = ["softmax", "logsoftmax", "sigmoid", "tanh", "argmax"]


# -- ONNX: load, evaluate == onnxruntime ------------------------------------------------------------
@pytest.mark.parametrize("n", [16, 100, 784])
@pytest.mark.parametrize("head", HEAD_LIST)
def test_exported_classifier_with_a_head_evaluates_like_onnxruntime(head, n):
    data = _export(_classifier(n, 10, head, seed=n), (1, n), dynamic=True)
    g = graph_from_onnx_model(data)
    out = g.op(g.output_name)
    assert out.head == head and out.size == 10
    x = np.random.default_rng(n).random((6, n)).astype(np.float32)
    want = _session(data).run(None, {"x": x})[0]
    got = evaluate(g, x, apply_head=True)
    if head == "argmax":
        assert got.dtype == np.int64 and np.array_equal(got.reshape(-1), want.reshape(-1))
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the default stays the logits: the head changes nothing for existing callers
    logits = evaluate(g, x)
    assert logits.shape == (6, 10)
    if head != "argmax":
        np.testing.assert_allclose(apply_head(head, dict(out.head_attrs), logits), got)


@pytest.mark.parametrize("head", HEAD_LIST)
def test_the_writer_keeps_the_head_and_its_attributes(head):
    data = _export(_classifier(16, 4, head), (1, 16), dynamic=True)
    g = graph_from_onnx_model(data)
    m = to_onnx_model(g)
    last = m.graph.node[-1]
    src = onnx.load_from_string(data).graph.node[-1]
    assert last.op_type == src.op_type
    assert {a.name: helper.get_attribute_value(a) for a in last.attribute} == \
        {a.name: helper.get_attribute_value(a) for a in src.attribute}
    back = graph_from_onnx_model(m)
    assert back.op(back.output_name).head_key() == g.op(g.output_name).head_key()
    x = np.random.default_rng(1).random((3, 16)).astype(np.float32)
    want = _session(data).run(None, {"x": x})[0]
    got = _session(m.SerializeToString()).run(None, {"x": x})[0]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_old_opset_softmax_default_axis_is_read():
    data = _export(_classifier(16, 4, "softmax"), (1, 16), opset=11)
    g = graph_from_onnx_model(data)
    assert g.op(g.output_name).head == "softmax"
    x = np.random.default_rng(2).random((1, 16)).astype(np.float32)
    np.testing.assert_allclose(evaluate(g, x, apply_head=True), _session(data).run(None, {"x": x})[0],
                               rtol=1e-5)


# -- heads anywhere else stay unsupported ---------------------------------------------------------
def _model(nodes, inits, in_shape, out_shape, out_type=TensorProto.FLOAT, opset=13):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", out_type, out_shape)],
                          initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


W1 = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
B1 = np.zeros(3, dtype=np.float32)
W2 = np.ones((2, 3), dtype=np.float32)
B2 = np.zeros(2, dtype=np.float32)


def test_softmax_inside_the_network_is_unsupported_naming_node_and_op():
    m = _model([helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
                helper.make_node("Softmax", ["h"], ["p"], name="middle_softmax", axis=1),
                helper.make_node("Gemm", ["p", "w2", "b2"], ["y"], name="fc2", transB=1)],
               {"w1": W1, "b1": B1, "w2": W2, "b2": B2}, [1, 4], [1, 2])
    with pytest.raises(UnsupportedOp, match=r"'middle_softmax' \(Softmax\).*last operation.*'fc2' \(Gemm\)"):
        graph_from_onnx_model(m)


def test_two_heads_are_unsupported():
    m = _model([helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
                helper.make_node("Softmax", ["h"], ["p"], name="sm", axis=1),
                helper.make_node("Sigmoid", ["p"], ["y"], name="sig")],
               {"w1": W1, "b1": B1}, [1, 4], [1, 3])
    with pytest.raises(UnsupportedOp, match=r"'sm' \(Softmax\).*'sig' \(Sigmoid\)"):
        graph_from_onnx_model(m)


@pytest.mark.parametrize("op, shape, attrs", [
    ("Softmax", [1, 3, 1], {"axis": 1}),      # not the last axis
    ("Softmax", [1, 3], {"axis": 0}),         # over the batch
    ("LogSoftmax", [3, 1], {"axis": -1}),     # groups of 1 of 3 values
    ("ArgMax", [1, 3], {}),                   # ArgMax's default axis 0 is the batch
])
def test_head_over_another_axis_is_unsupported(op, shape, attrs):
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Reshape", ["h", "s"], ["r"], name="r"),
             helper.make_node(op, ["r"], ["y"], name="head", **attrs)]
    out = shape[:-1] + [1] if op == "ArgMax" else shape
    m = _model(nodes, {"w1": W1, "b1": B1, "s": np.array(shape, dtype=np.int64)}, [1, 4], out,
               out_type=TensorProto.INT64 if op == "ArgMax" else TensorProto.FLOAT)
    with pytest.raises(UnsupportedOp, match=rf"'head' \({op}\)"):
        graph_from_onnx_model(m)


def test_softmax_with_an_unknown_attribute_is_unsupported():
    m = _model([helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
                helper.make_node("ArgMax", ["h"], ["y"], name="am", axis=1, keepdims=1,
                                 select_last_index=1)],
               {"w1": W1, "b1": B1}, [1, 4], [1, 1], out_type=TensorProto.INT64)
    g = graph_from_onnx_model(m)  # select_last_index is accepted and kept
    assert g.op(g.output_name).head_key() == ("argmax", "last")
    x = np.array([[0.0, 0.0, 0.0, 0.0]])  # all logits 0: ties resolve to the last index
    assert evaluate(g, x, apply_head=True).tolist() == [[2]]
    assert _session(m.SerializeToString()).run(None, {"x": x.astype(np.float32)})[0].tolist() == [[2]]


# -- PyTorch ---------------------------------------------------------------------------------------
class _Functional(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.fc1, self.fc2 = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x):
        z = self.fc2(torch.relu(self.fc1(x)))
        if self.kind == "softmax":
            return F.softmax(z, dim=-1)
        if self.kind == "logsoftmax":
            return z.log_softmax(1)
        if self.kind == "sigmoid":
            return torch.sigmoid(z)
        if self.kind == "tanh":
            return z.tanh()
        return torch.argmax(z, dim=1)


@pytest.mark.parametrize("head", HEAD_LIST)
def test_torch_functional_heads_are_read(head):
    torch.manual_seed(3)
    mod = _Functional(head).eval()
    g = from_torch(mod)
    assert g.op(g.output_name).head == head
    x = torch.rand(5, 6)
    want = mod(x).detach().numpy()
    got = evaluate(g, x.numpy(), apply_head=True)
    if head == "argmax":
        assert np.array_equal(got.reshape(-1), want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the module written back computes the same (head included)
    back = to_torch(g)(x).detach().numpy()
    np.testing.assert_allclose(back.reshape(want.shape), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head", ["softmax", "logsoftmax", "sigmoid", "tanh"])
def test_torch_head_modules_round_trip_through_onnx(head):
    mod = _classifier(8, 3, head)
    g = from_torch(mod)
    assert g.op(g.output_name).head == head
    data = to_onnx_model(g).SerializeToString()
    x = np.random.default_rng(0).random((4, 8)).astype(np.float32)
    sess = _session(data)
    assert sess.get_inputs()[0].name == "input"  # the fx placeholder's name
    np.testing.assert_allclose(sess.run(None, {"input": x})[0],
                               mod(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=1), nn.Linear(4, 1)), r"module '1'\): Softmax"),
    (nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=0)), r"dim 0"),
    (nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Tanh()), r"module '1'\): Sigmoid.*module '2'"),
])
def test_torch_head_elsewhere_is_unsupported(bad, match):
    with pytest.raises(UnsupportedOp, match=match):
        from_torch(bad)


def test_save_torch_refuses_a_head(tmp_path):
    g = from_torch(_classifier(4, 2, "softmax"))
    with pytest.raises(UnsupportedOp, match="softmax head"):
        save_torch(g, tmp_path / "m.pt")


# -- the IR ------------------------------------------------------------------------------------------
def test_output_op_validates_its_head():
    with pytest.raises(GraphError):
        Output(3, head="relu")
    with pytest.raises(GraphError):
        Output(3, head="none", head_attrs=(("axis", 1),))
    assert Output(3, head="argmax", head_attrs=(("axis", -1),)).head_key() == ("argmax", "first")
    assert Output(3, head="softmax", head_attrs=(("axis", 1),)).head_key() == \
        Output(3, head="softmax", head_attrs=(("axis", -1),)).head_key()


# -- Lipschitz constants (never exceeded) -----------------------------------------------------------
_logits = st.integers(1, 12).flatmap(lambda m: st.tuples(
    st.lists(st.floats(-30, 30), min_size=m, max_size=m),
    st.lists(st.floats(-30, 30), min_size=m, max_size=m),
    st.floats(0, 1)))


@settings(max_examples=400, deadline=None)
@given(_logits, st.sampled_from(["softmax", "logsoftmax", "sigmoid", "tanh", "none"]))
def test_lipschitz_constants_are_never_exceeded(pair, head):
    a, b, t = pair
    a = np.array(a)
    # pairs far apart and very close together
    b = a + t * (np.array(b) - a) * (1e-6 if t < 0.3 else 1)
    d = np.max(np.abs(a - b))
    ha, hb = apply_head(head, {}, a[None, :])[0], apply_head(head, {}, b[None, :])[0]
    L = float(lipschitz(head))
    assert np.max(np.abs(ha - hb)) <= L * d * (1 + 1e-9) + 1e-14


@settings(max_examples=300, deadline=None)
@given(_logits)
def test_argmax_is_equal_beyond_twice_the_logit_bound(pair):
    a, b, t = pair
    a, b = np.array(a), np.array(a) + t * (np.array(b) - np.array(a))
    eps = np.max(np.abs(a - b))
    top = np.sort(a)[::-1]
    gap = top[0] - top[1] if len(a) > 1 else np.inf
    if gap > 2 * eps:
        assert apply_head("argmax", {}, a[None, :]).item() == apply_head("argmax", {}, b[None, :]).item()


def test_lipschitz_constants_are_nearly_tight():
    # softmax on two logits (0, 0) -> (d, -d); logsoftmax with a tiny probability; sigmoid at 0
    d = 1e-6
    sm = apply_head("softmax", {}, np.array([[0.0, 0.0], [d, -d]]))
    assert np.max(np.abs(sm[0] - sm[1])) / d == pytest.approx(0.5, rel=1e-4)
    ls = apply_head("logsoftmax", {}, np.array([[-40.0, 0.0], [-40.0 - d, d]]))
    assert np.max(np.abs(ls[0] - ls[1])) / d == pytest.approx(2.0, rel=1e-4)
    sg = apply_head("sigmoid", {}, np.array([[0.0], [d]]))
    assert abs(sg[0, 0] - sg[1, 0]) / d == pytest.approx(0.25, rel=1e-4)
    assert set(HEADS) == {"none", "softmax", "logsoftmax", "sigmoid", "tanh", "argmax"}


# -- head_report --------------------------------------------------------------------------------------
def test_head_report_bounds_the_head_outputs():
    g = graph_from_onnx_model(_export(_classifier(16, 4, "softmax"), (1, 16)))
    rep = head_report(g, {"compressed.onnx": "1/1000", "exact.onnx": "0"})
    assert rep["head"] == "softmax" and rep["attrs"] == {"axis": 1} and rep["lipschitz"] == "1/2"
    f = rep["files"]["compressed.onnx"]
    assert f["logits_eps"] == "1/1000" and f["bound"] == "1/2000" and f["bound_float"] >= 0.0005
    assert "leo_verify/heads.py" in rep["proof"]
    assert rep["files"]["exact.onnx"]["bound"] == "0"
    json.dumps(rep)  # plain JSON
    ga = graph_from_onnx_model(_export(_classifier(16, 4, "argmax"), (1, 16)))
    ra = head_report(ga, {"a.onnx": "1/100", "b.onnx": "0"})
    assert ra["lipschitz"] is None and ra["files"]["a.onnx"]["bound"] is None
    assert "top-two logit gap exceeds 2*eps" in ra["files"]["a.onnx"]["statement"]
    assert "everywhere" in ra["files"]["b.onnx"]["statement"]
    gn = graph_from_onnx_model(_export(_classifier(16, 4, None), (1, 16)))
    assert head_report(gn, {"c.onnx": "3/7"})["files"]["c.onnx"]["bound"] == "3/7"


# -- the kernel refuses another head -------------------------------------------------------------------
def _with_head(g: Graph, head: str, attrs=()) -> Graph:
    h = g.copy()
    o = h.op(h.output_name)
    h.replace(h.output_name, Output(o.size, o.shape, head=head, head_attrs=attrs))
    return h


def test_check_identity_refuses_a_changed_head():
    g = graph_from_onnx_model(_export(_classifier(16, 4, "softmax"), (1, 16)))
    assert check_identity(g, g.copy(), {}).proven
    res = check_identity(g, _with_head(g, "sigmoid"), {})
    assert not res.proven and res.output["status"] == "open"
    assert res.output["detail"].startswith("heads differ") and "sigmoid" in res.output["detail"]
    am = _with_head(g, "argmax", (("axis", 1),))
    assert not check_identity(am, _with_head(g, "argmax", (("axis", 1), ("select_last_index", 1))),
                              {}).proven
    assert check_identity(am, _with_head(g, "argmax", (("axis", -1), ("keepdims", 0))), {}).proven


# -- check sees through heads --------------------------------------------------------------------------
BOX16 = Box(np.zeros(16), np.ones(16))


def _shift_bias(g: Graph, c: float) -> Graph:
    """The same network with ``c`` added to every logit."""
    from leo_verify.graph import Affine
    h = g.copy()
    last = h.args(h.output_name)[0]
    op = h.op(last)
    h.replace(last, Affine(op.weight, op.bias + c))
    return h


def test_top1_sees_through_order_preserving_heads():
    g = graph_from_onnx_model(_export(_classifier(16, 4, "softmax"), (1, 16)))
    for other in ("sigmoid", "tanh", "logsoftmax", "none"):
        r = check_equivalence(g, _with_head(g, other), BOX16, mode="top1", time_limit=30)
        assert r.verdict == "equivalent" and "logits were compared" in r.reason, r.reason


def test_softmax_is_shift_invariant_so_a_shift_is_no_counterexample():
    g = graph_from_onnx_model(_export(_classifier(16, 4, "softmax"), (1, 16)))
    r = check_equivalence(g, _shift_bias(g, 0.25), BOX16, mode="exact", time_limit=20)
    assert r.verdict != "counterexample", r.reason
    # a sigmoid head is injective: the same shift is a counterexample
    s = _with_head(g, "sigmoid")
    r = check_equivalence(s, _shift_bias(s, 0.25), BOX16, mode="exact", time_limit=20)
    assert r.verdict == "counterexample"


def test_epsilon_on_head_outputs_uses_the_lipschitz_constant():
    g = graph_from_onnx_model(_export(_classifier(16, 4, "sigmoid"), (1, 16)))
    shifted = _shift_bias(g, 2.0 ** -10)  # logits differ by 2^-10: sigmoid outputs by <= 2^-12
    r = check_equivalence(g, shifted, BOX16, mode="epsilon", epsilon=2.0 ** -12, time_limit=30)
    assert r.verdict == "equivalent", r.reason
    assert "Lipschitz 1/4" in r.reason and r.epsilon == 2.0 ** -12
    r = check_equivalence(g, _shift_bias(g, 1.0), BOX16, mode="epsilon", epsilon=1e-3, time_limit=30)
    assert r.verdict == "counterexample" and r.counterexample["head"] == "sigmoid"
    assert r.counterexample["head_difference"] > 1e-3


def test_epsilon_through_a_head_writes_a_certificate_the_kernel_rechecks(tmp_path, capsys):
    """``check --epsilon`` on networks with a sigmoid head: the leaves prove the logits within
    epsilon / L, RESULT.json carries logit_epsilon, and recheck binds L * logit_epsilon <= epsilon
    and the heads of both files."""
    from leo_verify.io.onnx.writer import save_onnx
    g = graph_from_onnx_model(_export(_classifier(16, 4, "sigmoid"), (1, 16)))
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    save_onnx(g, str(a), dtype="float64")
    save_onnx(_shift_bias(g, 2.0 ** -10), str(b), dtype="float64")
    res = tmp_path / "r.json"
    code = cli.main(["check", str(a), str(b), "--domain", "box:0,1", "--epsilon", str(2.0 ** -12),
                     "--time-limit", "30", "-o", str(res), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "EQUIVALENT" in out, out
    doc = json.loads(res.read_text())
    assert doc["certificate"]["epsilon"] == "1/4096" and doc["certificate"]["logit_epsilon"] == "1/1024"
    assert cli.main(["recheck", str(res)]) == 0
    assert "EQUIVALENT" in capsys.readouterr().out

    def recheck_edited(edit) -> str:
        bad = json.loads(res.read_text())
        edit(bad)
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        code = cli.main(["recheck", str(path)])
        text = capsys.readouterr().out
        assert code != 0 and "NOT CERTIFIED" in text, text
        return text
    # the logits proven within 1/512 would only give sigmoid outputs within 1/2048 > epsilon
    assert "Lipschitz" in recheck_edited(lambda d: d["certificate"].update(logit_epsilon="1/512"))
    # no logit_epsilon: an epsilon proof about the logits says nothing about the sigmoid outputs
    assert "head" in recheck_edited(lambda d: d["certificate"].pop("logit_epsilon"))
    # a top-1 certificate carries no logit_epsilon
    recheck_edited(lambda d: (d["certificate"].update(mode="top1", epsilon="0"), d.update(mode="top1")))
    # B re-exported with another head (re-hashed everywhere): the heads must be the same
    other = tmp_path / "other.onnx"
    save_onnx(_with_head(_shift_bias(g, 2.0 ** -10), "tanh"), str(other), dtype="float64")
    import hashlib
    h = hashlib.sha256(other.read_bytes()).hexdigest()

    def swap(d):
        d["inputs"]["b"].update(file=str(other), sha256=h)
        d["certificate"]["b"]["sha256"] = h
    assert "same head" in recheck_edited(swap)


def test_different_heads_are_not_proven_equivalent():
    g = graph_from_onnx_model(_export(_classifier(16, 4, "softmax"), (1, 16)))
    for mode in ("epsilon", "exact"):
        r = check_equivalence(g, _with_head(g, "sigmoid"), BOX16, mode=mode, time_limit=10)
        assert r.verdict == "unknown" and "different output heads" in r.reason


# -- eval applies the head -------------------------------------------------------------------------------
def test_cli_eval_applies_the_head(tmp_path, capsys):
    data = _export(_classifier(16, 4, "softmax"), (1, 16))
    model = tmp_path / "m.onnx"
    model.write_bytes(data)
    pts = tmp_path / "p.json"
    x = np.random.default_rng(0).random((2, 16))
    pts.write_text(json.dumps(x.tolist()))
    assert cli.main(["eval", str(model), "-i", str(pts)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["head"] == "softmax"
    np.testing.assert_allclose(np.sum(res["outputs"], axis=1), 1.0)
    np.testing.assert_allclose(res["outputs"], _session(data).run(None, {"x": x[:1].astype(np.float32)})[0].tolist()
                               + _session(data).run(None, {"x": x[1:].astype(np.float32)})[0].tolist(),
                               rtol=1e-5)
    assert cli.main(["eval", str(model), "-i", str(pts), "--exact"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["exact"][0]) == 4 and all("/" in q or q.lstrip("-").isdigit() for q in res["exact"][0])
    np.testing.assert_allclose(np.sum(res["outputs"], axis=1), 1.0)
