"""Every shared benchmark net: load -> emit ONNX -> load, and load -> emit torch,
reproduce the outputs within 1e-6 (float64 evaluation)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from leo_verify.io.onnx import load_onnx, save_onnx
from leo_verify.io.torch import from_torch, to_torch
from leo_verify.semantics import evaluate

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
FILES = sorted(BENCH.glob("*/*.onnx")) if BENCH.is_dir() else []
pytestmark = pytest.mark.skipif(not FILES, reason="../shared/benchmarks not present")


def _points(g, path):
    lo, hi = (0.0, 1.0) if "mnist" in path.name else (-0.5, 0.5)
    return np.random.default_rng(7).uniform(lo, hi, (300, g.input_size))


#: the convolutional benchmarks (issue 15)
CONV = {p for p in FILES if p.parent.name == "conv"}


@pytest.mark.parametrize("path", sorted(CONV), ids=[p.name for p in sorted(CONV)])
def test_convolutional_benchmarks_round_trip_in_conv_form(tmp_path, path):
    import onnx
    import onnxruntime as ort
    g = load_onnx(path)
    assert all(op.layout is not None for n, op in g.items() if op.kind == "affine" and g.users(n)
               and g.op(g.users(n)[0]).kind == "relu" and op.size > 600)  # the convolutions
    x = np.random.default_rng(7).uniform(0, 1, (20, g.input_size))
    y = evaluate(g, x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [1] + [int(d) for d in inp.shape[1:]]
    ref = np.stack([sess.run(None, {inp.name: p.astype(np.float32).reshape(shape)})[0].ravel() for p in x])
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    out = tmp_path / "net.onnx"
    save_onnx(g, out)
    assert [n.op_type for n in onnx.load(out).graph.node].count("Conv") == 2
    np.testing.assert_allclose(evaluate(load_onnx(out), x), y, rtol=1e-6, atol=1e-6)
    module = to_torch(g, dtype=torch.float64)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in module.modules()) == 2
    with torch.no_grad():
        yt = module(torch.tensor(x).reshape([20] + shape[1:])).numpy()
    np.testing.assert_allclose(yt.reshape(y.shape), y, rtol=1e-9, atol=1e-9)
    back = from_torch(module, input_size=tuple(shape[1:]))
    np.testing.assert_allclose(evaluate(back, x), y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("path", [p for p in FILES if p not in CONV], ids=[p.name for p in FILES if p not in CONV])
def test_onnx_and_torch_round_trips(tmp_path, path):
    g = load_onnx(path)
    x = _points(g, path)
    y = evaluate(g, x)
    out = tmp_path / "net.onnx"
    save_onnx(g, out)
    np.testing.assert_allclose(evaluate(load_onnx(out), x), y, rtol=1e-6, atol=1e-6)
    for dtype in (torch.float64, torch.float32):
        module = to_torch(g, dtype=dtype)
        with torch.no_grad():
            yt = module(torch.tensor(x, dtype=dtype)).double().numpy()
        tol = 1e-6 if dtype == torch.float64 else 1e-4
        np.testing.assert_allclose(yt.reshape(y.shape), y, rtol=tol, atol=tol)
    back = from_torch(to_torch(g, dtype=torch.float64), input_size=g.input_size)
    np.testing.assert_allclose(evaluate(back, x), y, rtol=1e-6, atol=1e-6)
