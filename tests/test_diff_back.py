"""Backward (CROWN-style) differential bounds: ``kernel.diff_back`` and its float mirror.

* the exact backward bounds contain every exactly evaluated value of ``f``, ``g``
  and ``f - g`` (hypothesis-drawn networks, pairs and boxes), and so does the
  float mirror the search steers by (up to float rounding);
* on a deep pair the backward bound is much tighter than the forward one, a
  one-leaf tree the forward bounds cannot prove re-checks through the backward
  bounds, and the same tree for a tolerance below the true difference fails;
* ``prove_leaves`` gives the same verdicts whether or not it tries the forward bounds first.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leo_verify.certify.equivalence.diff_float import FloatNets, float_back_bounds, float_bounds, rng_rows
from leo_verify.kernel import diff, diff_back, diff_tree
from leo_verify.kernel.exact import ProofInvalid, Q
from leo_verify.semantics import evaluate_exact
from leo_verify.testing import mlp

from test_diff import draw_pair, perturbed, probe_points


def _rows_at(rows: Q, x: list) -> list:
    """Each row ``[c | d]`` evaluated exactly at ``x``."""
    fr = rows.fractions()
    return [sum(c * Fraction(v) for c, v in zip(r[:-1], x)) + r[-1] for r in fr]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_backward_bounds_contain_every_value(data):
    f, g, box, al = draw_pair(data, hidden=6, layers=4)
    b = diff_back.back_bounds(al, Q.of(box.lower), Q.of(box.upper))
    fb = float_back_bounds(FloatNets(al), np.asarray(box.lower), np.asarray(box.upper))
    for x in probe_points(data, box, 4):
        xs = x.tolist()
        ef, eg = evaluate_exact(f, xs), evaluate_exact(g, xs)
        values = {"f": ef, "g": eg, "d": [a - c for a, c in zip(ef, eg)]}
        for key, val in values.items():
            low, up = _rows_at(b["L" + key], xs), _rows_at(b["U" + key], xs)
            for i, v in enumerate(val):
                assert low[i] <= v <= up[i], (key, i, float(v), float(low[i]), float(up[i]))
                fl = fb["L" + key][i, :-1] @ x + fb["L" + key][i, -1]
                fu = fb["U" + key][i, :-1] @ x + fb["U" + key][i, -1]
                tol = 1e-7 * (1 + abs(float(v)))
                assert fl - tol <= float(v) <= fu + tol, (key, i, float(v), fl, fu)


def deep_pair(depth: int = 6, width: int = 20, n_in: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    dims = [n_in] + [width] * depth + [3]
    ws = [(rng.normal(size=(dims[k + 1], dims[k])) / np.sqrt(dims[k])).astype(np.float32).astype(np.float64)
          for k in range(len(dims) - 1)]
    bs = [(0.1 * rng.normal(size=dims[k + 1])).astype(np.float32).astype(np.float64) for k in range(len(dims) - 1)]
    f = mlp(ws, bs, name="deep")
    return f, perturbed(f, 1e-3, seed + 1)


def _max_abs(b: dict) -> float:
    top = diff._range(b["Ud"], b["box"], upper=True).floats()
    bot = diff._range(b["Ld"], b["box"], upper=False).floats()
    return float(max(top.max(), -bot.min()))


def test_backward_beats_forward_on_a_deep_pair_and_its_leaf_rechecks():
    f, g = deep_pair()
    al = diff.align(f, g)
    lo, hi = [Fraction(-1)] * 4, [Fraction(1)] * 4
    fwd = _max_abs(diff.propagate(al, Q.of(lo), Q.of(hi)))
    back = _max_abs(diff_back.back_bounds(al, Q.of(lo), Q.of(hi)))
    assert back < fwd / 4, (back, fwd)
    # the float mirror the search steers by tells the same story
    nets = FloatNets(al)
    l_, h_ = np.full(4, -1.0), np.ones(4)
    fb, ff = float_back_bounds(nets, l_, h_), float_bounds(nets, l_, h_)
    f_back = max(rng_rows(fb["Ud"], l_, h_, True).max(), -rng_rows(fb["Ld"], l_, h_, False).min())
    f_fwd = max(rng_rows(ff["Ud"], l_, h_, True).max(), -rng_rows(ff["Ld"], l_, h_, False).min())
    assert f_back < f_fwd / 4 and abs(f_back - back) < 0.2 * back, (f_back, back, f_fwd)
    # a single leaf at an epsilon between the two bounds: only the backward bounds prove it
    eps = Fraction((back + fwd) / 2)
    assert not diff.leaf_proves(diff.propagate(al, Q.of(lo), Q.of(hi)), "epsilon", eps)
    assert diff_tree.check_tree(al, lo, hi, {}, "epsilon", eps) == 1
    # below the true difference no tree can prove the claim: the one-leaf tree fails
    xs = np.random.default_rng(0).uniform(-1, 1, size=(64, 4))
    true_max = max(abs(a - c) for x in xs
                   for a, c in zip(evaluate_exact(f, x.tolist()), evaluate_exact(g, x.tolist())))
    with pytest.raises(ProofInvalid, match="does not prove"):
        diff_tree.check_tree(al, lo, hi, {}, "epsilon", true_max / 2)


def test_prove_leaves_same_verdicts_with_and_without_the_forward_bounds():
    f, g = deep_pair(depth=3, width=8, seed=4)
    al = diff.align(f, g)
    rng = np.random.default_rng(1)
    boxes_ = []
    for _ in range(6):
        c = rng.uniform(-1, 1, 4)
        r = rng.choice([0.01, 0.1, 0.5])
        boxes_.append(([Fraction(float(v - r)) for v in c], [Fraction(float(v + r)) for v in c]))
    eps = Fraction(8, 10000)  # between the forward and backward bounds of some boxes, below both of one
    both = diff_tree.prove_leaves(al, boxes_, "epsilon", eps)
    back_only = diff_tree.prove_leaves(al, boxes_, "epsilon", eps, forward=[False] * len(boxes_))
    fwd_only = [diff.leaf_proves(diff.propagate(al, Q.of(lo), Q.of(hi)), "epsilon", eps) for lo, hi in boxes_]
    # both kinds of bounds are sound: a leaf either proves is proven; the backward ones decide alone
    assert both == [a or b for a, b in zip(fwd_only, back_only)]
    assert any(both) and not all(both), both
    assert any(b and not f_ for b, f_ in zip(back_only, fwd_only)), (back_only, fwd_only)


def test_a_certificate_that_needs_the_backward_bounds_survives_no_mutation(tmp_path, capsys):
    """``check -o`` on a deep pair at an epsilon only the backward bounds reach: recheck says
    EQUIVALENT; a lower epsilon (stated consistently) and 120 random edits do not pass unless
    the meaning is unchanged."""
    import json

    from leo_verify import cli
    from leo_verify.io.onnx.writer import save_onnx
    from test_diff import _verdict, _write, mutate_randomly
    f, g = deep_pair()
    al = diff.align(f, g)
    lo, hi = [Fraction(-1)] * 4, [Fraction(1)] * 4
    fwd = _max_abs(diff.propagate(al, Q.of(lo), Q.of(hi)))
    back = _max_abs(diff_back.back_bounds(al, Q.of(lo), Q.of(hi)))
    eps = float((back + fwd) / 2)
    fa, fb = str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx")
    save_onnx(f, fa, dtype="float64")
    save_onnx(g, fb, dtype="float64")
    res = str(tmp_path / "r.json")
    assert cli.main(["check", fa, fb, "--domain", "box:-1,1", "--epsilon", repr(eps), "-o", res,
                     "--no-progress", "--workers", "1"]) == 0, capsys.readouterr().out
    doc = json.loads(open(res).read())
    assert _verdict(res) == "equivalent"
    tree = doc["certificate"]["regions"][0]["tree"]
    # the forward bounds alone do not prove every leaf of this tree
    with pytest.raises(ProofInvalid):
        _forward_only_check(al, lo, hi, tree, Fraction(doc["certificate"]["epsilon"]))
    # a smaller epsilon, stated the same in RESULT.json and the certificate: the leaves fail
    low = json.loads(json.dumps(doc))
    low["epsilon"] = back / 4
    low["certificate"]["epsilon"] = str(Fraction(back / 4))
    path = str(tmp_path / "low.json")
    _write(path, low)
    assert _verdict(path) != "equivalent"
    for bad in mutate_randomly(doc, tmp_path, 120, 7):
        reg = bad["certificate"]["regions"][0]
        assert Fraction(bad["certificate"]["epsilon"]) == Fraction(doc["epsilon"])
        assert [Fraction(v) for v in reg["lower"]] == lo and [Fraction(v) for v in reg["upper"]] == hi
        assert diff_tree.check_tree(al, lo, hi, reg["tree"], "epsilon", Fraction(doc["epsilon"])) >= 1


def _forward_only_check(al, lo, hi, tree, eps):
    """Every leaf of ``tree`` by the forward bounds alone (raises at the first that fails)."""
    stack = [(tree, list(lo), list(hi))]
    while stack:
        node, a, b = stack.pop()
        if not node:
            if not diff.leaf_proves(diff.propagate(al, Q.of(a), Q.of(b)), "epsilon", eps):
                raise ProofInvalid("a leaf the forward bounds do not prove")
            continue
        dim, at = node["dim"], Fraction(node["at"])
        left_hi, right_lo = list(b), list(a)
        left_hi[dim] = at
        right_lo[dim] = at
        stack += [(node["children"][0], a, left_hi), (node["children"][1], right_lo, b)]
