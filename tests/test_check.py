"""Equivalence checking of two networks (certify/equivalence.py), `leo-verify check`
and `leo_verify.testing.assert_equivalent`.

Every counterexample a test sees is re-checked here independently (exact
evaluation of both nets at the reported exact point); every "equivalent" on a
pair that is equal by construction is matched by a "counterexample" on a pair
that is not, so a checker answering constantly fails.
"""
from __future__ import annotations

import copy
import os
import json
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leo_verify import cli
from leo_verify.certify import equivalence as eq
from leo_verify.certify.equivalence import CheckResult, check_equivalence, joint_graph, replay
from leo_verify.domain import Box, parse_domain
from leo_verify.errors import DataError, UsageError
from leo_verify.graph import Affine
from leo_verify.semantics import evaluate, evaluate_all, evaluate_exact
from leo_verify.testing import assert_equivalent, mlp, networks

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "benchmarks" / "acasxu"
ACAS_1_1 = BENCH / "ACASXU_run2a_1_1_batch_2000.onnx"
PROP_1 = BENCH / "prop_1.vnnlib"
needs_bench = pytest.mark.skipif(not (ACAS_1_1.exists() and PROP_1.exists()),
                                 reason="shared benchmarks not available")

FAST_FUZZ = dict(points=1000, hypothesis_examples=30, gradient_steps=10, boundary_segments=20)


# -- networks -----------------------------------------------------------------------

def random_net(sizes, seed, *, name="net"):
    rng = np.random.default_rng(seed)
    ws = [rng.normal(size=(b, a)).astype(np.float32).astype(np.float64)
          for a, b in zip(sizes, sizes[1:])]
    bs = [(0.3 * rng.normal(size=b)).astype(np.float32).astype(np.float64) for b in sizes[1:]]
    return mlp(ws, bs, name=name)


def scaled_copy(f, k=0):
    """Exactly the same function: hidden unit k of fc0 scaled by 2 (row and
    bias), its outgoing column by 1/2.  Nothing after fc0 is shared with f."""
    g = f.copy()
    a, b = f.op("fc0"), f.op("fc1")
    w, bias = a.weight.copy(), a.bias.copy()
    w[k] *= 2
    bias[k] *= 2
    g.replace("fc0", Affine(w, bias))
    w1 = b.weight.copy()
    w1[:, k] /= 2
    g.replace("fc1", Affine(w1, b.bias))
    return g


def last_affine(f):
    node = f.args(f.output_name)[0]
    while f.op(node).kind != "affine":
        node = f.args(node)[0]
    return node


def mutated(f, box, delta, *, row=0):
    """f with one output-layer weight changed by delta, on the hidden unit most
    active at the box centre (so the change shows there)."""
    node = last_affine(f)
    op = f.op(node)
    act = evaluate_all(f, ((box.lower + box.upper) / 2)[None, :])[f.args(node)[0]][0]
    k = int(np.argmax(act))
    assert act[k] > 0
    w = op.weight.copy()
    w[row, k] += delta
    g = f.copy()
    g.replace(node, Affine(w, op.bias))
    return g


def swapped_rows(f, i, j):
    node = last_affine(f)
    op = f.op(node)
    w, b = op.weight.copy(), op.bias.copy()
    w[[i, j]], b[[i, j]] = w[[j, i]], b[[j, i]]
    g = f.copy()
    g.replace(node, Affine(w, b))
    return g


def unit_box(n):
    return Box(np.zeros(n), np.ones(n))


def verify_cex(f, g, box, res, *, mode="epsilon", epsilon=1e-6):
    """Independent replay of a reported counterexample."""
    assert res.verdict == "counterexample", res.reason
    assert res.proof == "replayed"
    cex = res.counterexample
    q = [Fraction(s) for s in cex["point_exact"]]
    assert all(lo <= v <= hi for v, lo, hi in zip(q, *box.exact_bounds()))
    assert [float(v) for v in q] == cex["point"]
    ef, eg = evaluate_exact(f, q), evaluate_exact(g, q)
    assert [f"{v.numerator}/{v.denominator}" for v in ef] == cex["f_exact"]
    assert [f"{v.numerator}/{v.denominator}" for v in eg] == cex["g_exact"]
    d = max(abs(a - b) for a, b in zip(ef, eg))
    assert Fraction(cex["difference_exact"]) == d
    if mode == "epsilon":
        assert d > Fraction(epsilon)
    elif mode == "exact":
        assert d != 0
    else:
        top = lambda v: max(range(len(v)), key=lambda i: (v[i], -i))  # first argmax
        assert top(ef) != top(eg)
        assert (cex["argmax_f"], cex["argmax_g"]) == (top(ef), top(eg))
    json.dumps(res.to_json(), allow_nan=False)
    return cex


# -- equivalent pairs ------------------------------------------------------------------

def test_net_vs_itself():
    f = random_net([3, 6, 6, 2], 0)
    box = unit_box(3)
    # shared computations: the bounds of f - f are 0 up to rounding
    # the differential bounds prove it exactly, with a certificate the kernel re-checks
    r = check_equivalence(f, f.copy(), box, fuzz_options=FAST_FUZZ, provers=[])
    assert (r.verdict, r.method, r.proof) == ("equivalent", "diff", "exact")
    assert r.certificate is not None and r.certificate["regions"][0]["method"] == "diff-tree"
    # the sound float bounds of f - f are 0 up to rounding: a hint, never a verdict
    r = check_equivalence(f, f.copy(), box, fuzz_options=FAST_FUZZ, provers=[], methods=("fuzz", "bounds"))
    assert r.verdict == "unknown" and "not an exact proof" in r.reason
    assert r.best_bound is not None and r.best_bound <= 1e-6
    # two independent copies: the joint MILP's float answer is not a verdict either
    r = check_equivalence(f, f.copy(), box, methods=("milp",), share=False, time_limit=60)
    assert r.verdict == "unknown" and "float proof only (milp-float" in r.stages[0]["outcome"], r.reason
    # exactly, by z3: an exact proof, but no certificate the kernel re-checks, so UNKNOWN by
    # default, with the proof in the reason; EQUIVALENT when the caller accepts uncertified proofs
    r = check_equivalence(f, f.copy(), box, mode="exact", methods=("z3",), share=False)
    assert (r.verdict, r.method, r.certificate) == ("unknown", None, None), r.reason
    assert r.reason.startswith("z3 proved the claim in exact arithmetic") and "accept_uncertified" in r.reason
    r = check_equivalence(f, f.copy(), box, mode="exact", methods=("z3",), share=False, accept_uncertified=True)
    assert (r.verdict, r.method, r.proof) == ("equivalent", "z3", "exact"), r.reason
    json.dumps(r.to_json(), allow_nan=False)


@pytest.mark.parametrize("solver,epsilon", [("scip", 1e-6), ("highs", 1e-4)])
def test_milp_on_independent_copies(solver, epsilon):
    # HiGHS' feasibility tolerances let it report max |f - g| = 1e-6 on identical
    # copies: at epsilon 1e-6 it stays unknown, so it is tested at 1e-4
    f = random_net([3, 6, 6, 2], 0)
    box = unit_box(3)
    r = check_equivalence(f, f.copy(), box, methods=("milp",), share=False, solver=solver,
                          epsilon=epsilon)
    assert r.verdict == "unknown" and "float proof only (milp-float" in r.stages[0]["outcome"], r.reason
    r = check_equivalence(f, mutated(f, box, 0.05), box, methods=("milp",), solver=solver,
                          epsilon=epsilon)
    assert r.method == "milp"
    verify_cex(f, mutated(f, box, 0.05), box, r, epsilon=epsilon)


def test_top1_milp_proves_separated_classes():
    """Class 0 wins everywhere by a wide margin: for class 0 every rival is
    below by more than the margin, for the others f's top region is empty."""
    f = random_net([3, 6, 3], 12)
    op = f.op("fc1")
    f.replace("fc1", Affine(op.weight, op.bias + np.array([100.0, 0.0, 0.0])))
    g = scaled_copy(f, k=2)
    r = check_equivalence(f, g, unit_box(3), mode="top1", methods=("milp",))
    assert r.verdict == "unknown" and "float proof only (milp-float" in r.stages[0]["outcome"], r.reason
    # the differential prover separates the classes exactly
    r = check_equivalence(f, g, unit_box(3), mode="top1", methods=("diff",))
    assert (r.verdict, r.method, r.proof) == ("equivalent", "diff", "exact"), r.reason


def test_exact_rational_weights_are_used():
    """f has the exact weight 1/3, g its float64 rounding: equal in floats,
    different over the reals."""
    f = mlp([np.array([[1.0]]), np.array([[1.0]])], [np.zeros(1), np.zeros(1)], name="f")
    f.replace("fc0", Affine.from_rational([[Fraction(1, 3)]], [Fraction(0)]))
    g = mlp([np.array([[1 / 3]]), np.array([[1.0]])], [np.zeros(1), np.zeros(1)], name="g")
    box = Box([0.0], [1.0])
    assert np.array_equal(evaluate(f, [[0.25], [1.0]]), evaluate(g, [[0.25], [1.0]]))
    r = check_equivalence(f, g, box, mode="exact", fuzz_options=FAST_FUZZ, provers=[])
    assert r.method == "z3"
    cex = verify_cex(f, g, box, r, mode="exact")
    assert Fraction(cex["difference_exact"]) == abs(Fraction(1, 3) - Fraction(1 / 3)) \
        * Fraction(cex["point_exact"][0])
    r = check_equivalence(f, g, box, epsilon=1e-12, fuzz_options=FAST_FUZZ, accept_uncertified=True)
    assert r.verdict == "equivalent", r.reason


def test_equal_function_different_structure():
    f = random_net([2, 5, 4, 2], 1)
    g = scaled_copy(f, k=1)
    box = unit_box(2)
    r = check_equivalence(f, g, box, methods=("milp",), time_limit=60)
    assert r.verdict == "unknown" and "float proof only (milp-float" in r.stages[0]["outcome"], r.reason
    assert r.best_bound is not None and r.best_bound <= 1e-6
    r = check_equivalence(f, g, box, mode="exact", time_limit=60, fuzz_options=FAST_FUZZ,
                          accept_uncertified=True)
    assert (r.verdict, r.method, r.proof) == ("equivalent", "z3", "exact"), r.reason
    r = check_equivalence(f, g, box, mode="top1", methods=("z3",), time_limit=60, accept_uncertified=True)
    assert (r.verdict, r.method, r.proof) == ("equivalent", "z3", "exact"), r.reason


def test_joint_graph_shares_what_is_equal():
    f = random_net([3, 6, 6, 2], 2)
    box = unit_box(3)
    j, fo, go = joint_graph(f, f.copy(), box)
    # one ReLU per unit of f left unstable by sound bounds; none for g
    n_f = len(j.neurons())
    assert fo == go and 0 < n_f <= len(f.neurons())
    assert all(n.startswith("f:") for n in j.neurons())
    k = next(int(n[len("f:relu0["):-1]) for n in j.neurons() if n.startswith("f:relu0["))
    g = scaled_copy(f, k=k)  # an unstable unit: scaling it changes the structure after it
    j, fo, go = joint_graph(f, g, box)
    assert fo != go
    # g adds at most its scaled unit and its 6 second-layer units: the other
    # first-layer units are shared with f
    extra = [n for n in j.neurons() if n.startswith("g:")]
    assert 0 < len(extra) <= 1 + 6 and len(j.neurons()) == n_f + len(extra)
    assert [n for n in extra if n.startswith("g:relu0[")] == [f"g:relu0[{k}]"]
    x = np.random.default_rng(0).uniform(0, 1, size=(50, 3))
    assert np.allclose(evaluate(j, x), evaluate(f, x) - evaluate(g, x), atol=1e-12)


# -- counterexamples ------------------------------------------------------------------------

@pytest.mark.parametrize("mode,methods", [
    ("epsilon", ("fuzz",)), ("epsilon", ("milp",)),
    ("exact", ("z3",)), ("exact", ("milp",)), ("epsilon", ("z3",)),
])
def test_each_prover_finds_a_replayed_counterexample(mode, methods):
    f = random_net([3, 6, 5, 2], 3)
    box = unit_box(3)
    g = mutated(f, box, 0.05)
    r = check_equivalence(f, g, box, mode=mode, methods=methods, time_limit=60,
                          fuzz_options=FAST_FUZZ)
    assert r.method == methods[0]
    verify_cex(f, g, box, r, mode=mode)


def test_top1_swapped_rows():
    f = random_net([3, 8, 4], 4)
    box = unit_box(3)
    top = int(np.argmax(evaluate(f, [0.5, 0.5, 0.5])[0]))
    g = swapped_rows(f, top, (top + 1) % 4)  # f's top class at the centre is swapped
    for methods in (("fuzz",), ("z3",), ("milp",)):
        r = check_equivalence(f, g, box, mode="top1", methods=methods, time_limit=60,
                              fuzz_options=FAST_FUZZ)
        assert r.method == methods[0]
        verify_cex(f, g, box, r, mode="top1")
    r = check_equivalence(f, f.copy(), box, mode="top1", time_limit=60, fuzz_options=FAST_FUZZ)
    assert (r.verdict, r.proof) == ("equivalent", "exact"), r.reason


def test_top1_ties_take_the_first_index():
    """f's outputs are (x, x): always tied, argmax 0.  g = (x, x + relu(x - 0.5)):
    argmax 1 exactly where x > 0.5.  Over [0, 0.5] they agree (g ties at 0.5,
    first index 0); over [0, 1] they do not."""
    w1 = np.array([[1.0], [1.0]])
    f = mlp([w1, np.array([[1.0, 0.0], [1.0, 0.0]])], [np.array([0.0, -0.5]), np.zeros(2)])
    g = mlp([w1, np.array([[1.0, 0.0], [1.0, 1.0]])], [np.array([0.0, -0.5]), np.zeros(2)])
    r = check_equivalence(f, g, Box([0.0], [0.5]), mode="top1", time_limit=60,
                          fuzz_options=FAST_FUZZ, provers=[], methods=("fuzz", "z3"), accept_uncertified=True)
    assert (r.verdict, r.method) == ("equivalent", "z3"), r.reason
    # the differential bounds: relu(x - 0.5) is inactive on [0, 0.5], so f - g is exactly 0 there
    r = check_equivalence(f, g, Box([0.0], [0.5]), mode="top1", time_limit=60, fuzz_options=FAST_FUZZ)
    assert (r.verdict, r.method, r.proof) == ("equivalent", "diff", "exact"), r.reason
    # the structural prover sees it too: relu(x - 0.5) is proven inactive on [0, 0.5]
    r = check_equivalence(f, g, Box([0.0], [0.5]), mode="top1", time_limit=60,
                          fuzz_options=FAST_FUZZ, methods=("fuzz", "structural"), accept_uncertified=True)
    assert (r.verdict, r.method, r.proof) == ("equivalent", "structural", "exact"), r.reason
    r = check_equivalence(f, g, Box([0.0], [1.0]), mode="top1", time_limit=60,
                          fuzz_options=FAST_FUZZ)
    cex = verify_cex(f, g, Box([0.0], [1.0]), r, mode="top1")
    assert cex["point"][0] > 0.5 and (cex["argmax_f"], cex["argmax_g"]) == (0, 1)


def test_epsilon_is_respected():
    f = random_net([2, 5, 2], 5)
    box = unit_box(2)
    g = f.copy()
    op = f.op("fc1")
    g.replace("fc1", Affine(op.weight, op.bias + np.array([1e-3, 0.0])))  # |f - g| = 1e-3 exactly-ish
    r = check_equivalence(f, g, box, epsilon=1e-2, time_limit=30, fuzz_options=FAST_FUZZ)
    assert r.verdict == "equivalent", r.reason
    assert r.max_diff_seen == pytest.approx(1e-3, rel=1e-6)
    r = check_equivalence(f, g, box, epsilon=1e-4, time_limit=30, fuzz_options=FAST_FUZZ)
    verify_cex(f, g, box, r, epsilon=1e-4)


@needs_bench
def test_acas_one_weight_changed_by_1e_3():
    """A real benchmark net: one weight changed by 1e-3 where it matters
    (the most active last hidden unit at the centre of prop_1's box)."""
    from leo_verify.io import load
    f = load(str(ACAS_1_1))
    box = parse_domain(str(PROP_1), n=5)
    g = mutated(f, box, 1e-3, row=2)
    start = time.monotonic()
    r = check_equivalence(f, g, box, time_limit=60)
    elapsed = time.monotonic() - start
    assert elapsed <= 60
    verify_cex(f, g, box, r)
    assert r.counterexample["output"] == 2


# -- the replay guard and the hook provers ------------------------------------------------------

def test_fake_prover_with_bogus_counterexample_is_rejected():
    f = random_net([3, 6, 2], 6)
    box = unit_box(3)
    seen = {}

    def bogus(f_, g_, box_, mode, epsilon, deadline):
        seen.update(mode=mode, epsilon=epsilon, left=deadline - time.monotonic())
        return CheckResult("counterexample", counterexample={"point": [0.5, 0.5, 0.5]})

    r = check_equivalence(f, f.copy(), box, provers=[bogus], epsilon=1e-5, time_limit=30,
                          fuzz_options=FAST_FUZZ, methods=("fuzz", "structural", "z3"), accept_uncertified=True)
    assert r.verdict == "equivalent" and r.method == "z3"
    assert [d["source"] for d in r.discarded] == ["bogus"]
    assert r.discarded[0]["replayed"] is False
    assert seen["mode"] == "epsilon" and seen["epsilon"] == 1e-5 and 0 < seen["left"] <= 30
    stage = next(s for s in r.stages if s["stage"] == "bogus")
    assert "did not replay" in stage["outcome"]


def test_fake_prover_with_a_real_counterexample_is_reported():
    f = random_net([3, 6, 2], 7)
    box = unit_box(3)
    g = mutated(f, box, 0.1)
    centre = [0.5, 0.5, 0.5]

    def finder(*args):
        return CheckResult("counterexample", counterexample={"point_exact": ["1/2"] * 3})

    r = check_equivalence(f, g, box, provers=[finder], methods=("structural",))
    cex = verify_cex(f, g, box, r)
    assert r.method == "finder" and cex["point"] == centre


def test_structural_provers_hook(monkeypatch):
    calls = []

    def structural(f, g, box, mode, epsilon, deadline):
        calls.append(mode)
        if mode == "exact":
            return CheckResult("equivalent", method="structural", proof="exact",
                               reason="fake structural proof")
        return None

    monkeypatch.setattr(eq, "STRUCTURAL_PROVERS", [structural])
    f = random_net([3, 6, 2], 8)
    box = unit_box(3)
    no_diff = ("fuzz", "structural", "bounds", "milp", "z3")
    r = check_equivalence(f, f.copy(), box, mode="exact", fuzz_options=FAST_FUZZ, methods=no_diff,
                          accept_uncertified=True)
    assert (r.verdict, r.method, r.proof, r.reason) == ("equivalent", "structural", "exact",
                                                        "fake structural proof")
    # a hook that cannot decide hands over to the next stage
    r = check_equivalence(f, f.copy(), box, mode="top1", fuzz_options=FAST_FUZZ, methods=no_diff,
                          accept_uncertified=True)
    assert r.verdict == "equivalent" and r.method == "z3"
    assert calls == ["exact", "top1"]
    # the fuzzer runs first: a real difference never reaches the hook
    r = check_equivalence(f, mutated(f, box, 0.1), box, mode="exact", fuzz_options=FAST_FUZZ)
    assert r.verdict == "counterexample" and r.method == "fuzz" and calls == ["exact", "top1"]


def _cancelling_pair():
    """f(x) = relu(x + 1e16) - 1e16 and g(x) = relu(x): equal over the reals,
    but float64 evaluation of f rounds (f(1.5) = 2 in floats)."""
    f = mlp([np.array([[1.0]]), np.array([[1.0]])], [np.array([1e16]), np.array([-1e16])], name="f")
    g = mlp([np.array([[1.0]]), np.array([[1.0]])], [np.array([0.0]), np.array([0.0])], name="g")
    return f, g


def test_float_differences_that_do_not_replay_are_discarded():
    f, g = _cancelling_pair()
    box = Box([1.0], [2.0])
    assert abs(evaluate(f, [1.5])[0, 0] - evaluate(g, [1.5])[0, 0]) == 0.5
    r = check_equivalence(f, g, box, epsilon=0.1, methods=("fuzz",), fuzz_options=FAST_FUZZ)
    assert r.verdict == "unknown" and r.counterexample is None
    assert r.discarded and all(d["source"] == "fuzz" and d["difference"] == 0.0
                               for d in r.discarded)
    assert r.max_diff_seen >= 0.5  # seen in floats, refuted exactly


def test_replay_decides_exactly():
    f, _ = _cancelling_pair()
    zero = mlp([np.array([[1.0]]), np.array([[0.0]])], [np.array([0.0]), np.array([0.0])])
    box = Box([0.0], [2.0])
    # float f(1) = 0 but exactly f(1) = 1: a real counterexample for epsilon 0.5
    cex, check = replay(f, zero, box, [1.0], mode="epsilon", epsilon=0.5)
    assert cex is not None and cex["difference"] == 1.0 and cex["float_difference"] == 0.0
    cex, check = replay(f, zero, box, [1.0], mode="epsilon", epsilon=1.0)
    assert cex is None and check["difference"] == 1.0
    # points outside the box are clipped (exactly) before the replay
    cex, _ = replay(f, zero, box, ["7/3"], mode="exact")
    assert cex["point_exact"] == ["2/1"] and cex["clipped"]
    # rational points stay exact
    cex, _ = replay(f, zero, box, [Fraction(1, 3)], mode="exact")
    assert cex["point_exact"] == ["1/3"] and cex["f_exact"] == ["1/3"] and not cex["point_is_float"]


# -- errors and limits --------------------------------------------------------------------------

def test_size_mismatch_and_bad_options():
    f = random_net([3, 4, 2], 0)
    g = random_net([4, 4, 2], 0)
    with pytest.raises(DataError, match=r"3 .* 4"):
        check_equivalence(f, g, unit_box(3))
    h = random_net([3, 4, 5], 0)
    with pytest.raises(DataError, match=r"2 .* 5"):
        check_equivalence(f, h, unit_box(3))
    for kw in (dict(mode="approx"), dict(epsilon=-1.0), dict(time_limit=0), dict(solver="gurobi"),
               dict(methods=("magic",))):
        with pytest.raises(UsageError):
            check_equivalence(f, f.copy(), unit_box(3), **kw)


def test_time_limit_gives_unknown():
    f = random_net([6, 40, 40, 3], 9)
    g = scaled_copy(f, k=3)
    start = time.monotonic()
    r = check_equivalence(f, g, unit_box(6), mode="exact", time_limit=3.0,
                          fuzz_options=FAST_FUZZ)
    elapsed = time.monotonic() - start
    assert r.verdict == "unknown", r.reason
    assert elapsed < 3.0 + 5.0
    assert "z3" in r.reason and "milp" in r.reason
    json.dumps(r.to_json(), allow_nan=False)


# -- CLI ----------------------------------------------------------------------------------------

def _save(graph, path):
    from leo_verify.io.onnx import save_onnx
    save_onnx(graph, str(path), dtype="float64")
    return str(path)


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_exit_codes(tmp_path, capsys):
    f = random_net([3, 6, 5, 2], 10)
    box = unit_box(3)
    a = _save(f, tmp_path / "a.onnx")
    same = _save(f, tmp_path / "same.onnx")
    bad = _save(mutated(f, box, 0.05), tmp_path / "bad.onnx")
    code, out, err = run_cli(capsys, "check", a, same, "--domain", "box:0,1", "--time-limit", "30")
    assert code == 0, out + err
    assert "EQUIVALENT" in out and "time:" in out
    res = tmp_path / "res.json"
    code, out, err = run_cli(capsys, "check", a, bad, "--domain", "box:0,1", "-o", res)
    assert code == 1, out + err
    assert "COUNTEREXAMPLE" in out and "counterexample: x = [" in out
    doc = json.loads(res.read_text())
    assert doc["verdict"] == "counterexample" and doc["counterexample"]["difference"] > 1e-6
    assert doc["inputs"]["a"]["sha256"] and doc["inputs"]["domain"]["lower"] == [0.0] * 3
    from leo_verify.io import load
    verify_cex(load(a), load(bad), box, eq.CheckResult(**{k: doc[k] for k in (
        "verdict", "mode", "epsilon", "method", "proof", "counterexample")}))
    # top1 and exact flags reach the checker
    code, out, _ = run_cli(capsys, "check", a, same, "--domain", "box:0,1", "--exact")
    assert code == 0 and "(exact)" in out and "method: diff" in out, out
    # a permuted copy: z3 or the structural prover proves it exactly, but neither leaves a
    # certificate the kernel re-checks: UNKNOWN, unless the user accepts uncertified proofs
    perm = _save(permuted_copy(f, np.roll(np.arange(f.size_of("fc0")), 1)), tmp_path / "perm.onnx")
    res = tmp_path / "perm.json"
    code, out, _ = run_cli(capsys, "check", a, perm, "--domain", "box:0,1", "--exact", "-o", res,
                           "--time-limit", "8")
    assert code == 2 and "UNKNOWN" in out and "no certificate the checker kernel re-checks" in out, out
    assert "--accept-uncertified" in out.split("next:")[1]
    code, out, _ = run_cli(capsys, "check", a, perm, "--domain", "box:0,1", "--exact", "--accept-uncertified",
                           "-o", res)
    assert code == 0 and "EQUIVALENT" in out, out
    assert json.loads(res.read_text())["certificate"] is None
    code, out, _ = run_cli(capsys, "recheck", res)
    assert code != 0 and "NOT CERTIFIED" in out, out
    code, out, _ = run_cli(capsys, "check", a, bad, "--domain", "box:0,1", "--top1", "--seed", "3")
    assert code in (0, 1) and "top-1" in out


def test_cli_unknown_exit_2(tmp_path, capsys):
    f = random_net([6, 40, 40, 3], 9)
    a = _save(f, tmp_path / "a.onnx")
    b = _save(scaled_copy(f, k=3), tmp_path / "b.onnx")
    out_json = tmp_path / "r.json"
    code, out, err = run_cli(capsys, "check", a, b, "--domain", "box:0,1", "--exact",
                             "--time-limit", "3", "-o", out_json)
    assert code == 2, out + err
    assert "UNKNOWN" in out and "reason:" in out
    assert json.loads(out_json.read_text())["verdict"] == "unknown"


def _one_line_error(code, err, expected, *mentions):
    assert code == expected, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("leo-verify: error:"), err
    assert "Traceback" not in err
    for m in mentions:
        assert m in lines[0]


def test_cli_input_errors(tmp_path, capsys):
    a = _save(random_net([3, 4, 2], 0), tmp_path / "a.onnx")
    b = _save(random_net([4, 4, 2], 0), tmp_path / "b.onnx")
    code, _, err = run_cli(capsys, "check", a, b, "--domain", "box:0,1")
    _one_line_error(code, err, DataError.exit_code, "3", "4", "input sizes")
    code, _, err = run_cli(capsys, "check", a, a, "--domain", "box:0,1", "--exact", "--top1")
    _one_line_error(code, err, 3)
    code, _, err = run_cli(capsys, "check", a, a, "--domain", "box:0,1", "--time-limit", "0")
    _one_line_error(code, err, 3, "--time-limit")
    code, _, err = run_cli(capsys, "check", a, tmp_path / "missing.onnx", "--domain", "box:0,1")
    _one_line_error(code, err, 4, "missing.onnx")
    dom = tmp_path / "d.json"
    dom.write_text(json.dumps({"lower": [0, 0], "upper": [1, 1]}))
    code, _, err = run_cli(capsys, "check", a, a, "--domain", dom)
    _one_line_error(code, err, 8, "2 inputs")
    code, _, err = run_cli(capsys, "check", a, a, "--domain", "box:0,1", "-o", a)
    _one_line_error(code, err, 10, "overwrite")


# -- assert_equivalent ----------------------------------------------------------------------------

def test_assert_equivalent():
    f = random_net([3, 6, 2], 11)
    box = unit_box(3)
    res = assert_equivalent(f, f.copy(), "box:0,1", fuzz_options=FAST_FUZZ)
    assert res.verdict == "equivalent"
    g = mutated(f, box, 0.05)
    with pytest.raises(AssertionError) as info:
        assert_equivalent(f, g, "box:0,1", fuzz_options=FAST_FUZZ)
    msg = str(info.value)
    assert "replayed exactly" in msg and "x      = [" in msg and "|f - g| =" in msg
    with pytest.raises(AssertionError, match="disagree on the top class"):
        assert_equivalent(f, swapped_rows(f, 0, 1), (np.zeros(3), np.ones(3)), mode="top1",
                          fuzz_options=FAST_FUZZ)


def test_assert_equivalent_torch_modules_and_unknown():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    twin = copy.deepcopy(net)
    assert_equivalent(net, twin, "box:-1,1", fuzz_options=FAST_FUZZ)
    with torch.no_grad():
        twin[2].bias[1] += 0.01
    with pytest.raises(AssertionError, match="differ by more than epsilon"):
        assert_equivalent(net, twin, "box:-1,1", fuzz_options=FAST_FUZZ)
    f, g = _cancelling_pair()
    with pytest.raises(AssertionError, match="unknown"):
        assert_equivalent(f, g, Box([1.0], [2.0]), epsilon=0.1, methods=("fuzz",),
                          fuzz_options=FAST_FUZZ)
    res = assert_equivalent(f, g, Box([1.0], [2.0]), epsilon=0.1, methods=("fuzz",),
                            fuzz_options=FAST_FUZZ, allow_unknown=True)
    assert res.verdict == "unknown"


def test_bounds_cover_exact_weights():
    """Nets whose affine ops carry exact rationals (not floats): the bounds used by
    the checker must contain the exact network's values, not only the float one's."""
    from leo_verify.analysis.bounds import compute_bounds
    from leo_verify.semantics import evaluate_exact_all
    rng = np.random.default_rng(13)
    f = random_net([3, 5, 4, 2], 13)
    g = f.copy()
    for name in ("fc0", "fc1", "fc2"):
        op = f.op(name)
        w = [[Fraction(int(v * 3 ** 9), 3 ** 9) for v in row] for row in op.weight]
        b = [Fraction(int(v * 3 ** 9), 3 ** 9) for v in op.bias]
        g.replace(name, Affine.from_rational(w, b))
    box = unit_box(3)
    plain = compute_bounds(g, box, method="symbolic")
    wide = eq.widen_for_exact_weights(g, plain)
    assert eq.widen_for_exact_weights(f, plain) is plain  # nothing to do without exact weights
    for x in rng.uniform(0, 1, size=(30, 3)):
        vals = evaluate_exact_all(g, x.tolist())
        for node, (lo, hi) in wide.items():
            for v, l, h in zip(vals[node], lo, hi):
                assert Fraction(float(l)) <= v <= Fraction(float(h)), node
    for node in plain:
        assert np.all(wide[node][0] <= plain[node][0]) and np.all(wide[node][1] >= plain[node][1])
        assert np.all(wide[node][1] - plain[node][1] <= 1e-9)


@pytest.mark.parametrize("dual,verdict", [
    (0.5e-6, "equivalent"),                       # within epsilon - margin
    (1e-6 - 1e-9 - 1e-12 + 1e-13, "unknown"),      # inside the safety margin
    (2e-6, "unknown"),                            # not proven, no replaying point
])
def test_milp_verdict_follows_the_dual_bounds(monkeypatch, dual, verdict):
    """The solver's answers are faked: only dual bounds clear of epsilon by the
    margin prove, on every output and both signs."""
    from leo_verify.analysis import backends
    seen = []

    def fake_solve(self, objective, *, sense="max", **kw):
        seen.append((sense, kw.get("dual_stop")))
        d = dual if sense == "max" else -dual
        return backends.SolveResult("feasible", primal=0.0, dual=d, x=None, backend="fake",
                                    sense=sense, stopped_by="time_limit")

    monkeypatch.setattr(backends.Session, "solve", fake_solve)
    f = random_net([3, 6, 2], 14)
    r = check_equivalence(f, scaled_copy(f, k=0), unit_box(3), methods=("milp",), share=False)
    # a float MILP never gives a verdict: "equivalent" here means a float-only proof, reported
    assert r.verdict == "unknown", r.reason
    assert {s for s, _ in seen} == {"max", "min"} and len(seen) >= 4
    float_only = "float proof only (milp-float" in r.stages[0]["outcome"]
    assert float_only == (verdict == "equivalent")
    if verdict == "equivalent":
        assert r.best_bound == pytest.approx(dual)


# -- properties on drawn networks ------------------------------------------------------------------

def permuted_copy(f, perm):
    """The same function with the units of the first hidden layer permuted."""
    g = f.copy()
    a, b = f.op("fc0"), f.op("fc1")
    g.replace("fc0", Affine(a.weight[perm], a.bias[perm]))
    g.replace("fc1", Affine(b.weight[:, perm], b.bias))
    return g


@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(networks(inputs=(1, 3), hidden=(2, 5), layers=(1, 2), outputs=(1, 3)), st.data())
def test_drawn_networks(f, data):
    box = unit_box(f.input_size)
    # residual nets and permuted copies are proven by z3 or the structural prover (no kernel
    # certificate): accepted here, the test is about the verdicts
    kw = dict(time_limit=30, fuzz_options=FAST_FUZZ, accept_uncertified=True)
    r = check_equivalence(f, f.copy(), box, **kw)
    assert r.verdict == "equivalent", r.reason
    r = check_equivalence(f, f.copy(), box, mode="exact", **kw)
    assert (r.verdict, r.proof) == ("equivalent", "exact"), r.reason
    # an output bias shifted by delta differs by delta everywhere
    delta = data.draw(st.sampled_from([1e-3, -0.5]))
    g = f.copy()
    node = last_affine(f)
    op = f.op(node)
    g.replace(node, Affine(op.weight, op.bias + np.eye(f.output_size)[0] * delta))
    r = check_equivalence(f, g, box, **kw)
    cex = verify_cex(f, g, box, r)
    assert cex["difference"] == pytest.approx(abs(delta), rel=1e-6)
    if f.is_chain() and f.size_of("fc0") > 1:
        perm = np.array(data.draw(st.permutations(range(f.size_of("fc0")))))
        r = check_equivalence(f, permuted_copy(f, perm), box, mode="exact", **kw)
        assert (r.verdict, r.proof) == ("equivalent", "exact"), r.reason


# -- the exact structural prover (registered by leo_verify.certify) -----------------------
DIGITS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "nets",
                      "digits", "digits_64x50x50x10_l1_1e-03.onnx")


def test_structural_prover_proves_a_net_and_its_compression():
    import leo_verify.certify  # noqa: F401  (registers the structural prover)
    from leo_verify.compressor import compress
    from leo_verify.io import load
    from leo_verify.io.onnx import graph_from_onnx_model, to_onnx_model
    f = load(DIGITS)
    box = Box(np.zeros(64), np.ones(64))
    r = compress(f, box, certify=False, query_time_limit=5)
    assert len(r.graph.neurons()) < len(f.neurons())
    g = graph_from_onnx_model(to_onnx_model(r.graph))
    for mode in ("epsilon", "exact", "top1"):
        res = check_equivalence(f, g, box, mode=mode, time_limit=60, fuzz_options=FAST_FUZZ,
                                accept_uncertified=True)
        assert (res.verdict, res.method, res.proof) == ("equivalent", "structural", "exact"), res.reason


def test_wrongly_dropped_unstable_neuron_is_a_counterexample():
    import leo_verify.certify  # noqa: F401
    from leo_verify.analysis import analyze
    from leo_verify.passes.runner import compress_graph
    from leo_verify.io import load
    f = load(DIGITS)
    box = Box(np.zeros(64), np.ones(64))
    facts = analyze(f, box, method="fast", query_time_limit=5)
    stable = facts.stable_map()
    victim = next(n for n, x in facts.neurons.items() if x.status == "unstable")
    g, _ = compress_graph(f, {**stable, victim: "inactive"})
    res = check_equivalence(f, g, box, time_limit=60, fuzz_options=FAST_FUZZ)
    assert res.verdict == "counterexample", res.reason
    cex = res.counterexample
    assert max(abs(Fraction(a) - Fraction(b)) for a, b in zip(cex["f_exact"], cex["g_exact"])) > 1e-6
