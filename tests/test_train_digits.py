"""examples/train_digits.py: deterministic l1-regularised MLPs on sklearn's digits."""
from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")
torch = pytest.importorskip("torch")

from leo_verify.io.onnx import load_onnx  # noqa: E402
from leo_verify.semantics import evaluate  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "train_digits.py")
EPOCHS = 15


def _load_script():
    spec = importlib.util.spec_from_file_location("train_digits", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    return mod


td = _load_script()


@pytest.fixture(scope="module")
def data():
    return td.load_dataset("digits")


@pytest.fixture(scope="module")
def trained(data):
    return td.train_mlp("digits", (25, 25), 1e-3, epochs=EPOCHS, seed=0, data=data)


def test_load_dataset(data):
    X_train, X_test, y_train, y_test = data
    assert X_train.dtype == np.float32 and X_test.dtype == np.float32
    assert X_train.shape[1] == 64 and X_train.shape[0] + X_test.shape[0] == 1797
    assert len(y_train) == len(X_train) and len(y_test) == len(X_test)
    for X in (X_train, X_test):
        assert X.min() >= 0.0 and X.max() <= 1.0
    assert X_train.max() == 1.0
    assert set(np.unique(y_test)) == set(range(10))
    again = td.load_dataset("digits")
    for a, b in zip(data, again):
        np.testing.assert_array_equal(a, b)


def test_deterministic(trained, data):
    model, info = trained
    model2, info2 = td.train_mlp("digits", (25, 25), 1e-3, epochs=EPOCHS, seed=0, data=data)
    sd1, sd2 = model.state_dict(), model2.state_dict()
    assert list(sd1) == list(sd2)
    for k in sd1:
        assert sd1[k].dtype == torch.float32
        assert torch.equal(sd1[k], sd2[k]), k
    assert info["test_accuracy"] == info2["test_accuracy"]
    # another seed gives another net
    model3, _ = td.train_mlp("digits", (25, 25), 1e-3, epochs=1, seed=1, data=data)
    assert not torch.equal(model3[0].weight, sd1["0.weight"])


def test_accuracy_and_info(trained):
    model, info = trained
    assert info["dataset"] == "digits"
    assert info["hidden"] == [25, 25] and info["l1"] == 1e-3
    assert info["epochs"] == EPOCHS and info["seed"] == 0
    assert info["train_accuracy"] > 0.85
    assert info["test_accuracy"] > 0.8
    assert not model.training


def test_onnx_roundtrip(trained, data, tmp_path):
    model, _ = trained
    X_test = data[1]
    path = str(tmp_path / "net.onnx")
    sha = td.export_onnx(model, path, name="net")
    assert len(sha) == 64 and os.path.getsize(path) > 0
    g = load_onnx(path)
    assert g.input_size == 64 and g.output_size == 10
    assert [w for _, w in g.hidden_layers()] == [25, 25]
    with torch.no_grad():
        ref = model(torch.from_numpy(X_test)).double().numpy()
    got = evaluate(g, X_test.astype(np.float64))
    assert np.max(np.abs(got - ref)) < 1e-5
    assert (got.argmax(axis=1) == ref.argmax(axis=1)).all()
    # the weights survive exactly: against torch in float64 only rounding noise remains
    gap = td.onnx_max_abs_diff(model, path, X_test)
    assert gap["float64"] < 1e-9 and gap["float32"] < 1e-5


def test_data_stability(trained, data):
    model, _ = trained
    X = data[0]
    st = td.data_stability(model, X)
    assert st["neurons"] == 50 and len(st["layers"]) == 2
    assert st["stable"] == st["inactive"] + st["active"] <= 50
    # brute-force check of the definition on the first layer
    with torch.no_grad():
        pre = model[0](torch.from_numpy(X)).numpy()
    inactive = set(np.flatnonzero((pre <= 0).all(axis=0)).tolist())
    active = set(np.flatnonzero((pre >= 0).all(axis=0)).tolist()) - inactive
    assert set(st["layers"][0]["inactive"]) == inactive
    assert set(st["layers"][0]["active"]) == active


def test_build_nets_cache(tmp_path, data):
    spec = td.NetSpec("digits", (25, 25), 1e-3, epochs=3)
    out = str(tmp_path / "nets")
    [entry] = td.build_nets(out, specs=[spec], verbose=False)
    path = os.path.join(out, entry["file"])
    assert entry["name"] == td.net_name(spec) == "digits_64x25x25x10_l1_1e-03_ep3"
    assert os.path.isfile(path)
    with open(os.path.join(out, "manifest.json")) as fh:
        manifest = json.load(fh)
    [m] = manifest["nets"]
    assert m["sha256"] == entry["sha256"] and m["spec"] == spec.to_json()
    assert m["hidden"] == [25, 25] and m["dataset"] == "digits" and m["l1"] == 1e-3
    mtime = os.stat(path).st_mtime_ns
    # cached: nothing retrained or rewritten
    [again] = td.build_nets(out, specs=[spec], verbose=False)
    assert again == entry and os.stat(path).st_mtime_ns == mtime
    # forced: retrained, bit-identical file
    [forced] = td.build_nets(out, specs=[spec], force=True, verbose=False)
    assert forced["sha256"] == entry["sha256"]
    # a corrupted file is not trusted
    with open(path, "ab") as fh:
        fh.write(b"x")
    [fixed] = td.build_nets(out, specs=[spec], verbose=False)
    assert fixed["sha256"] == entry["sha256"]


def test_committed_manifest_consistent():
    """The committed digits nets (if generated) match their manifest."""
    folder = os.path.join(ROOT, "examples", "nets", "digits")
    manifest = os.path.join(folder, "manifest.json")
    if not os.path.isfile(manifest):
        pytest.skip("examples/nets/digits not generated")
    from leo_verify.util import sha256_file
    with open(manifest) as fh:
        nets = json.load(fh)["nets"]
    assert nets
    for e in nets:
        path = os.path.join(folder, e["file"])
        assert sha256_file(path) == e["sha256"], e["name"]
        g = load_onnx(path)
        assert [w for _, w in g.hidden_layers()] == e["hidden"]
