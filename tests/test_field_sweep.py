"""The field sweep (issue 14, part 4) as a CI test: VNN-COMP RL controllers end to end
(load -> eval vs onnxruntime -> compress -> recheck -> the emitted file vs the original in
onnxruntime), and a TensorFlow-style network with ``/`` in every name and a Softmax head."""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RL = os.path.join(ROOT, "..", "shared", "benchmarks", "rl")


def _sweep():
    spec = importlib.util.spec_from_file_location("field_sweep", os.path.join(ROOT, "examples", "field_sweep.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _assert_end_to_end(row: dict) -> None:
    assert row["error"] is None, row
    assert row["compress_exit"] == 0, row
    assert row["recheck_exit"] == 0 and row["recheck_verdict"] == "certified", row
    assert row["neurons_after"] < row["neurons_before"], row
    # both runs round in float32 in onnxruntime: equal to ~1e-6 (measured <= 2.4e-6)
    assert row["emitted_diff"] <= 1e-5, row
    # in float64 the difference is the real one, which the certificate's eps bounds
    assert row["emitted_f64_diff"] <= row["eps"] + 1e-9, row
    assert row["eval_diff"] <= 1e-5, row  # leo_verify's float64 interpreter vs onnxruntime


# measured on 2 loaded cores: compress 2.0 s + recheck 1.0 s (cartpole), 2.8 s + 1.2 s (lunarlander)
@pytest.mark.skipif(not os.path.isdir(RL), reason="../shared/benchmarks/rl not present")
@pytest.mark.parametrize("model,spec", [("cartpole.onnx", "cartpole_case_safe_14.vnnlib"),
                                        ("lunarlander.onnx", "lunarlander_case_safe_1.vnnlib")])
def test_rl_controller_end_to_end(tmp_path, model, spec):
    fs = _sweep()
    row = fs.run_pair(model.split(".")[0], os.path.join(RL, model), os.path.join(RL, spec),
                      str(tmp_path / "out"), points=1000, seed=0, timeout=240)
    _assert_end_to_end(row)
    assert row["boxes"] == 1 and row["neurons_before"] == 128


# -- a TensorFlow-style network: '/' in every node and tensor name, Identity reads, Softmax head --------
def _tf_style_model(path: str, *, n: int = 6, hidden=(16, 16), m: int = 3, seed: int = 3,
                    weights_as_inputs: bool = False) -> None:
    """A tf2onnx-like MLP: every name is a ``StatefulPartitionedCall/sequential/...`` path,
    weights are read through ``Identity`` (``ReadVariableOp``), a dynamic batch (``unk__7``),
    ``MatMul`` + ``Add`` layers and a ``Softmax`` head; ``weights_as_inputs`` also lists every
    weight as a graph input (older exporters, IR < 4 style)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    pre = "StatefulPartitionedCall/sequential"
    inp, out = "serving_default/dense_input:0", f"{pre}/dense_2/Softmax:0"
    nodes, inits = [], []
    cur, width = inp, n
    sizes = list(hidden) + [m]
    for k, w_out in enumerate(sizes):
        layer = f"{pre}/dense{'' if k == 0 else f'_{k}'}"
        w = rng.normal(0, 1 / np.sqrt(width), size=(width, w_out)).astype(np.float32)
        b = rng.normal(0, 0.5, size=w_out).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"{layer}/MatMul/ReadVariableOp/resource"),
                  numpy_helper.from_array(b, f"{layer}/BiasAdd/ReadVariableOp/resource")]
        nodes += [
            helper.make_node("Identity", [f"{layer}/MatMul/ReadVariableOp/resource"],
                             [f"{layer}/MatMul/ReadVariableOp:0"], name=f"{layer}/MatMul/ReadVariableOp"),
            helper.make_node("Identity", [f"{layer}/BiasAdd/ReadVariableOp/resource"],
                             [f"{layer}/BiasAdd/ReadVariableOp:0"], name=f"{layer}/BiasAdd/ReadVariableOp"),
            helper.make_node("MatMul", [cur, f"{layer}/MatMul/ReadVariableOp:0"], [f"{layer}/MatMul:0"],
                             name=f"{layer}/MatMul"),
            helper.make_node("Add", [f"{layer}/MatMul:0", f"{layer}/BiasAdd/ReadVariableOp:0"],
                             [f"{layer}/BiasAdd:0"], name=f"{layer}/BiasAdd"),
        ]
        cur = f"{layer}/BiasAdd:0"
        if k < len(hidden):
            nodes.append(helper.make_node("Relu", [cur], [f"{layer}/Relu:0"], name=f"{layer}/Relu"))
            cur = f"{layer}/Relu:0"
        width = w_out
    nodes.append(helper.make_node("Softmax", [cur], [out], name=f"{pre}/dense_2/Softmax", axis=-1))
    extra = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits] \
        if weights_as_inputs else []
    graph = helper.make_graph(
        nodes, "tf2onnx/sequential",
        [helper.make_tensor_value_info(inp, TensorProto.FLOAT, ["unk__7", n]), *extra],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["unk__8", m])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


@pytest.mark.parametrize("weights_as_inputs", [False, True])
def test_tf_style_network_with_slashes_and_a_softmax_head_end_to_end(tmp_path, weights_as_inputs):
    import onnx
    fs = _sweep()
    model = str(tmp_path / "tf_style.onnx")
    _tf_style_model(model, weights_as_inputs=weights_as_inputs)
    m = onnx.load(model)
    names = [nd.name for nd in m.graph.node] + [t for nd in m.graph.node for t in (*nd.input, *nd.output)]
    assert all("/" in s for s in names)
    dom = tmp_path / "domain.json"
    dom.write_text(json.dumps({"lower": [0.40] * 6, "upper": [0.45] * 6}))
    row = fs.run_pair("tf_style", model, str(dom), str(tmp_path / "out"), points=500, seed=1, timeout=240)
    _assert_end_to_end(row)
    out = tmp_path / "out"
    # no name became a path; the report states the head; the emitted file is a drop-in
    assert not os.path.exists(out / "StatefulPartitionedCall")
    assert all(os.path.dirname(os.path.relpath(os.path.join(d, f), out)) in ("", "proofs")
               for d, _, fs_ in os.walk(out) for f in fs_)
    with open(out / "report.json") as fh:
        assert json.load(fh)["head"]["head"] == "softmax"
    e = onnx.load(str(out / "compressed.onnx"))
    consts = {t.name for t in m.graph.initializer}
    assert [i.name for i in e.graph.input] == [i.name for i in m.graph.input if i.name not in consts]
    assert e.graph.input[0].type == m.graph.input[0].type  # dynamic batch 'unk__7' kept
    assert [o.name for o in e.graph.output] == [o.name for o in m.graph.output]
    assert e.graph.node[-1].op_type == "Softmax"
    # onnxruntime, in one dynamic batch: probabilities of the original and the emitted file
    from leo_verify.domain import parse_union
    x = parse_union(str(dom), n=6).sample(200, np.random.default_rng(2))
    a, b = fs.ort_outputs(model, x), fs.ort_outputs(str(out / "compressed.onnx"), x)
    assert a.shape == b.shape == (200, 3)
    assert np.allclose(a.sum(axis=1), 1.0, atol=1e-5)
    assert float(np.max(np.abs(a - b))) <= 1e-6
