"""The block-floating exact kernels of exact CROWN (kernel/blockfloat.py) against Python ints,
and batched exact CROWN against one box at a time."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leo_verify.graph import Affine
from leo_verify.kernel.blockfloat import PA, floor_shift, limbs, plan, rowdot_exact
from leo_verify.analysis.bounds import compute_bounds
from leo_verify.domain import Box
from leo_verify.kernel.crown import crown_bounds, crown_bounds_many, preactivations
from leo_verify.semantics import evaluate_exact_all
from leo_verify.testing import boxes, networks

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _value(parts, bits, i, j):
    return sum(int(p[i, j]) << (bits * k) for k, p in enumerate(parts))


@st.composite
def _parts(draw, *, wide: bool):
    k = draw(st.integers(3, 6) if wide else st.integers(1, 6))
    bits = draw(st.integers(-(-63 // (k - 1)), 46) if wide else st.integers(1, 62 // max(1, k - 1)))
    r, n = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    mag = draw(st.integers(0, 52))
    vals = st.integers(-(1 << mag), (1 << mag) - 1) | st.sampled_from([0, 1, -1, (1 << mag) - 1, -(1 << mag)])
    parts = [np.array(draw(st.lists(vals, min_size=r * n, max_size=r * n)), dtype=np.int64).reshape(r, n)
             for _ in range(k)]
    return parts, bits, draw(st.integers(16, min(PA, 62 - bits) if wide else PA))


def _check_floor(parts, bits, pa, *, tight=True):
    m, s, rest, base = floor_shift(parts, bits, pa)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = _value(parts, bits, i, j)
            assert int(m[i, j]) == v >> int(s[i])  # the floor of V / 2^s
            assert abs(int(m[i, j])) <= 1 << (pa - 1)
            assert all(int(d[i, j]) >= 0 for d in rest)
            assert v - (int(m[i, j]) << int(s[i])) == _value(rest, base, i, j)
        # the shift is not wasteful: a few bits less would not fit (or no shift at all)
        top = max(abs(_value(parts, bits, i, j)) for j in range(m.shape[1]))
        assert not tight or int(s[i]) == 0 or top << 4 >= 1 << (pa - 1 + int(s[i]))


@given(_parts(wide=False))
@SETTINGS
def test_floor_shift_is_the_exact_floor_with_nonnegative_rest(case):
    _check_floor(*case)


@given(_parts(wide=True))
@SETTINGS
def test_floor_shift_wide_digits_are_exact_too(case):
    _check_floor(*case, tight=False)  # its bound sums |parts|: looser under cancellation


@given(st.integers(1, 3), st.integers(1, 70) | st.sampled_from([784, 3000]), st.integers(0, 2 ** 32),
       st.sampled_from([8, 38, 61]))
@SETTINGS
def test_dot_products_are_exact(r, n, seed, mbits):
    # any int64 mantissas (wider ones than the plan are cut into chunks), any inner dimension
    import random
    rnd = random.Random(seed)
    m = np.array([[rnd.randint(-(1 << mbits), 1 << mbits) for _ in range(n)] for _ in range(r)], dtype=np.int64)
    m[0, 0] = rnd.choice([1 << mbits, -(1 << mbits)])  # the extremes too
    vbits = rnd.choice([3, 60, 200])
    vs = np.array([[rnd.randint(-(1 << vbits), 1 << vbits) for _ in range(n)] for _ in range(2)], dtype=object)
    want = [[sum(int(m[i, j]) * int(vs[w, j]) for j in range(n)) for i in range(r)] for w in (0, 1)]
    _, bits = plan(n)
    # one vector for every row (the bias product of an affine step)
    assert list(rowdot_exact(m, limbs(vs[:1], bits), np.zeros(r, dtype=np.int64), bits)) == want[0]
    which = np.array([rnd.randint(0, 1) for _ in range(r)], dtype=np.int64)
    got = rowdot_exact(m, limbs(vs, bits), which, bits)
    assert list(got) == [want[which[i]][i] for i in range(r)]


def test_wide_limbs_with_long_mantissas_are_refused():
    with pytest.raises(ValueError, match="overflow"):
        floor_shift([np.zeros((1, 1), dtype=np.int64)] * 4, 31, 36)


def test_plan_keeps_partial_sums_below_2_to_the_53():
    for n in (1, 2, 50, 784, 3072, 1 << 20):
        pa, bits = plan(n)
        assert n * (1 << (pa - 1)) * ((1 << bits) - 1) < 1 << 53 and bits >= 8
    with pytest.raises(ValueError):
        plan(1 << 40)


# -- batched exact CROWN ---------------------------------------------------------------------
@given(networks(inputs=(1, 3), hidden=(1, 4), layers=(1, 3)), st.data())
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_a_batch_row_is_exactly_its_box_alone(net, data):
    bs = [data.draw(boxes(net.input_size)).exact_bounds() for _ in range(data.draw(st.integers(1, 4)))]
    many = crown_bounds_many(net, bs)
    for p, box in enumerate(bs):
        one = crown_bounds(net, box)
        for node, (lo, hi) in one.items():
            assert many[node][0][p] == lo and many[node][1][p] == hi, node


def test_non_dyadic_weights_are_bounded_soundly():
    # exact weights with denominators 3, 7 and 9: the odd denominator is carried, not rounded
    rng = np.random.default_rng(5)
    from leo_verify.testing import mlp
    ws = [rng.normal(size=(4, 3)), rng.normal(size=(4, 4)), rng.normal(size=(2, 4))]
    bs = [rng.normal(size=4), rng.normal(size=4), rng.normal(size=2)]
    net = mlp(ws, bs, residual=True)
    for name, den in (("fc0", 3), ("fc1", 7), ("fc2", 9)):
        op = net.op(name)
        w = np.array([[Fraction(float(x)) / den for x in row] for row in op.weight], dtype=object)
        b = np.array([Fraction(float(x)) / den for x in op.bias], dtype=object)
        net.replace(name, Affine(op.weight / den, op.bias / den, exact=(w, b)))
    lo, hi = [Fraction(-1)] * 3, [Fraction(1)] * 3
    bounds = crown_bounds(net, (lo, hi))
    # as tight as float CROWN on the (rounded) float weights: a scaling error shows here
    fl = compute_bounds(net, Box(np.full(3, -1.0), np.ones(3)))
    deep = [p for p in preactivations(net) if net.args(p)[0] != net.input_name]
    assert deep
    for p in deep:
        for got, want in ((bounds[p][0].floats(), fl[p][0]), (bounds[p][1].floats(), fl[p][1])):
            assert np.all(np.abs(got - want) <= 1e-6 * (1 + np.abs(want))), p
    for x in rng.uniform(-1, 1, size=(300, 3)):
        vals = evaluate_exact_all(net, x)
        for node, (blo, bhi) in bounds.items():
            for i, v in enumerate(np.atleast_1d(vals[node])):
                assert blo.fraction(i) <= v <= bhi.fraction(i), node


# -- each back-substitution step is a valid inequality, exactly ------------------------------
def _frac_rows(x):
    return [[Fraction(int(v)) * Fraction(2) ** int(x.e[i]) / x.g for v in x.m[i]] for i in range(len(x.e))]


def _state(n_h: int, up, data):
    """A back-substitution state over a node ``h`` with random (2-D, one piece) bounds."""
    from leo_verify.kernel import crown
    from leo_verify.kernel.exact import Q
    from leo_verify.testing import mlp
    net = mlp([np.ones((n_h, 1))], [np.zeros(n_h)])
    ends = [sorted(data.draw(st.lists(st.integers(-2 ** 60, 2 ** 60), min_size=2, max_size=2)))
            for _ in range(n_h)]
    lo = Q(np.array([[a for a, _ in ends]], dtype=object), 1 << 48)
    hi = Q(np.array([[b for _, b in ends]], dtype=object), 1 << 48)
    st_ = crown._Back(net, {"h": (lo, hi)}, net.nodes()[1], np.zeros(len(up), dtype=np.int64),
                      np.zeros(len(up), dtype=np.int64), np.asarray(up), crown._Memo())
    return st_, [Fraction(int(v), 1 << 48) for v in lo.num[0]], [Fraction(int(v), 1 << 48) for v in hi.num[0]]


def _assert_step_valid(st_, before: list, after: list, const0: list, lo, hi, extra=None):
    """``before . h (+ extra) <= after . h + (const - const0)`` on the box for upper rows (>= for
    lower ones): the worst vertex, exactly."""
    for i, up in enumerate(st_.up):
        d = [b - a for b, a in zip(before[i], after[i])]
        worst = sum(max(x * lo[j], x * hi[j]) if up else min(x * lo[j], x * hi[j]) for j, x in enumerate(d))
        worst += extra[i] if extra is not None else 0
        slack = Fraction(int(st_.const[i]) - const0[i], 1 << 48)
        assert (worst <= slack) if up else (worst >= slack), (i, up, float(worst), float(slack))


_mant = st.integers(-(1 << (PA - 1)), 1 << (PA - 1)) | st.integers(-5, 5)


@st.composite
def _rows(draw, r, n, g=1):
    from leo_verify.kernel.crown import _Rows
    m = np.array(draw(st.lists(_mant, min_size=r * n, max_size=r * n)), dtype=np.int64).reshape(r, n)
    e = np.array(draw(st.lists(st.integers(-120, 40), min_size=r, max_size=r)), dtype=np.int64)
    return _Rows(m, e, g)


@given(st.integers(1, 3), st.integers(1, 4), st.data())
@SETTINGS
def test_sum_of_two_paths_is_a_valid_bound(r, n, data):
    up = data.draw(st.lists(st.booleans(), min_size=r, max_size=r))
    st_, lo, hi = _state(n, up, data)
    ga, gb = data.draw(st.sampled_from([1, 3, 7])), data.draw(st.sampled_from([1, 5, 21]))
    a, b = data.draw(_rows(r, n, ga)), data.draw(_rows(r, n, gb))
    c = st_._sum("h", a, b)
    assert np.all(np.abs(c.m) <= 1 << (PA - 1))
    total = [[x + y for x, y in zip(ra, rb)] for ra, rb in zip(_frac_rows(a), _frac_rows(b))]
    _assert_step_valid(st_, total, _frac_rows(c), [0] * r, lo, hi)


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.data())
@SETTINGS
def test_affine_step_is_a_valid_bound(r, n_z, n_h, data):
    from leo_verify.kernel import crown
    up = data.draw(st.lists(st.booleans(), min_size=r, max_size=r))
    st_, lo, hi = _state(n_h, up, data)
    den = data.draw(st.sampled_from([1, 3, 1 << 20, 9 << 30]))
    w = np.array(data.draw(st.lists(st.integers(-2 ** 45, 2 ** 45), min_size=n_z * n_h, max_size=n_z * n_h)),
                 dtype=np.int64).reshape(n_z, n_h)
    bias = np.array(data.draw(st.lists(st.integers(-2 ** 45, 2 ** 45), min_size=n_z, max_size=n_z)),
                    dtype=np.int64)
    wq = np.array([[Fraction(int(v), den) for v in row] for row in w], dtype=object)
    bq = np.array([Fraction(int(v), den) for v in bias], dtype=object)
    op = Affine(wq.astype(float), bq.astype(float), exact=(wq, bq))
    a = data.draw(_rows(r, n_z))
    st_.graph = _one_affine(op, n_h)
    crown._back_affine(st_, op, "z", a)
    c = st_.coef["h"]
    aw = [[sum(x * wq[k, j] for k, x in enumerate(row)) for j in range(n_h)] for row in _frac_rows(a)]
    ab = [sum(x * bq[k] for k, x in enumerate(row)) for row in _frac_rows(a)]
    _assert_step_valid(st_, aw, _frac_rows(c), [0] * r, lo, hi, extra=ab)


def _one_affine(op, n_h):
    from leo_verify.graph import Graph, Input, Output
    g = Graph(name="one")
    g.add("h", Input(n_h))
    g.add("z", op, ["h"])
    g.add("y", Output(op.size), ["z"])
    return g


@given(st.integers(1, 3), st.integers(1, 4), st.data())
@SETTINGS
def test_relu_step_is_a_valid_bound(r, n, data):
    from leo_verify.graph import Graph, Input, Output, Relu
    from leo_verify.kernel import crown
    up = data.draw(st.lists(st.booleans(), min_size=r, max_size=r))
    st_, lo, hi = _state(n, up, data)
    g = Graph(name="one")
    g.add("h", Input(n))
    g.add("y", Relu(tuple(f"y[{i}]" for i in range(n))), ["h"])
    g.add("out", Output(n), ["y"])
    st_.graph = g
    a = data.draw(_rows(r, n))
    crown._back_relu(st_, g.op("y"), "y", a)
    c = _frac_rows(st_.coef["h"])
    # a . relu(h) <= c . h + const (upper rows; >= for lower): separable, piecewise linear in
    # each h_j, so the extremes are at l_j, u_j or 0
    for i, row in enumerate(_frac_rows(a)):
        total = 0
        for j, x in enumerate(row):
            vals = [x * max(v, 0) - c[i][j] * v for v in (lo[j], hi[j]) + ((0,) if lo[j] < 0 < hi[j] else ())]
            total += max(vals) if up[i] else min(vals)
        slack = Fraction(int(st_.const[i]), 1 << 48)
        assert (total <= slack) if up[i] else (total >= slack)
