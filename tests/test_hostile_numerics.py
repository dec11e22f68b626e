"""Numerically hostile networks: the analysis makes no false claim, the certificate never lies.

Weights spanning 1e-8..1e8 in one layer, subnormal weights, a unit whose maximum
pre-activation is a few ulps above zero, duplicated and zero rows.  For each net:
every stable claim of the float analysis is checked against exhaustive
activation-region enumeration confirmed in exact arithmetic, and the certificate
verdict is checked against the truth: "certified" only if the compressed network
equals the original exactly (z3 unsat over the box, exact arithmetic).
"""
from __future__ import annotations

import numpy as np
import pytest
import z3

from leo_verify.analysis import analyze
from leo_verify.analysis.witness import neuron_index
from leo_verify.certify.z3enc import encode_prefix
from leo_verify.domain import Box
from leo_verify.semantics import evaluate_exact_all
from leo_verify.testing import mlp

from groundtruth import extrema

ULP = np.spacing(1.0)


def _nets():
    box2 = Box(np.zeros(2), np.ones(2))
    # 1. weights spanning 1e-8 .. 1e8 in one layer
    w1 = np.array([[1e8, -1e8], [1e-8, 1e-8], [3.0, -1e-8], [-1e8, 1e-8]])
    b1 = np.array([-5e7, -1e-8, 0.5, 1.0])
    yield "span", mlp([w1, np.array([[1.0, 1e8, -1.0, 1e-8], [1e-8, 1.0, 1.0, -1.0]])], [b1, np.zeros(2)]), box2
    # 2. subnormal weights and biases
    sub = 5e-324
    w1 = np.array([[sub, 0.0], [1.0, sub], [-sub, -sub]])
    b1 = np.array([-sub, 0.0, sub])
    yield "subnormal", mlp([w1, np.array([[1.0, 1.0, 1.0]])], [b1, np.zeros(1)]), box2
    # 3. a unit whose maximum is a few ulps above 0 (x0 + x1 - 2 + 4 ulp on [0,1]^2),
    #    one whose maximum is exactly 0, and one a few ulps below
    w1 = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    b1 = np.array([-2.0 + 4 * ULP, -2.0, -2.0 - 4 * ULP])
    yield "ulps", mlp([w1, np.array([[1.0, 1.0, 1.0]])], [b1, np.zeros(1)]), box2
    # 4. duplicated and zero rows, a dead layer behind them
    w1 = np.array([[1.0, -1.0], [1.0, -1.0], [0.0, 0.0], [2.0, -2.0]])
    b1 = np.array([0.25, 0.25, -1.0, 0.5])
    w2 = np.array([[1.0, 1.0, 1.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    yield "dup-zero", mlp([w1, w2, np.array([[1.0, -1.0]])], [b1, np.array([0.0, -3.0]), np.zeros(1)]), box2


NETS = list(_nets())


@pytest.mark.parametrize("name,net,box", NETS, ids=[n for n, _, _ in NETS])
def test_no_false_stable_claim(name, net, box):
    truth = extrema(net, box)
    idx = neuron_index(net)
    facts = analyze(net, box, method="fast", query_time_limit=5)
    for nid, f in facts.neurons.items():
        zmax, xmax, zmin, xmin = truth[nid]
        pre, row, _ = idx[nid]
        if f.status == "stably_inactive" and zmax > 0:
            assert evaluate_exact_all(net, xmax)[pre][row] <= 0, (name, nid, "false inactive claim")
        if f.status == "stably_active" and zmin < 0:
            assert evaluate_exact_all(net, xmin)[pre][row] >= 0, (name, nid, "false active claim")


def _exactly_equal(f, g, box) -> bool:
    s = z3.Solver()
    vf = encode_prefix(f, box.exact_bounds(), s, upto=f.output_name, tag="f_")
    vg = encode_prefix(g, box.exact_bounds(), s, upto=g.output_name, tag="g_")
    s.add(*[a == b for a, b in zip(vf[f.input_name], vg[g.input_name])])
    zero = z3.RealVal(0)
    s.add(z3.Or(*[(a if a is not None else zero) != (b if b is not None else zero)
                  for a, b in zip(vf[f.output_name], vg[g.output_name])]))
    s.set("timeout", 60000)
    r = s.check()
    assert r != z3.unknown
    return r == z3.unsat


@pytest.mark.parametrize("name,net,box", NETS, ids=[n for n, _, _ in NETS])
def test_certificate_verdict_matches_exact_arithmetic(name, net, box):
    from leo_verify.compressor import compress
    r = compress(net, box, query_time_limit=5, certify_options={"fuzz_points": 2000})
    verdict = r.report["certificate"]["verdict"]
    if verdict == "certified":
        # the rational rewrite equals the original exactly ...
        assert _exactly_equal(net, r.graph, box), name
        # ... and the emitted floats are within the proven eps
        eps = r.report["certificate"]["epsilon"]["compressed.onnx"]["float"]
        assert eps >= 0
    else:
        assert r.report["certificate"]["open"], "not certified must list what is open"
    # the ulps net: the +4 ulp unit is unstable (its max is > 0), the exact-0 one is inactive
    if name == "ulps":
        facts = r.facts
        assert facts["relu0[0]"].status != "stably_inactive"
        assert "relu0[0]" in r.graph.neurons()
