"""Every shared benchmark net: load -> emit ONNX -> load, and load -> emit torch,
reproduce the outputs within 1e-6 (float64 evaluation)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from leo_verify.errors import UnsupportedOp
from leo_verify.io.onnx import load_onnx, save_onnx
from leo_verify.io.torch import from_torch, to_torch
from leo_verify.semantics import evaluate

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
FILES = sorted(BENCH.glob("*/*.onnx")) if BENCH.is_dir() else []
pytestmark = pytest.mark.skipif(not FILES, reason="../shared/benchmarks not present")


def _points(g, path):
    lo, hi = (0.0, 1.0) if "mnist" in path.name else (-0.5, 0.5)
    return np.random.default_rng(7).uniform(lo, hi, (300, g.input_size))


#: convolutional benchmarks are not supported yet (issue 15): they must be refused
#: with a clear UnsupportedOp naming the node and the op, never half-loaded
CONV = {p for p in FILES if p.parent.name == "conv"}


@pytest.mark.parametrize("path", sorted(CONV), ids=[p.name for p in sorted(CONV)])
def test_convolutional_benchmarks_are_refused_clearly(path):
    with pytest.raises(UnsupportedOp, match=r"node '.+' \(Conv\): op 'Conv' is not supported"):
        load_onnx(path)


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
