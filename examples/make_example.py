"""Generate the bundled example network (deterministic; the outputs are committed).

    python examples/make_example.py

Writes, next to this script, in ``nets/``:

* ``tiny_mlp.onnx``          a 4-8-8-2 ReLU MLP in the style of an l1-regularised
                             network: sparse weights, and rows that make some
                             neurons stably active or stably inactive on [0,1]^4;
* ``tiny_mlp_domain.json``   the input domain ``[0,1]^4``;
* ``tiny_point.json``        one input point.

Weights are drawn with numpy seed 0 and rounded to multiples of 1/16, so they
are exact in float32 (the file) and float64 (the IR) alike.
"""
from __future__ import annotations

import json
import os

import numpy as np

from leo_verify.graph import Affine, Graph, Input, Output, Relu, neuron_id
from leo_verify.io.onnx import save_onnx

HERE = os.path.dirname(os.path.abspath(__file__))
NETS = os.path.join(HERE, "nets")


def _sparse(rng, shape, density=0.5):
    w = rng.normal(size=shape) * (rng.random(shape) < density)
    return np.round(w * 16) / 16 + 0.0  # + 0.0: no negative zeros


def build() -> Graph:
    rng = np.random.default_rng(0)
    w1, b1 = _sparse(rng, (8, 4)), np.round(rng.normal(size=8) * 4) / 16 + 0.0
    w2, b2 = _sparse(rng, (8, 8)), np.round(rng.normal(size=8) * 4) / 16 + 0.0
    w3, b3 = _sparse(rng, (2, 8), density=0.75), np.round(rng.normal(size=2) * 4) / 16 + 0.0

    # Layer 1 on [0,1]^4: unit 0 stably active (non-negative weights, positive
    # bias), unit 1 stably inactive (non-positive weights, negative bias),
    # unit 2 dead (no weights, negative bias).
    w1[0], b1[0] = np.abs(w1[0]) + 0.25, 0.5
    w1[1], b1[1] = -np.abs(w1[1]) - 0.125, -0.25
    w1[2], b1[2] = 0.0, -1.0
    # Layer 2: unit 3 reads only the always-active unit 0 of layer 1 with a
    # positive weight and bias (stably active); unit 5 is stably inactive.
    w2[3], b2[3] = 0.0, 0.25
    w2[3, 0] = 0.5
    w2[5], b2[5] = -np.abs(w2[5]), -0.5

    g = Graph(name="tiny_mlp")
    g.add("input", Input(4, shape=(1, 4)))
    g.add("fc1", Affine(w1, b1), ["input"])
    g.add("relu1", Relu([neuron_id("relu1", i) for i in range(8)]), ["fc1"])
    g.add("fc2", Affine(w2, b2), ["relu1"])
    g.add("relu2", Relu([neuron_id("relu2", i) for i in range(8)]), ["fc2"])
    g.add("fc3", Affine(w3, b3), ["relu2"])
    g.add("output", Output(2, shape=(1, 2)), ["fc3"])
    return g.lint(where="make_example")


def main() -> None:
    os.makedirs(NETS, exist_ok=True)
    g = build()
    save_onnx(g, os.path.join(NETS, "tiny_mlp.onnx"), dtype="float32")
    with open(os.path.join(NETS, "tiny_mlp_domain.json"), "w") as fh:
        json.dump({"lower": [0, 0, 0, 0], "upper": [1, 1, 1, 1]}, fh)
        fh.write("\n")
    with open(os.path.join(NETS, "tiny_point.json"), "w") as fh:
        json.dump([0.25, 0.5, 0.75, 1.0], fh)
        fh.write("\n")
    print(f"wrote {NETS}/tiny_mlp.onnx: {g!r}")


if __name__ == "__main__":
    main()
