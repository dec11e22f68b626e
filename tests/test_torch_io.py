"""Tests of the PyTorch reader/writer (leo_verify.io.torch)."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from leo_verify.errors import InputFileError, ModelFormatError, UnsupportedOp, UsageError
from leo_verify.graph import Affine, Graph, Input, Output, Relu, neuron_id
from leo_verify.io import load
from leo_verify.io.torch import LeoNetwork, from_torch, load_torch_file, save_torch, to_torch
from leo_verify.semantics import evaluate


def _run(module, x):
    with torch.no_grad():
        return module(x).numpy()


def _kinds(graph):
    return [op.kind for _, op in graph.items()]


# ---------------------------------------------------------------------------
# modules used below
# ---------------------------------------------------------------------------
class Residual(nn.Module):
    """BatchNorm (eval) then x + fc2(relu(fc1(x)))."""

    def __init__(self, n=4, h=6):
        super().__init__()
        self.bn = nn.BatchNorm1d(n)
        self.fc1 = nn.Linear(n, h)
        self.fc2 = nn.Linear(h, n)
        self.head = nn.Linear(n, 2)

    def forward(self, x):
        x = self.bn(x)
        x = x + self.fc2(F.relu(self.fc1(x)))
        return self.head(torch.relu(x))


def _residual(dtype=torch.float64):
    torch.manual_seed(1)
    m = Residual().to(dtype)
    with torch.no_grad():  # non-trivial running statistics and affine params
        m.bn.running_mean.normal_()
        m.bn.running_var.uniform_(0.5, 2.0)
        m.bn.weight.normal_()
        m.bn.bias.normal_()
    return m.eval()


# ---------------------------------------------------------------------------
# from_torch
# ---------------------------------------------------------------------------
def test_sequential_mlp_float64():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    g = from_torch(m)
    assert g.nodes() == ["input", "0", "1", "2", "3", "4", "output"]
    assert [n for n, _ in g.hidden_layers()] == ["1", "3"]
    assert g.op("1").neurons[0] == neuron_id("1", 0)
    assert g.metadata["format"] == "torch" and g.metadata["dtype"] == "float64"
    # weights are the module's own numbers: no folding, no rounding
    np.testing.assert_array_equal(g.op("2").weight, m[2].weight.detach().numpy())
    x = torch.randn(50, 3, dtype=torch.float64)
    np.testing.assert_allclose(evaluate(g, x.numpy()), _run(m, x), rtol=0, atol=1e-12)


def test_sequential_mlp_float32():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    g = from_torch(m)
    assert g.metadata["dtype"] == "float32"
    x = torch.randn(50, 6)
    np.testing.assert_allclose(evaluate(g, x.double().numpy()), _run(m, x), rtol=0, atol=1e-5)


def test_batchnorm_and_residual():
    m = _residual()
    g = from_torch(m)
    assert _kinds(g).count("add") == 1
    # BatchNorm stays its own diagonal affine node; Linear layers are not folded
    assert _kinds(g).count("affine") == 4
    bn = g.op("bn")
    assert np.count_nonzero(bn.weight - np.diag(np.diagonal(bn.weight))) == 0
    mean, var = m.bn.running_mean.numpy(), m.bn.running_var.numpy()
    scale = m.bn.weight.detach().numpy() / np.sqrt(var + m.bn.eps)
    np.testing.assert_array_equal(np.diagonal(bn.weight), scale)
    np.testing.assert_array_equal(bn.bias, m.bn.bias.detach().numpy() - mean * scale)
    x = torch.randn(64, 4, dtype=torch.float64)
    np.testing.assert_allclose(evaluate(g, x.numpy()), _run(m, x), rtol=0, atol=1e-6)


def test_batchnorm_float32_and_no_affine():
    torch.manual_seed(2)
    m = nn.Sequential(nn.BatchNorm1d(3, affine=False), nn.Linear(3, 2))
    with torch.no_grad():
        m[0].running_mean.normal_()
        m[0].running_var.uniform_(0.5, 2)
    m.eval()
    g = from_torch(m)
    assert g.input_size == 3  # inferred from the BatchNorm
    x = torch.randn(20, 3)
    np.testing.assert_allclose(evaluate(g, x.double().numpy()), _run(m, x), rtol=0, atol=1e-5)


def test_batchnorm_without_running_stats_refused():
    m = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, track_running_stats=False)).eval()
    with pytest.raises(UnsupportedOp, match=r"'1'.*track_running_stats"):
        from_torch(m)


def test_nested_sequential_with_identity_ops():
    torch.manual_seed(3)
    m = nn.Sequential(
        nn.Flatten(), nn.Linear(4, 6), nn.Dropout(0.3),
        nn.Sequential(nn.ReLU(), nn.Identity(), nn.Sequential(nn.Linear(6, 5), nn.ReLU())),
        nn.Flatten(), nn.Linear(5, 2)).double().eval()
    g = from_torch(m)
    assert _kinds(g) == ["input", "affine", "relu", "affine", "relu", "affine", "output"]
    assert "3.2.0" in g and "3.0" in g and "5" in g  # module paths name the nodes
    x = torch.randn(30, 4, dtype=torch.float64)
    np.testing.assert_allclose(evaluate(g, x.numpy()), _run(m, x), rtol=0, atol=1e-12)


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2 * 3, 5)
        self.fc2 = nn.Linear(5, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        x = torch.flatten(x, 1)
        h = F.relu(self.fc1(x))
        h = F.dropout(h, 0.5, training=self.training)
        h = torch.add(h, self.fc2(h).relu())
        return self.out(h + h)


def test_functional_calls_and_shaped_input():
    torch.manual_seed(4)
    m = Functional().double().eval()
    g = from_torch(m, input_size=(2, 3))
    assert g.input_size == 6 and g.op(g.input_name).shape == (2, 3)
    x = torch.randn(10, 2, 3, dtype=torch.float64)
    np.testing.assert_allclose(evaluate(g, x.reshape(10, 6).numpy()), _run(m, x), atol=1e-12, rtol=0)
    # "out" collides with nothing, "output" is the output node; h + h became 2*I
    doubled = [op for _, op in g.items() if op.kind == "affine" and op.in_size == op.size == 5
               and np.array_equal(op.weight, 2 * np.eye(5))]
    assert len(doubled) == 1
    # the same net with the size inferred (flat input)
    g2 = from_torch(m)
    assert g2.input_size == 6


@pytest.mark.parametrize("bad, match", [
    (nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 1)), r"module '1'\): Sigmoid"),
    (nn.Sequential(nn.Linear(3, 4), nn.Softplus(), nn.Linear(4, 1)), r"module '1'\): Softplus"),
])
def test_unsupported_module_names_node(bad, match):
    with pytest.raises(UnsupportedOp, match=match):
        from_torch(bad)


def test_conv3d_module_is_refused_naming_the_node():
    # convolutions go through the ONNX reader (tests/test_conv.py); 3-D ones it refuses
    with pytest.raises(UnsupportedOp, match=r"Conv.*3 spatial dimensions"):
        from_torch(nn.Sequential(nn.Conv3d(1, 2, 2), nn.ReLU()), input_size=(1, 3, 3, 3))


def test_unsupported_function_names_node():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.fc2 = nn.Linear(3, 1)

        def forward(self, x):
            # tanh is an output head (issue 14); inside the network it stays unsupported
            return self.fc2(torch.tanh(self.fc(x)))

    with pytest.raises(UnsupportedOp, match=r"'tanh'.*torch.tanh"):
        from_torch(M())


def test_add_of_constant_and_random_dropout_refused():
    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x) + 1.0

    class Drop(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return F.dropout(self.fc(x), 0.5)  # training=True by default: random

    with pytest.raises(UnsupportedOp, match="constant"):
        from_torch(Const())
    with pytest.raises(UnsupportedOp, match="random"):
        from_torch(Drop().eval())


def test_inplace_relu_aliasing():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            h = self.fc(x)
            r = F.relu(h, inplace=True)  # eager: h is now relu(h) too
            return r + h

    with pytest.raises(UnsupportedOp, match="in-place"):
        from_torch(Bad())
    # in-place ReLU on a value nobody else reads is fine
    torch.manual_seed(5)
    ok = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 1)).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    np.testing.assert_allclose(evaluate(from_torch(ok), x.numpy()), _run(ok, x), atol=1e-12)


def test_input_size_inference():
    with pytest.raises(UsageError, match="input_size"):
        from_torch(nn.Sequential(nn.ReLU()))
    g = from_torch(nn.Sequential(nn.ReLU()), input_size=3)
    assert g.input_size == 3 and g.output_size == 3
    with pytest.raises(ModelFormatError, match="expects 3 inputs"):
        from_torch(nn.Sequential(nn.Linear(3, 1)), input_size=4)
    # a bare Linear as the root module
    g = from_torch(nn.Linear(3, 2))
    assert _kinds(g).count("affine") == 1 and g.input_size == 3


def test_not_a_module():
    with pytest.raises(ModelFormatError):
        from_torch("model.pt")


def test_load_dispatch_module():
    g = load(nn.Sequential(nn.Linear(2, 2)))
    assert g.input_size == 2


# ---------------------------------------------------------------------------
# to_torch
# ---------------------------------------------------------------------------
def test_to_torch_chain_round_trip():
    torch.manual_seed(6)
    m = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    g = from_torch(m)
    t = to_torch(g)
    assert isinstance(t, nn.Sequential)
    assert t[0].weight.dtype == torch.float64  # from metadata
    x = torch.randn(40, 3, dtype=torch.float64)
    np.testing.assert_allclose(_run(t, x), _run(m, x), atol=1e-12, rtol=0)
    g2 = from_torch(t)
    assert g2.neurons() == g.neurons()  # node names survive for plain names
    np.testing.assert_allclose(evaluate(g2, x.numpy()), evaluate(g, x.numpy()), atol=1e-6, rtol=0)
    t32 = to_torch(g, dtype=torch.float32)
    assert t32[0].weight.dtype == torch.float32


def test_to_torch_residual_round_trip():
    m = _residual()
    g = from_torch(m)
    t = to_torch(g)
    assert isinstance(t, LeoNetwork) and not isinstance(t, nn.Sequential)
    x = torch.randn(32, 4, dtype=torch.float64)
    np.testing.assert_allclose(_run(t, x), evaluate(g, x.numpy()), atol=1e-12, rtol=0)
    g2 = from_torch(t)
    assert sorted(_kinds(g2)) == sorted(_kinds(g))
    np.testing.assert_allclose(evaluate(g2, x.numpy()), evaluate(g, x.numpy()), atol=1e-6, rtol=0)


def _empty_layer_graph():
    g = Graph(name="empty", metadata={"dtype": "float64"})
    g.add("input", Input(3))
    g.add("a", Affine(np.zeros((0, 3)), np.zeros(0)), ["input"])
    g.add("r", Relu([]), ["a"])
    g.add("b", Affine(np.zeros((2, 0)), np.array([1.5, -2.0])), ["r"])
    g.add("output", Output(2), ["b"])
    return g.lint()


def test_to_torch_zero_width_layer():
    g = _empty_layer_graph()
    t = to_torch(g)
    x = torch.randn(5, 3, dtype=torch.float64)
    np.testing.assert_array_equal(_run(t, x), np.tile([1.5, -2.0], (5, 1)))


def test_to_torch_dotted_names():
    g = Graph(name="dots")
    g.add("input", Input(2))
    g.add("layers.0", Affine(np.eye(2), np.zeros(2)), ["input"])
    g.add("layers.1", Relu([neuron_id("layers.1", i) for i in range(2)]), ["layers.0"])
    g.add("forward", Affine(np.ones((1, 2)), np.zeros(1)), ["layers.1"])
    g.add("output", Output(1), ["forward"])
    t = to_torch(g.lint())
    assert list(dict(t.named_children())) == ["layers_0", "layers_1", "forward_1"]
    np.testing.assert_allclose(_run(t, torch.tensor([[1.0, -2.0]])), [[1.0]])


# ---------------------------------------------------------------------------
# state-dict files
# ---------------------------------------------------------------------------
def test_state_dict_file_sequential(tmp_path):
    torch.manual_seed(7)
    m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2))
    p = tmp_path / "mlp.pt"
    torch.save(m.state_dict(), p)
    g = load_torch_file(p)
    # the same node names and neuron ids as from_torch on the module
    assert g.neurons() == from_torch(m).neurons()
    assert g.metadata["dtype"] == "float32" and g.metadata["source"] == str(p)
    x = torch.randn(20, 4)
    np.testing.assert_allclose(evaluate(g, x.double().numpy()), _run(m, x), atol=1e-5, rtol=0)
    g2 = load(str(p))  # the dispatcher
    assert g2.neurons() == g.neurons()


def test_state_dict_file_named_layers_no_bias(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(3, 4, bias=False)
            self.fc2 = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    torch.manual_seed(8)
    m = Net().double()
    p = tmp_path / "named.pth"
    torch.save({"epoch": 3, "state_dict": m.state_dict()}, p)  # a checkpoint wrapper
    g = load_torch_file(p)
    assert [n for n, op in g.items() if op.kind == "affine"] == ["fc1", "fc2"]
    assert g.hidden_layers() == [("fc1.relu", 4)]
    x = torch.randn(10, 3, dtype=torch.float64)
    np.testing.assert_allclose(evaluate(g, x.numpy()), _run(m, x), atol=1e-12, rtol=0)


def test_state_dict_shape_mismatch(tmp_path):
    sd = {"0.weight": torch.zeros(4, 3), "0.bias": torch.zeros(4),
          "2.weight": torch.zeros(2, 5), "2.bias": torch.zeros(2)}
    p = tmp_path / "bad.pt"
    torch.save(sd, p)
    with pytest.raises(ModelFormatError, match=r"'2\.weight'.*\(2, 5\).*4 outputs"):
        load_torch_file(p)
    sd["2.weight"] = torch.zeros(2, 4)
    sd["2.bias"] = torch.zeros(3)
    torch.save(sd, p)
    with pytest.raises(ModelFormatError, match=r"'2\.bias'"):
        load_torch_file(p)


@pytest.mark.parametrize("obj, match", [
    ([torch.zeros(2, 2)], "not a state dict"),
    ({"0.weight": torch.zeros(2, 2), "1.running_mean": torch.zeros(2)}, "unexpected key '1.running_mean'"),
    ({"0.weight": torch.zeros(2, 2), "0.bias": "hello"}, "not a tensor"),
    ({}, "no Linear layers"),
    ({"0.weight": torch.zeros(2, 2, dtype=torch.int64)}, "int64"),
])
def test_state_dict_not_an_mlp(tmp_path, obj, match):
    p = tmp_path / "x.pt"
    torch.save(obj, p)
    with pytest.raises(ModelFormatError, match=match):
        load_torch_file(p)


def test_truncated_and_garbage_files(tmp_path):
    p = tmp_path / "full.pt"
    torch.save(nn.Linear(3, 2).state_dict(), p)
    data = p.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError) as info:
        load_torch_file(cut)
    assert "\n" not in str(info.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a torch file at all")
    with pytest.raises(ModelFormatError):
        load_torch_file(junk)
    with pytest.raises(InputFileError):
        load_torch_file(tmp_path / "missing.pt")


class _Evil:
    """Unpickling this would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_arbitrary_pickle_refused_never_run(tmp_path, writer):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    payload = {"0.weight": torch.zeros(2, 2), "x": _Evil(str(marker))}
    if writer == "torch":
        torch.save(payload, p)
    else:
        with open(p, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(ModelFormatError, match="weights_only") as info:
        load_torch_file(p)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_save_torch_round_trip(tmp_path):
    torch.manual_seed(9)
    m = nn.Sequential(nn.Linear(3, 7), nn.ReLU(), nn.Linear(7, 2)).double()
    g = from_torch(m)
    p = tmp_path / "out.pt"
    save_torch(g, p)
    assert sorted(os.listdir(tmp_path)) == ["out.pt"]  # no temp file left behind
    sd = torch.load(p, weights_only=True)
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    g2 = load_torch_file(p)
    assert g2.neurons() == g.neurons()
    x = np.random.default_rng(0).normal(size=(25, 3))
    np.testing.assert_array_equal(evaluate(g2, x), evaluate(g, x))


def test_save_torch_refuses_non_mlp(tmp_path):
    with pytest.raises(UnsupportedOp, match="residual"):
        save_torch(from_torch(_residual()), tmp_path / "r.pt")
    g = from_torch(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    with pytest.raises(UnsupportedOp, match="affine-relu"):
        save_torch(g, tmp_path / "r.pt")
    assert not os.listdir(tmp_path)
    with pytest.raises(InputFileError):
        save_torch(from_torch(nn.Linear(2, 2)), tmp_path / "no" / "such" / "dir.pt")


# ---------------------------------------------------------------------------
# property test
# ---------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(widths=st.lists(st.integers(1, 7), min_size=2, max_size=5),
       seed=st.integers(0, 2**31 - 1), use_f32=st.booleans())
def test_random_mlps_round_trip(widths, seed, use_f32):
    torch.manual_seed(seed)
    layers = []
    for k in range(len(widths) - 1):
        layers.append(nn.Linear(widths[k], widths[k + 1]))
        if k < len(widths) - 2:
            layers.append(nn.ReLU())
    dtype = torch.float32 if use_f32 else torch.float64
    m = nn.Sequential(*layers).to(dtype)
    g = from_torch(m)
    x = torch.randn(16, widths[0], dtype=dtype) * 3
    tol = 1e-5 if use_f32 else 1e-12
    np.testing.assert_allclose(evaluate(g, x.double().numpy()), _run(m, x), atol=tol, rtol=tol)
    t = to_torch(g)
    assert isinstance(t, nn.Sequential)
    np.testing.assert_allclose(_run(t, x), _run(m, x), atol=1e-6, rtol=0)
    np.testing.assert_allclose(evaluate(from_torch(t), x.double().numpy()),
                               evaluate(g, x.double().numpy()), atol=1e-6, rtol=0)
