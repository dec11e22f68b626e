"""The falsification campaign (leo_verify/certify/fuzz.py).

Differences are checked against independent evaluations: the reported point
must reproduce the reported difference, copies must show exactly 0, and
needles that only one stage can find are found by that stage.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from leo_verify.certify.fuzz import falsify, output_gradients, score
from leo_verify.domain import Box
from leo_verify.errors import DataError
from leo_verify.graph import Affine
from leo_verify.semantics import evaluate, evaluate_all, evaluate_exact
from leo_verify.testing import mlp, networks

FAST = dict(points=1500, hypothesis_examples=40, gradient_steps=15, boundary_segments=40)


def _box(n, lo=-1.0, hi=1.0):
    return Box(np.full(n, lo), np.full(n, hi))


def _mutate_where_it_matters(f, box, delta):
    """A copy of ``f`` with one output-layer weight changed by ``delta``, on the
    unit of the last hidden layer most active at the box centre; the change then
    shows at the centre (or the output bias, for a net with no hidden layer)."""
    last = f.args(f.output_name)[0]
    while f.op(last).kind != "affine":
        last = f.args(last)[0]
    op = f.op(last)
    arg = f.args(last)[0]
    centre = (box.lower + box.upper) / 2
    act = evaluate_all(f, centre[None, :])[arg][0]
    g = f.copy()
    w, b = op.weight.copy(), op.bias.copy()
    k = int(np.argmax(act))
    if act[k] > 0.05:
        w[0, k] += delta
        expected = abs(delta) * act[k]
    else:
        b[0] += delta
        expected = abs(delta)
    g.replace(last, Affine(w, b))
    return g, centre, expected


# -- finds differences, reports 0 for copies ------------------------------------------

@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(networks(inputs=(1, 4), hidden=(2, 6), layers=(1, 2), outputs=(1, 3)))
def test_finds_a_difference_that_matters(f):
    box = _box(f.input_size)
    g, centre, at_centre = _mutate_where_it_matters(f, box, 0.25)
    r = falsify(f, g, box, seed=1, **FAST)
    assert r.found and r.max_diff > 0
    # at least what the centre shows (the campaign evaluates the centre)
    assert r.max_diff >= at_centre * (1 - 1e-9)
    # the reported point reproduces the reported difference, in float and exactly
    d = np.max(np.abs(evaluate(f, r.point) - evaluate(g, r.point)))
    assert d == pytest.approx(r.max_diff, rel=1e-12, abs=1e-15)
    ef, eg = evaluate_exact(f, r.point.tolist()), evaluate_exact(g, r.point.tolist())
    assert max(abs(a - b) for a, b in zip(ef, eg)) > 0
    assert box.contains(r.point)[0]
    # per-output maxima are consistent with the overall maximum
    assert max(r.per_output) == pytest.approx(r.max_diff)
    # nested in a hypothesis test: the hypothesis stage steps aside instead of failing
    assert r.stages["hypothesis"]["run"].startswith("skipped")


@settings(max_examples=10, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(networks(inputs=(1, 4), hidden=(1, 6), layers=(1, 3), outputs=(1, 3)))
def test_identical_copies_show_zero(f):
    r = falsify(f, f.copy(), _box(f.input_size), seed=0, **FAST)
    assert r.max_diff == 0.0 and not r.found
    assert r.per_output == [0.0] * f.output_size
    assert r.evaluated >= FAST["points"]


def test_deterministic_for_a_seed():
    f = mlp([np.array([[1.0, -2.0], [0.5, 1.5], [-1.0, 0.25]]), np.array([[1.0, -1.0, 2.0]])],
            [np.array([0.1, -0.2, 0.3]), np.array([0.0])])
    g = f.copy()
    g.replace("fc1", Affine(np.array([[1.0, -1.0, 2.1]]), np.array([0.0])))
    box = _box(2)
    a = falsify(f, g, box, seed=7, **FAST).to_json()
    b = falsify(f, g, box, seed=7, **FAST).to_json()
    a.pop("time"), b.pop("time")
    assert a == b
    assert a["stages"]["hypothesis"]["run"] == "ran"  # not inside a hypothesis test here
    c = falsify(f, g, box, seed=8, **FAST).to_json()
    c.pop("time")
    assert c["max_diff"] > 0


def test_needle_found_only_at_relu_boundaries_or_from_extra_points():
    """g - f is a hat of half-width 1e-7 around c: uniform sampling misses it,
    bisection to the hat's ReLU boundaries (or an extra point) finds it."""
    c, d, h = 0.3217, 1e-7, 1e3
    w = h / d  # peak h at c
    w1 = np.array([[1.0], [1.0], [1.0]])
    b1 = np.array([-(c - d), -c, -(c + d)])
    f = mlp([w1, np.zeros((1, 3))], [b1, np.zeros(1)], name="f")
    g = mlp([w1, np.array([[w, -2 * w, w]])], [b1, np.zeros(1)], name="g")
    box = Box([0.0], [1.0])
    off = dict(points=2000, hypothesis_examples=0, gradient_steps=0)
    blind = falsify(f, g, box, boundary_segments=0, **off)
    assert blind.max_diff < 1.0
    r = falsify(f, g, box, boundary_segments=50, **off)
    assert r.max_diff > 1.0 and abs(r.point[0] - c) < 2 * d
    assert r.stages["boundary"]["best"] > 1.0
    ex = falsify(f, g, box, boundary_segments=0, extra=[[c], [5.0]], **off)  # 5.0 is clipped
    assert ex.max_diff == pytest.approx(h, rel=1e-6)


def test_gradient_stage_climbs():
    """|f - g| = |relu(x0 + x1 - 1.9)| peaks only in a small corner: the gradient
    stage reaches its maximum 0.1 from a mediocre start."""
    f = mlp([np.array([[1.0, 1.0]]), np.array([[1.0]])], [np.array([-1.9]), np.zeros(1)])
    g = mlp([np.array([[1.0, 1.0]]), np.array([[0.0]])], [np.array([-1.9]), np.zeros(1)])
    box = Box([0.0, 0.0], [1.0, 1.0])
    r = falsify(f, g, box, points=0, hypothesis_examples=0, boundary_segments=0,
                gradient_steps=30, extra=[[0.96, 0.96]])
    assert r.stages["extra"]["best"] == pytest.approx(0.02)
    assert r.max_diff == pytest.approx(0.1)
    assert r.stages["gradient"]["best"] == pytest.approx(0.1)


def test_output_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    f = mlp([rng.normal(size=(6, 3)), rng.normal(size=(5, 6)), rng.normal(size=(2, 5))],
            [rng.normal(size=6), rng.normal(size=5), rng.normal(size=2)], residual=False)
    x = rng.uniform(-1, 1, size=(4, 3))
    seeds = rng.normal(size=(4, 2))
    y, grad = output_gradients(f, x, seeds)
    h = 1e-6
    for b in range(4):
        for i in range(3):
            e = np.zeros(3)
            e[i] = h
            num = (seeds[b] @ (evaluate(f, x[b] + e)[0] - evaluate(f, x[b] - e)[0])) / (2 * h)
            assert grad[b, i] == pytest.approx(num, rel=1e-5, abs=1e-6)
    assert np.allclose(y, evaluate(f, x))


# -- top-1 mode ------------------------------------------------------------------------

def _swap_rows(f, i, j):
    g = f.copy()
    last = f.args(f.output_name)[0]
    op = f.op(last)
    w, b = op.weight.copy(), op.bias.copy()
    w[[i, j]], b[[i, j]] = w[[j, i]], b[[j, i]]
    g.replace(last, Affine(w, b))
    return g


def test_top1_finds_a_swapped_class():
    rng = np.random.default_rng(5)
    f = mlp([rng.normal(size=(8, 3)), rng.normal(size=(4, 8))], [rng.normal(size=8), rng.normal(size=4)])
    box = _box(3)
    g = _swap_rows(f, 0, 2)
    r = falsify(f, g, box, mode="top1", seed=0, **FAST)
    assert r.found
    yf, yg = evaluate(f, r.point)[0], evaluate(g, r.point)[0]
    assert np.argmax(yf) != np.argmax(yg)
    assert r.max_diff == pytest.approx(np.max(yg) - yg[np.argmax(yf)])
    same = falsify(f, f.copy(), box, mode="top1", seed=0, **FAST)
    assert same.max_diff == 0.0 and not same.found
    # max mode sees the swap as a difference of outputs too
    assert falsify(f, g, box, **FAST).max_diff > 0


def test_score_definitions():
    yf = np.array([[1.0, 3.0, 2.0], [0.0, 0.0, 1.0]])
    yg = np.array([[1.0, 2.0, 4.0], [0.0, 0.0, 1.0]])
    assert np.allclose(score(yf, yg, "max"), [2.0, 0.0])
    assert np.allclose(score(yf, yg, "top1"), [2.0, 0.0])  # g_2 - g_{argmax f = 1}


# -- budget and errors ---------------------------------------------------------------------

def test_budget_stops_the_campaign():
    rng = np.random.default_rng(0)
    f = mlp([rng.normal(size=(20, 6)), rng.normal(size=(3, 20))], [rng.normal(size=20), rng.normal(size=3)])
    r = falsify(f, f.copy(), _box(6), budget=0.0)
    assert r.stopped == "budget"
    assert r.to_json()["stopped"] == "budget"


def test_size_mismatch_is_a_data_error():
    f = mlp([np.ones((2, 3)), np.ones((1, 2))], [np.zeros(2), np.zeros(1)])
    g = mlp([np.ones((2, 4)), np.ones((1, 2))], [np.zeros(2), np.zeros(1)])
    with pytest.raises(DataError, match=r"input sizes: 3 .* 4"):
        falsify(f, g, _box(3))
    h = mlp([np.ones((2, 3)), np.ones((2, 2))], [np.zeros(2), np.zeros(2)])
    with pytest.raises(DataError, match=r"output sizes: 1 .* 2"):
        falsify(f, h, _box(3))
