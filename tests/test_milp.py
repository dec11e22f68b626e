"""The MILP encoder (analysis/milp.py) and the solver backends (analysis/backends.py).

Ground truth comes from hand reasoning on tiny nets and from dense grids:
the MILP maximum must equal the true maximum, and a dual bound must never
undercut it (a smaller dual bound would be a false stability claim).
"""
from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leo_verify.analysis import backends
from leo_verify.analysis.backends import Session, SolveResult, solve
from leo_verify.analysis.milp import Program, encode, interval_bounds
from leo_verify.domain import Box
from leo_verify.graph import Add, Affine, Graph, Input, Output, Relu, neuron_id
from leo_verify.semantics import evaluate, evaluate_all

BACKENDS = ["scip", "highs"]
TOL = 1e-5


# -- networks -------------------------------------------------------------------

def mlp(weights, *, name="net") -> Graph:
    """A ReLU MLP from a list of (W, b); no ReLU after the last layer."""
    g = Graph(name=name)
    prev = g.add("x", Input(np.shape(weights[0][0])[1]))
    for k, (w, b) in enumerate(weights, start=1):
        prev = g.add(f"fc{k}", Affine(np.array(w, float), np.array(b, float)), [prev])
        if k < len(weights):
            ids = [neuron_id(f"relu{k}", i) for i in range(len(b))]
            prev = g.add(f"relu{k}", Relu(ids), [prev])
    g.add("out", Output(len(weights[-1][1])), [prev])
    return g.lint()


def net_221() -> Graph:
    """out = relu(x1 + x2) - relu(x1 - x2) + 0.5.

    With a = x1 + x2, b = x1 - x2 over [-1, 1]^2 we have |a| + |b| <= 2, so
    max relu(a) - relu(b) = 2 (a = 2, b = 0) and the min is -2: the output
    ranges over [-1.5, 2.5].
    """
    return mlp([([[1, 1], [1, -1]], [0, 0]), ([[1, -1]], [0.5])])


def random_mlp(sizes, seed) -> Graph:
    rng = np.random.default_rng(seed)
    return mlp([(rng.normal(0, np.sqrt(2 / a), (b, a)), rng.normal(0, 0.1, b))
                for a, b in zip(sizes[:-1], sizes[1:])])


BOX2 = Box([-1.0, -1.0], [1.0, 1.0])


def grid(box: Box, n: int) -> np.ndarray:
    axes = [np.linspace(lo, hi, n) for lo, hi in zip(box.lower, box.upper)]
    return np.array(list(itertools.product(*axes)))


def top(g: Graph) -> str:
    """The last affine node (the output's argument)."""
    return g.args(g.output_name)[0]


# -- encoder --------------------------------------------------------------------

def test_program_rows_and_violation():
    p = Program()
    x = p.add_var("x", 0, 1)
    y = p.add_var("y", 0, 1, integer=True)
    z = p.add_var("z", -1, 1)
    p.add_row({x: 1.0, y: 1.0, z: 0.0}, -np.inf, 1.5, name="cap")  # the zero is dropped
    assert p.num_vars == 3 and p.num_rows == 1 and p.num_integer == 1
    assert p.violation([0.5, 1.0, 0.0]) == 0.0
    assert p.violation([1.0, 1.0, 0.0]) == pytest.approx(0.5)
    assert p.violation([0.2, 0.5, 0.0]) == pytest.approx(0.5)  # integrality
    assert p.violation([0.0, 0.0, 3.0]) == pytest.approx(2.0)  # bound
    row_lb, row_ub, starts, index, value = p.csr()
    assert list(starts) == [0, 2] and sorted(index) == [0, 1]
    with pytest.raises(ValueError):
        p.add_var("bad", 1, 0)
    with pytest.raises(ValueError):
        p.add_row({7: 1.0}, 0, 1)


def test_encode_structure_221():
    g = net_221()
    enc = encode(g, BOX2)
    assert enc.nodes == g.nodes()
    assert len(enc.inputs) == 2
    # interval bounds give fc1 in [-2, 2]: both neurons unstable -> 2 binaries
    assert set(enc.binaries) == {"relu1[0]", "relu1[1]"}
    assert enc.phases == {"relu1[0]": "unstable", "relu1[1]": "unstable"}
    assert enc.program.num_integer == 2
    # the output aliases its argument; pre-activations are the fc1 variables
    assert enc.var("out", 0) == enc.var("fc2", 0)
    assert enc.preact["relu1[1]"] == enc.var("fc1", 1)
    # the assignment of any box point is feasible and has the network's values
    for p in grid(BOX2, 5):
        x = enc.assignment(p)
        assert enc.program.violation(x) < 1e-9
        assert x[enc.var("out", 0)] == pytest.approx(evaluate(g, p)[0, 0])
        assert np.allclose(enc.input_point(x), p)


def test_interval_bounds_are_sound_on_samples():
    g = random_mlp([3, 8, 8, 2], seed=4)
    box = Box([-1, 0, 0.5], [0, 1, 2])
    b = interval_bounds(g, box)
    vals = evaluate_all(g, box.sample(2000, np.random.default_rng(0)))
    for node, (lo, hi) in b.items():
        assert np.all(vals[node] >= lo) and np.all(vals[node] <= hi), node


def test_bounds_decide_stability_without_binaries():
    # fc1[0] = x1 + x2 - 3 < 0 and fc1[1] = x1 + 3 > 0 on the box: no binaries
    g = mlp([([[1, 1], [1, 0]], [-3, 3]), ([[1, 1]], [0])])
    enc = encode(g, BOX2)
    assert enc.binaries == {}
    assert enc.phases == {"relu1[0]": "inactive", "relu1[1]": "active"}
    assert enc.var("relu1", 1) == enc.var("fc1", 1)  # y = z shares the variable
    lb, ub = enc.program.bounds()
    assert lb[enc.var("relu1", 0)] == ub[enc.var("relu1", 0)] == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_fixed_neurons_remove_binaries(backend):
    # relu1[0]: x1 + x2 - 1.5 is unstable on the box; relu1[1] = x1 - x2 - 2.5
    # is truly inactive (max -0.5).  Given loose bounds are intersected with the
    # sound interval bounds, so the encoding sees that by itself.
    g = mlp([([[1, 1], [1, -1]], [-1.5, -2.5]), ([[1, 1]], [0])])
    loose = {"fc1": (np.array([-5.0, -5.0]), np.array([5.0, 5.0]))}
    free = encode(g, BOX2, loose)
    assert set(free.binaries) == {"relu1[0]"}
    assert free.phases["relu1[1]"] == "inactive"
    r = solve(free.program, {free.var("fc2", 0): 1.0}, backend=backend)
    assert r.status == "optimal" and r.primal == pytest.approx(0.5, abs=TOL)
    # fixing relu1[0] inactive removes its binary and forces z <= 0: optimum 0
    fixed = encode(g, BOX2, loose, fixed={"relu1[0]": "inactive"})
    assert not fixed.binaries and fixed.program.num_integer == 0
    r = solve(fixed.program, {fixed.var("fc2", 0): 1.0}, backend=backend)
    assert r.status == "optimal" and r.primal == pytest.approx(0.0, abs=TOL)
    # fixing active shares z and forces z >= 0
    act = encode(g, BOX2, loose, fixed={"relu1[0]": "active"})
    assert "relu1[0]" not in act.binaries
    assert act.var("relu1", 0) == act.var("fc1", 0)
    r = solve(act.program, {act.var("fc1", 0): 1.0}, sense="min", backend=backend)
    assert r.primal == pytest.approx(0.0, abs=TOL)
    with pytest.raises(ValueError):
        encode(g, BOX2, loose, fixed={"relu1[0]": "maybe"})


def test_upto_restricts_the_encoding():
    g = random_mlp([3, 4, 4, 2], seed=1)
    box = Box([-1] * 3, [1] * 3)
    full = encode(g, box)
    part = encode(g, box, upto="fc2")
    assert set(part.nodes) == {"x", "fc1", "relu1", "fc2"}
    assert "relu2" not in part.node_vars and "out" not in part.node_vars
    assert set(part.binaries) <= {f"relu1[{i}]" for i in range(4)}
    assert part.program.num_vars < full.program.num_vars
    first = encode(g, box, upto="fc1")
    assert first.binaries == {} and first.program.num_integer == 0
    with pytest.raises(ValueError):
        encode(g, box, upto="nope")


# -- solving: known optimum -----------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_known_optimum_221(backend):
    g = net_221()
    enc = encode(g, BOX2, {"fc1": (np.array([-2.0, -2.0]), np.array([2.0, 2.0]))})
    out = {enc.var("out", 0): 1.0}
    r = solve(enc.program, out, sense="max", backend=backend)
    assert r.status == "optimal" and r.backend == backend and r.version
    assert r.primal == pytest.approx(2.5, abs=TOL)
    assert r.dual >= 2.5 - 1e-6
    # the incumbent's input replays to the claimed value
    assert evaluate(g, enc.input_point(r.x))[0, 0] == pytest.approx(r.primal, abs=TOL)
    r = solve(enc.program, out, sense="min", backend=backend)
    assert r.primal == pytest.approx(-1.5, abs=TOL) and r.dual <= -1.5 + 1e-6
    # brute force agrees
    vals = evaluate(g, grid(BOX2, 101))[:, 0]
    assert vals.max() == pytest.approx(2.5) and vals.min() == pytest.approx(-1.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_add(backend):
    # out = relu(x) + x (an Add node); on [-1, 1] its max is 2, min is -1
    g = Graph(name="res")
    g.add("x", Input(1))
    g.add("fc1", Affine([[1.0]], [0.0]), ["x"])
    g.add("relu1", Relu(["relu1[0]"]), ["fc1"])
    g.add("sum", Add(1), ["relu1", "x"])
    g.add("out", Output(1), ["sum"])
    g.lint()
    enc = encode(g, Box([-1.0], [1.0]))
    for sense, want in (("max", 2.0), ("min", -1.0)):
        r = solve(enc.program, {enc.var("out", 0): 1.0}, sense=sense, backend=backend)
        assert r.primal == pytest.approx(want, abs=TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lp_relaxation_bounds_the_milp(backend):
    g = random_mlp([3, 6, 6, 1], seed=2)
    box = Box([-1] * 3, [1] * 3)
    enc = encode(g, box)
    obj = {enc.var("out", 0): 1.0}
    milp = solve(enc.program, obj, backend=backend)
    lp = solve(enc.program, obj, backend=backend, relax=True)
    assert milp.status == lp.status == "optimal"
    assert lp.dual >= milp.primal - 1e-6
    assert lp.nodes == 0 or backend == "scip"
    # a pure LP (no integer variable at all) works too
    first = encode(g, box, upto="fc1")
    r = solve(first.program, {first.var("fc1", 0): 1.0}, backend=backend)
    w, b = g.op("fc1").weight[0], g.op("fc1").bias[0]
    assert r.status == "optimal" and r.primal == pytest.approx(np.abs(w).sum() + b, abs=TOL)


# -- solving: limits, stops, sessions -------------------------------------------

@pytest.fixture(scope="module")
def hard():
    """A MILP that takes a few hundred nodes, with its true maximum."""
    g = random_mlp([4, 12, 12, 1], seed=3)
    enc = encode(g, Box([-1] * 4, [1] * 4))
    obj = {enc.var("fc3", 0): 1.0}
    ref = solve(enc.program, obj, backend="highs")
    assert ref.status == "optimal"
    return g, enc, obj, ref.primal


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeouts_never_undercut_the_optimum(hard, backend):
    g, enc, obj, opt = hard
    for hint in (None, enc.assignment(np.zeros(4))):
        r = solve(enc.program, obj, backend=backend, time_limit=0.005, hint=hint)
        assert r.status in ("timeout", "feasible", "optimal"), r
        if r.status != "optimal":
            assert r.stopped_by == "time_limit"
        if r.dual is not None:
            assert r.dual >= opt - 1e-6
        if r.primal is not None:
            assert r.primal <= opt + 1e-6
        if hint is not None:  # a feasible start solution is always an incumbent
            assert r.status in ("feasible", "optimal")


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeout_without_incumbent_claims_no_bound(backend):
    # Measured trap: after a SCIP time-out without incumbent, pywraplp's
    # BestBound() returned 0.0 on this net although the maximum is ~0.798.
    g = random_mlp([4, 16, 16, 1], seed=3)
    box = Box([-1] * 4, [1] * 4)
    enc = encode(g, box)
    best = evaluate(g, box.sample(5000, np.random.default_rng(1)))[:, 0].max()
    assert best > 0.5  # so a reported 0.0 would be caught
    r = solve(enc.program, {enc.var("fc3", 0): 1.0}, backend=backend, time_limit=0.005)
    assert r.status in ("timeout", "feasible", "optimal"), r
    assert r.dual is None or r.dual >= best


@pytest.mark.parametrize("backend", BACKENDS)
def test_early_stops(hard, backend):
    g, enc, obj, opt = hard
    full = solve(enc.program, obj, backend=backend)
    stop = opt - 0.5
    r = solve(enc.program, obj, backend=backend, primal_stop=stop)
    assert r.status in ("feasible", "optimal") and r.primal >= stop
    assert r.stopped_by == "primal_stop" and r.nodes <= full.nodes
    r = solve(enc.program, obj, backend=backend, dual_stop=opt + 0.5)
    assert r.dual is not None and opt - 1e-6 <= r.dual <= opt + 0.5
    assert r.stopped_by == "dual_stop" and r.nodes <= full.nodes
    # "min" mirrors: stop at an incumbent <= v, or once the bound is >= v
    neg = {v: -c for v, c in obj.items()}
    r = solve(enc.program, neg, sense="min", backend=backend, primal_stop=-stop)
    assert r.primal <= -stop and r.stopped_by == "primal_stop"
    r = solve(enc.program, neg, sense="min", backend=backend, dual_stop=-opt - 0.5)
    assert -opt - 0.5 <= r.dual <= -opt + 1e-6 and r.stopped_by == "dual_stop"


@pytest.mark.parametrize("backend", BACKENDS)
def test_session_stops_do_not_leak(hard, backend):
    # SCIP keeps parameters and HiGHS keeps its interrupt flag between runs
    # of one model: a stop of one query must not cut the next one short.
    g, enc, obj, opt = hard
    s = Session(enc.program, backend=backend)
    assert s.solve(obj, primal_stop=opt - 0.5).stopped_by == "primal_stop"
    r = s.solve(obj)
    assert r.status == "optimal" and r.primal == pytest.approx(opt, abs=TOL)
    assert s.solve(obj, dual_stop=opt + 0.5).stopped_by == "dual_stop"
    r = s.solve(obj, sense="min")
    ref = solve(enc.program, obj, sense="min", backend=backend)
    assert r.status == "optimal" and r.primal == pytest.approx(ref.primal, abs=TOL)
    # other objectives on the same session agree with fresh solves
    for i in range(3):
        o = {enc.var("fc2", i): 1.0}
        assert s.solve(o).primal == pytest.approx(solve(enc.program, o, backend=backend).primal,
                                                  abs=TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_infeasible_and_unbounded(backend):
    p = Program()
    x = p.add_var("x", 0, 1, integer=True)
    p.add_row({x: 2.0}, 1.0, 1.0)  # 2x = 1 has no integer solution
    r = solve(p, {x: 1.0}, backend=backend)
    assert r.status == "infeasible" and r.dual is None and r.x is None
    q = Program()
    y = q.add_var("y", 0, np.inf)
    r = solve(q, {y: 1.0}, backend=backend)
    assert r.status == "error" and r.dual is None


def test_solver_crash_becomes_error(monkeypatch):
    def boom(self, *a, **k):
        raise RuntimeError("solver exploded")

    p = Program()
    x = p.add_var("x", 0, 1)
    monkeypatch.setattr(backends._ScipModel, "run", boom)
    r = solve(p, {x: 1.0}, backend="scip")
    assert r.status == "error" and r.dual is None and "exploded" in r.message


def test_nonfinite_solution_becomes_error(monkeypatch):
    def nan_run(self, c, *, sense, **k):
        return SolveResult("optimal", primal=1.0, dual=1.0, x=np.array([np.nan]),
                           backend="highs", sense=sense)

    p = Program()
    x = p.add_var("x", 0, 1)
    monkeypatch.setattr(backends._HighsModel, "run", nan_run)
    r = solve(p, {x: 1.0}, backend="highs")
    assert r.status == "error" and r.dual is None and r.x is None


def test_dual_undercutting_the_incumbent_becomes_error(monkeypatch):
    # the kind of misreading pywraplp's HiGHS BestBound() invites
    def bad_run(self, c, *, sense, **k):
        return SolveResult("feasible", primal=1.0, dual=0.5, x=np.array([1.0]),
                           backend="highs", sense=sense)

    p = Program()
    x = p.add_var("x", 0, 1)
    monkeypatch.setattr(backends._HighsModel, "run", bad_run)
    r = solve(p, {x: 1.0}, backend="highs")
    assert r.status == "error" and r.dual is None and "undercuts" in r.message


def test_no_tiny_big_m_coefficients():
    # Solvers drop matrix entries below ~1e-9 (HiGHS), which would turn a
    # big-M row into y <= z and cut off real points: the encoder widens them.
    g = mlp([([[1.0], [1.0]], [-1e-12, -1.0 + 1e-13]), ([[-1.0, 1.0]], [0.0])])
    bounds = {"fc1": (np.array([-1e-12, -1.0 + 1e-13]), np.array([1 - 1e-12, 1e-13]))}
    enc = encode(g, Box([0.0], [1.0]), bounds)
    assert len(enc.binaries) == 2
    coefs = [abs(c) for r in enc.program.rows for c in r.coefs.values()]
    assert min(coefs) >= 1e-7
    for p in grid(Box([0.0], [1.0]), 11):  # still contains every real point
        assert enc.program.violation(enc.assignment(p)) < 1e-12


def test_bad_options_raise():
    p = Program()
    x = p.add_var("x", 0, 1)
    with pytest.raises(ValueError):
        solve(p, {x: 1.0}, sense="up")
    with pytest.raises(ValueError):
        solve(p, {x: 1.0}, backend="gurobi")
    with pytest.raises(ValueError):
        solve(p, {5: 1.0})
    with pytest.raises(ValueError):
        solve(p, {x: 1.0}, time_limit=-1)


def test_highs_banner_stays_off_stdout():
    code = ("from leo_verify.analysis.milp import Program\n"
            "from leo_verify.analysis.backends import solve\n"
            "p = Program(); x = p.add_var('x', 0, 1)\n"
            "assert solve(p, {x: 1.0}, backend='highs').status == 'optimal'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""


# -- property: MILP max = true max on random tiny nets --------------------------

@st.composite
def tiny_nets(draw):
    n_in = draw(st.integers(1, 3))
    widths = draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))
    n_out = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    sizes = [n_in, *widths, n_out]
    weights = [(rng.uniform(-2, 2, (b, a)), rng.uniform(-1, 1, b))
               for a, b in zip(sizes[:-1], sizes[1:])]
    lo = rng.uniform(-2, 1, n_in)
    hi = lo + rng.uniform(0, 2, n_in)
    return mlp(weights), Box(lo, hi), draw(st.sampled_from(BACKENDS))


def lipschitz(g: Graph) -> np.ndarray:
    """Per-output Lipschitz constants in the inf-norm (products of |W| row sums)."""
    m = None
    for _, op in g.items():
        if op.kind == "affine":
            m = np.abs(op.weight) if m is None else np.abs(op.weight) @ m
    return m.sum(axis=1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tiny_nets())
def test_milp_max_matches_grid(case):
    g, box, backend = case
    enc = encode(g, box)
    pts = grid(box, {1: 801, 2: 61, 3: 21}[box.size])
    vals = evaluate(g, pts)
    samples = evaluate(g, box.sample(500, np.random.default_rng(0)))
    spacing = np.max((box.upper - box.lower) / ({1: 800, 2: 60, 3: 20}[box.size]))
    slack = lipschitz(g) * spacing / 2 + 1e-6
    session = Session(enc.program, backend=backend)
    for j in range(g.output_size):
        r = session.solve({enc.var("out", j): 1.0})
        assert r.status == "optimal", r
        # the incumbent is a real point: its replayed value is the primal
        assert evaluate(g, enc.input_point(r.x))[0, j] == pytest.approx(r.primal, abs=1e-5)
        assert box.contains(enc.input_point(r.x), tol=0.0)[0]  # clipped into the box
        assert r.dual >= vals[:, j].max() - 1e-6
        assert r.dual >= samples[:, j].max() - 1e-6
        assert r.primal <= vals[:, j].max() + slack[j]


def test_highs_time_limit_is_per_run_on_a_reused_model():
    # HiGHS 1.x compares time_limit with the *cumulative* run time of the Highs object;
    # highs_time_limit makes it per run, so a model reused past the limit still solves
    # (this is what broke branch and bound after ~10 s of LPs on one model)
    import time as _time
    import highspy
    from leo_verify.analysis.backends import highs_time_limit
    rng = np.random.default_rng(0)
    h = highspy.Highs()
    h.silent()
    n = 200
    idx = np.arange(n, dtype=np.int32)
    h.addVars(n, np.zeros(n), np.ones(n))
    for row in rng.normal(size=(150, n)):
        h.addRow(-h.getInfinity(), 1.0, n, idx, row)
    statuses = []
    t0 = _time.monotonic()
    while h.getRunTime() < 0.6 and _time.monotonic() - t0 < 60:
        h.changeColsCost(n, idx, -rng.uniform(size=n))
        h.clearSolver()
        highs_time_limit(h, 0.2)
        h.run()
        statuses.append(h.getModelStatus())
    assert h.getRunTime() >= 0.6 and len(statuses) > 3
    assert all(s == highspy.HighsModelStatus.kOptimal for s in statuses)


# -- a task's deadline (issue 17: budgets that hold) --------------------------------

def test_layer_task_deadline_bounds_every_query_and_skips_those_not_started(monkeypatch, tmp_path):
    import dataclasses
    import time as _time
    from leo_verify.analysis.bounds import compute_bounds
    from leo_verify.analysis.checkpoint import Journal
    from leo_verify.analysis.queries import LayerTask, Query, run_layer_task
    g = random_mlp([4, 16, 16, 1], seed=3)
    box = Box([-1] * 4, [1] * 4)
    bounds = compute_bounds(g, box)
    queries = [Query(f"relu2[{i}]", i, sense, 1e-6) for i in range(4) for sense in ("max", "min")]
    # a deadline already passed: nothing is solved, every answer is an honest timeout
    past = LayerTask(g, box, bounds, {}, "fc2", queries, time_limit=60.0, deadline=_time.time() - 1)
    out = run_layer_task(past)
    assert [o.verdict for o in out] == ["timeout"] * len(queries)
    assert all(o.dual is None and o.point is None and o.stats["time"] == 0.0 for o in out)
    # a deadline ahead: each query's limit is at most what is left of it
    limits = []
    real = Session.solve

    def spy(self, objective, **kw):
        limits.append(kw["time_limit"])
        return real(self, objective, **kw)

    monkeypatch.setattr(Session, "solve", spy)
    soon = LayerTask(g, box, bounds, {}, "fc2", queries, time_limit=60.0, deadline=_time.time() + 20)
    run_layer_task(soon)
    assert len(limits) == len(queries) and all(0 < lim <= 20 for lim in limits)
    # a timeout under a deadline is not journaled as final (a resumed run asks again)
    j = Journal(str(tmp_path), {"run": "test"}, query_time_limit=60.0)
    assert not j.finished(past, out[0])
    assert j.finished(dataclasses.replace(past, deadline=None), out[0])
