"""merge_proportional: positively scaled copies of a unit are merged (stable or not), negative ones kept."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leo_verify.certify.certificate import certify
from leo_verify.domain import Box
from leo_verify.graph import Affine, Graph, Input, Output, Relu
from leo_verify.kernel.identity import check_identity
from leo_verify.passes import compress_graph
from leo_verify.passes.proportional import merge_proportional
from leo_verify.semantics import evaluate_exact
from leo_verify.testing import points_in
from test_passes import z3_difference

SCALES = [Fraction(1, 2), Fraction(2), Fraction(4), Fraction(1), Fraction(3, 8)]


def planted(w, b, v, copies) -> Graph:
    """``y = V relu(W x + b)`` with extra units: ``(k, c)`` appends ``c * row k``."""
    W = [list(map(Fraction, r)) for r in w]
    B = list(map(Fraction, b))
    for k, c in copies:
        W.append([c * x for x in W[k]])
        B.append(c * B[k])
    rng = np.random.default_rng(len(copies))
    V = np.hstack([np.asarray(v, dtype=np.float64),
                   rng.integers(-4, 5, size=(len(v), len(copies))).astype(np.float64) / 4])
    g = Graph(name="planted")
    g.add("x", Input(len(W[0])))
    g.add("fc1", Affine.from_rational(np.array(W, dtype=object), np.array(B, dtype=object)), ["x"])
    g.add("relu1", Relu([f"relu1[{i}]" for i in range(len(W))]), ["fc1"])
    g.add("fc2", Affine(V, np.zeros(len(v))), ["relu1"])
    g.add("y", Output(len(v)), ["fc2"])
    return g.lint(where="test")


small = st.integers(-8, 8).map(lambda k: k / 4)


@st.composite
def planted_nets(draw):
    n, m, p = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 2))
    w = [[draw(small) for _ in range(n)] for _ in range(m)]
    for r in w:  # no zero rows: a zero unit is not a copy of anything
        if all(x == 0 for x in r):
            r[0] = 1.0
    b = [draw(small) for _ in range(m)]
    v = [[draw(small) for _ in range(m)] for _ in range(p)]
    copies = draw(st.lists(st.tuples(st.integers(0, m - 1), st.sampled_from(SCALES + [Fraction(-1), Fraction(-2)])),
                           max_size=4))
    return planted(w, b, v, copies), copies, m


@given(planted_nets(), st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_positive_copies_are_merged_negative_ones_kept_and_outputs_equal(case, data):
    g, copies, m = case
    new, log = merge_proportional(g, {})
    new.lint(where="test")
    kept = set(new.neurons())
    for j, (k, c) in enumerate(copies):
        nid = f"relu1[{m + j}]"
        if c < 0:
            # a negative multiple is another function: kept unless it is a copy of another kept unit
            # (or nothing reads it)
            continue
        assert nid not in kept or all(f"relu1[{i}]" not in kept for i in [k]), (nid, log)
    box = Box(-np.ones(g.input_size), np.ones(g.input_size))
    for _ in range(5):
        x = data.draw(points_in(box))
        assert evaluate_exact(g, x) == evaluate_exact(new, x)
    # the kernel's identity check proves the merge itself (no stability fact is needed)
    assert check_identity(g, new, {}).proven


def test_negative_copy_is_kept_and_z3_proves_the_merge():
    g = planted([[1.0, -0.5], [0.25, 1.0]], [0.25, -0.5], [[1.0, -1.0]],
                [(0, Fraction(2)), (1, Fraction(1, 2)), (0, Fraction(-1))])
    new, log = merge_proportional(g, {})
    assert set(new.neurons()) == {"relu1[0]", "relu1[1]", "relu1[4]"}
    assert log[0]["into"] == {"relu1[2]": ["relu1[0]", "2"], "relu1[3]": ["relu1[1]", "1/2"]}
    box = Box(-np.ones(2), np.ones(2))
    assert z3_difference(g, new, box) is None


def test_a_wrong_merge_of_a_negative_copy_is_a_counterexample():
    g = planted([[1.0, -0.5]], [0.25], [[1.0]], [(0, Fraction(-1))])
    g.replace("fc2", Affine(np.array([[1.0, 1.0]]), np.zeros(1)))  # y = relu(z) + relu(-z) = |z|
    # merge the -1 copy as if relu(-z) were -relu(z): a different function
    w = g.op("fc2").rational()[0]
    bad = g.copy()
    bad.replace("fc1", Affine.from_rational(g.op("fc1").rational()[0][:1], g.op("fc1").rational()[1][:1]))
    bad.replace("relu1", Relu(["relu1[0]"]))
    bad.replace("fc2", Affine.from_rational(np.array([[w[0, 0] - w[0, 1]]], dtype=object),
                                            np.array([Fraction(0)], dtype=object)))
    bad.lint(where="test")
    x = z3_difference(g, bad, Box(-np.ones(2), np.ones(2)))
    assert x is not None and evaluate_exact(g, x) != evaluate_exact(bad, x)
    assert not check_identity(g, bad, {}).proven


def test_units_nothing_reads_are_removed():
    g = planted([[1.0, 0.5], [0.5, -1.0]], [0.0, 0.25], [[1.0, 0.0]], [])
    new, log = merge_proportional(g, {})
    assert new.neurons() == ["relu1[0]"] and log[0]["action"].startswith("removed")
    assert check_identity(g, new, {}).proven


def test_compress_with_planted_copies_certifies_and_removes_them():
    rng = np.random.default_rng(3)
    w = (rng.integers(-8, 9, size=(6, 3)) / 8).tolist()
    b = (rng.integers(-4, 5, size=6) / 8).tolist()
    v = (rng.integers(-8, 9, size=(2, 6)) / 8).tolist()
    copies = [(0, Fraction(1, 2)), (1, Fraction(2)), (2, Fraction(4)), (3, Fraction(1, 2)), (4, Fraction(2)),
              (5, Fraction(4))]
    g = planted(w, b, v, copies)
    base = planted(w, b, v, [])
    box = Box(-np.ones(3), np.ones(3))
    a, _ = compress_graph(g, {})
    c, _ = compress_graph(base, {})
    # the six copies cost nothing (a copy whose outgoing weights cancel its original's removes both)
    assert len(a.neurons()) <= len(c.neurons())
    cert = certify(g, a, box, {}, fuzz_points=500)
    assert cert.verdict == "certified", [o.to_json() for o in cert.obligations if o.status != "proven"]
