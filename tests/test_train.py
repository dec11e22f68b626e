"""leo_verify.train and `leo-verify train`: determinism, sound interval bounds, RS works, CLI output."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from leo_verify.train import (interval_bounds, load_dataset, make_mlp, rs_loss, save,  # noqa: E402
                              stable_units, train_mlp)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _weights(model):
    return [p.detach().numpy().copy() for p in model.parameters()]


def test_same_seed_same_weights_and_onnx(digits, tmp_path):
    X, _, y, _ = digits
    kw = dict(hidden=(16, 16), l1=1e-4, rs=0.05, epochs=2, progress=False)
    m1, log1 = train_mlp(X[:400], y[:400], seed=3, **kw)
    m2, log2 = train_mlp(X[:400], y[:400], seed=3, **kw)
    for a, b in zip(_weights(m1), _weights(m2)):
        assert np.array_equal(a, b)
    assert log1["epochs_log"] == log2["epochs_log"]
    save(m1, str(tmp_path / "a.onnx"))
    save(m2, str(tmp_path / "b.onnx"))
    digest = [hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in ("a.onnx", "b.onnx")]
    assert digest[0] == digest[1]
    m3, _ = train_mlp(X[:400], y[:400], seed=4, **kw)
    assert not all(np.array_equal(a, b) for a, b in zip(_weights(m1), _weights(m3)))


def _preactivations(model, x):
    pre = []
    with torch.no_grad():
        for mod in model:
            x = mod(x)
            if isinstance(mod, torch.nn.Linear):
                pre.append(x)
    return pre[:-1]  # hidden layers only


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interval_bounds_contain_sampled_preactivations(seed):
    torch.manual_seed(seed)
    model = make_mlp(12, (20, 15, 10), 3)
    rng = np.random.default_rng(seed)
    # one box: corners, random interior points
    lo = rng.uniform(0, 0.5, 12).astype(np.float32)
    hi = (lo + rng.uniform(0, 0.5, 12)).astype(np.float32)
    pts = rng.uniform(lo, hi, size=(2000, 12)).astype(np.float32)
    corners = np.where(rng.integers(0, 2, size=(500, 12)).astype(bool), lo, hi).astype(np.float32)
    pts = torch.from_numpy(np.vstack([pts, corners]))
    bounds = interval_bounds(model, torch.from_numpy(lo), torch.from_numpy(hi))
    for (l, u), z in zip(bounds, _preactivations(model, pts)):
        assert (z >= l - 1e-5).all() and (z <= u + 1e-5).all()
    # L-inf balls clipped to [0, 1], one per point
    centres = rng.uniform(0, 1, size=(300, 12)).astype(np.float32)
    eps = 0.1
    blo, bhi = np.clip(centres - eps, 0, 1), np.clip(centres + eps, 0, 1)
    inside = rng.uniform(blo, bhi).astype(np.float32)
    bounds = interval_bounds(model, torch.from_numpy(blo), torch.from_numpy(bhi))
    for (l, u), z in zip(bounds, _preactivations(model, torch.from_numpy(inside))):
        assert l.shape == z.shape
        assert (z >= l - 1e-5).all() and (z <= u + 1e-5).all()


def test_rs_loss_values_and_gradient():
    l = torch.tensor([[-1.0, 0.5, -2.0]], requires_grad=True)
    u = torch.tensor([[1.0, 2.0, -1.0]], requires_grad=True)
    val = rs_loss([(l, u)])
    expected = -(np.tanh(1 - 1) + np.tanh(1 + 1) + np.tanh(1 + 2))
    assert val.item() == pytest.approx(expected, rel=1e-6)
    val.backward()
    assert l.grad is not None and float(l.grad.abs().sum()) > 0


def test_rs_increases_interval_stable_units(digits):
    X, Xte, y, yte = digits
    kw = dict(hidden=(32, 32), l1=1e-4, epochs=4, seed=0, progress=False, X_test=Xte, y_test=yte)
    plain, log0 = train_mlp(X, y, rs=0.0, **kw)
    reg, log1 = train_mlp(X, y, rs=0.005, region="box", **kw)
    s0 = stable_units(plain, np.zeros(64), np.ones(64))["stable"]
    s1 = stable_units(reg, np.zeros(64), np.ones(64))["stable"]
    assert s1 > s0 + 5, (s0, s1)
    assert log1["final"]["stable_box"] == s1
    assert log1["final"]["test_accuracy"] > 0.5
    ball, log2 = train_mlp(X, y, rs=0.005, region="ball", eps=0.05, **kw)
    assert log2["final"]["stable_region"] >= log2["final"]["stable_box"]


def test_cli_train_writes_onnx_matching_torch(tmp_path):
    out, logp = tmp_path / "net.onnx", tmp_path / "net_log.json"
    exe = [sys.executable, "-m", "leo_verify"]
    r = subprocess.run(exe + ["train", "--data", "digits", "--hidden", "12,10", "--l1", "1e-4",
                              "--rs", "0.05", "--epochs", "2", "--seed", "1", "-o", str(out),
                              "--log", str(logp), "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    log = json.loads(logp.read_text())
    assert len(log["epochs_log"]) == 2 and log["data"] == "digits"
    assert {"loss", "train_accuracy", "test_accuracy", "stable_box"} <= set(log["epochs_log"][0])
    # the same training in-process gives the same network
    X, _, y, _ = load_dataset("digits")
    model, _ = train_mlp(X, y, hidden=(12, 10), l1=1e-4, rs=0.05, epochs=2, seed=1, n_out=10,
                         progress=False)
    pts = np.random.default_rng(0).uniform(0, 1, size=(5, 64))
    np.save(tmp_path / "x.npy", pts)
    r = subprocess.run(exe + ["eval", str(out), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "y.npy").astype(np.float64)
    with torch.no_grad():
        want = model.double()(torch.from_numpy(pts)).numpy()
    assert np.abs(got - want).max() < 1e-4


def test_hinge_rs_is_distance_to_stability_and_per_layer_weights():
    l = torch.tensor([[-1.0, 0.5, -2.0, -0.25]])
    u = torch.tensor([[1.0, 2.0, -1.0, 3.0]])
    assert rs_loss([(l, u)], kind="hinge").item() == pytest.approx(1.0 + 0.0 + 0.0 + 0.25)
    two = [(l, u), (l, u)]
    assert rs_loss(two, [1.0, 0.0], "hinge").item() == pytest.approx(1.25)
    with pytest.raises(ValueError):
        rs_loss(two, kind="square")


def test_cli_train_rejects_bad_options(tmp_path):
    exe = [sys.executable, "-m", "leo_verify", "train"]
    for bad in (["--hidden", "10,x"], ["--l1", "-1"], ["--epochs", "0"], ["--rs", "0.1,0.2,0.3"]):
        r = subprocess.run(exe + bad + ["-o", str(tmp_path / "n.onnx")], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 3, (bad, r.returncode, r.stderr)
        assert not (tmp_path / "n.onnx").exists()


def test_reproduce_stability_quick(tmp_path):
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                          "reproduce_stability.py")
    r = subprocess.run([sys.executable, script, "--quick", "--out", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [row["verdict"] for row in rows] == ["certified", "certified"]
    plain, stab = rows
    assert stab["removed_pct"] >= 50 > plain["removed_pct"]
    assert "| digits | 50x50 |" in r.stdout
