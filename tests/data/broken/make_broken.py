"""Generate the broken inputs in this folder (deterministic; the outputs are committed).

    python tests/data/broken/make_broken.py

Every file is tiny.  The ONNX models are built here with ``onnx.helper``
(a 4-input MLP in the ``MatMul + Add + Relu`` style of ACAS Xu), then broken:

=========================  =============================================  ====
file                       what is wrong                                  exit
=========================  =============================================  ====
valid_mlp.onnx             nothing (the reference the others derive from)  0
truncated.onnx             first 300 bytes of valid_mlp.onnx              5
empty.onnx                 zero bytes                                     5
unsupported_op.onnx        a Sigmoid (node 'relu1') instead of the Relu   6
nan_weight.onnx            weight W1[1][2] is NaN                         7
shape_mismatch.onnx        W1 is 5x8 but its input has 4 values           7
bad_bounds.vnnlib          X_2 has lower 0.75 > upper 0.25                8
bad_domain_types.json      "lower" holds a string                         8
bad_point_length.json      3 values for a 4-input network                 9
point.json                 a valid point (4 values)                       0
=========================  =============================================  ====
"""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def _weights():
    rng = np.random.default_rng(0)
    # multiples of 1/16: exact in float32, so the float32 model is the real one
    w1 = np.round(rng.normal(size=(4, 8)) * 16) / 16
    b1 = np.round(rng.normal(size=8) * 16) / 16
    w2 = np.round(rng.normal(size=(8, 2)) * 16) / 16
    b2 = np.round(rng.normal(size=2) * 16) / 16
    return w1, b1, w2, b2


def build_mlp(*, w1=None, act1: str = "Relu", in_features: int = 4) -> onnx.ModelProto:
    """input[1,4] -> MatMul W1 (4x8) -> Add b1 -> <act1> -> MatMul W2 (8x2) -> Add b2 -> output."""
    d_w1, b1, w2, b2 = _weights()
    w1 = d_w1 if w1 is None else w1
    inits = [numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)
             for name, a in (("W1", w1), ("b1", b1), ("W2", w2), ("b2", b2))]
    nodes = [
        helper.make_node("MatMul", ["input", "W1"], ["mm1"], name="fc1_matmul"),
        helper.make_node("Add", ["mm1", "b1"], ["fc1"], name="fc1_add"),
        helper.make_node(act1, ["fc1"], ["relu1"], name="relu1"),
        helper.make_node("MatMul", ["relu1", "W2"], ["mm2"], name="fc2_matmul"),
        helper.make_node("Add", ["mm2", "b2"], ["output"], name="fc2_add"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, in_features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2])],
        initializer=inits)
    model = helper.make_model(graph, producer_name="leo_verify tests",
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by older onnxruntime builds too
    return model


def _save(name: str, data: bytes) -> None:
    with open(os.path.join(HERE, name), "wb") as fh:
        fh.write(data)


def main() -> None:
    valid = build_mlp()
    onnx.checker.check_model(valid)
    blob = valid.SerializeToString()
    assert len(blob) > 300, len(blob)
    _save("valid_mlp.onnx", blob)
    _save("truncated.onnx", blob[:300])
    _save("empty.onnx", b"")

    unsupported = build_mlp(act1="Sigmoid")
    _save("unsupported_op.onnx", unsupported.SerializeToString())

    w1 = _weights()[0].copy()
    w1[2, 1] = np.nan  # ONNX MatMul weight is (in, out): this is W[1][2] of y = W x
    _save("nan_weight.onnx", build_mlp(w1=w1).SerializeToString())

    w1_bad = np.ones((5, 8)) / 8  # inner dimension 5, but the input has 4 values
    _save("shape_mismatch.onnx", build_mlp(w1=w1_bad).SerializeToString())

    lines = ["; X_2 has lower bound 0.75 > upper bound 0.25"]
    lines += [f"(declare-const X_{i} Real)" for i in range(4)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(2)]
    for i in range(4):
        lo, hi = (0.75, 0.25) if i == 2 else (0.0, 1.0)
        lines += [f"(assert (>= X_{i} {lo}))", f"(assert (<= X_{i} {hi}))"]
    lines += ["(assert (>= Y_0 Y_1))"]
    _save("bad_bounds.vnnlib", ("\n".join(lines) + "\n").encode())

    _save("bad_domain_types.json",
          (json.dumps({"lower": [0, 0, "zero", 0], "upper": [1, 1, 1, 1]}) + "\n").encode())
    _save("bad_point_length.json", (json.dumps([0.5, 0.25, 0.125]) + "\n").encode())
    _save("point.json", (json.dumps([0.5, 0.25, 0.125, 1.0]) + "\n").encode())


if __name__ == "__main__":
    main()
