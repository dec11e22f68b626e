"""Stability analysis: soundness against exhaustive ground truth, traps, methods agree."""
from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leo_verify.analysis import analyze
from leo_verify.analysis.facts import Facts
from leo_verify.analysis.witness import neuron_index
from leo_verify.domain import Box
from leo_verify.semantics import evaluate_exact_all
from leo_verify.testing import boxes, mlp, networks

from groundtruth import extrema


def exact_pre(graph, point, nid):
    pre, row, _ = neuron_index(graph)[nid]
    return evaluate_exact_all(graph, point)[pre][row]


def check_facts_sound(graph, box, facts, truth=None):
    """No false stable claim; every witness re-evaluates exactly to its sign."""
    truth = truth if truth is not None else extrema(graph, box)
    for nid, f in facts.neurons.items():
        zmax, xmax, zmin, xmin = truth[nid]
        if f.status == "stably_inactive":
            # a region optimum above 0: confirm exactly, that is a false claim
            assert not (zmax > 1e-9 and exact_pre(graph, xmax, nid) > 0), (nid, zmax)
        if f.status == "stably_active":
            assert not (zmin < -1e-9 and exact_pre(graph, xmin, nid) < 0), (nid, zmin)
        if f.witness_pos is not None:
            assert box.contains(np.array(f.witness_pos))[0]
            assert exact_pre(graph, f.witness_pos, nid) > 0
        if f.witness_neg is not None:
            assert box.contains(np.array(f.witness_neg))[0]
            assert exact_pre(graph, f.witness_neg, nid) < 0
        if f.status == "unstable":
            assert f.witness_pos is not None and f.witness_neg is not None
        # the enumeration's LPs have float tolerances (~1e-7): compare loosely;
        # stability claims above are confirmed exactly instead
        if f.lower is not None:
            assert f.lower <= zmin + 1e-6 * max(1, abs(zmin)), (nid, f.lower, zmin)
        if f.upper is not None:
            assert f.upper >= zmax - 1e-6 * max(1, abs(zmax)), (nid, f.upper, zmax)
    return truth


def check_complete(facts, truth, margin=1e-4):
    """When no query timed out, every neuron stable by a clear margin is found."""
    if not facts.complete:
        return
    for nid, f in facts.neurons.items():
        zmax, _, zmin, _ = truth[nid]
        if zmax < -margin:
            assert f.status == "stably_inactive", (nid, zmax, f.status)
        elif zmin > margin:
            assert f.status == "stably_active", (nid, zmin, f.status)
        elif zmax > margin and zmin < -margin:
            assert f.status == "unstable", (nid, zmin, zmax, f.status)


@st.composite
def net_and_box(draw):
    g = draw(networks(inputs=(1, 3), hidden=(1, 3), layers=(1, 2), outputs=(1, 2)))
    return g, draw(boxes(g.input_size))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net_and_box(), st.sampled_from(["fast", "leo", "isa"]))
def test_no_false_stable_claims_against_enumeration(nb, method):
    g, box = nb
    facts = analyze(g, box, method=method, query_time_limit=20, n_random=200, n_corners=64)
    truth = check_facts_sound(g, box, facts)
    check_complete(facts, truth)


def _one_layer_then(rows_w, rows_b, box_dim=2):
    """x in R^d -> hidden identity-ish layer -> neuron under test in layer 2."""
    return mlp([np.eye(box_dim), np.array(rows_w), np.ones((1, len(rows_b)))],
               [np.zeros(box_dim), np.array(rows_b), np.zeros(1)])


UNIT = Box(np.zeros(2), np.ones(2))


@pytest.mark.parametrize("layer2", [False, True])
def test_trap_max_plus_1e7_at_one_corner_is_never_stable(layer2):
    b = -2 + 1e-7
    g = _one_layer_then([[1.0, 1.0]], [b]) if layer2 else mlp([np.array([[1.0, 1.0]]), np.ones((1, 1))],
                                                                [np.array([b]), np.zeros(1)])
    for method in ("fast", "leo", "isa"):
        facts = analyze(g, UNIT, method=method)
        nid = list(facts.neurons)[-1]
        assert facts[nid].status in ("unstable", "unknown"), (method, facts[nid])
        assert exact_pre(g, [1.0, 1.0], nid) > 0


def test_trap_max_exactly_zero_is_stably_inactive():
    g = mlp([np.array([[1.0, 1.0]]), np.ones((1, 1))], [np.array([-2.0]), np.zeros(1)])
    for method in ("fast", "leo", "isa"):
        f = analyze(g, UNIT, method=method)["relu0[0]"]
        assert f.status == "stably_inactive", (method, f)


@pytest.mark.parametrize("layer2", [False, True])
def test_trap_max_minus_1e7_is_inactive_or_unknown_never_unstable(layer2):
    b = -2 - 1e-7
    g = _one_layer_then([[1.0, 1.0]], [b]) if layer2 else mlp([np.array([[1.0, 1.0]]), np.ones((1, 1))],
                                                                [np.array([b]), np.zeros(1)])
    for method in ("fast", "leo", "isa"):
        facts = analyze(g, UNIT, method=method)
        nid = list(facts.neurons)[-1]
        assert facts[nid].status in ("stably_inactive", "unknown"), (method, facts[nid])
    # a layer-1 neuron is linear in x: the sound bounds decide it exactly
    if not layer2:
        assert facts[nid].status == "stably_inactive"


def test_trap_zero_row_negative_bias_and_degenerate_dimension():
    w = np.array([[0.0, 0.0], [1.0, -1.0], [0.0, 1.0]])
    b = np.array([-0.5, 0.0, 0.0])
    g = mlp([w, np.ones((1, 3))], [b, np.zeros(1)])
    box = Box(np.array([0.3, 0.0]), np.array([0.3, 1.0]))  # x0 fixed at 0.3
    for method in ("fast", "leo", "isa"):
        facts = analyze(g, box, method=method)
        assert facts["relu0[0]"].status == "stably_inactive"
        assert facts["relu0[1]"].status == "unstable"
        assert facts["relu0[2]"].status == "stably_active"  # x1 >= 0: z >= 0 on the box
        check_facts_sound(g, box, facts)


def test_methods_agree_on_small_trained_like_net():
    rng = np.random.default_rng(3)
    ws = [rng.normal(size=(8, 4)) * 0.7, rng.normal(size=(8, 8)) * 0.5, rng.normal(size=(2, 8))]
    bs = [rng.normal(size=8) * 0.5 - 0.4, rng.normal(size=8) * 0.5 - 0.3, np.zeros(2)]
    g = mlp(ws, bs)
    box = Box(np.zeros(4), np.ones(4))
    results = {m: analyze(g, box, method=m, query_time_limit=30) for m in ("fast", "leo", "isa")}
    truth = None
    for m, facts in results.items():
        assert facts.complete
        truth = check_facts_sound(g, box, facts, truth)
    assert results["fast"].stable_map() == results["leo"].stable_map() == results["isa"].stable_map()


def test_facts_json_roundtrip_and_determinism(tmp_path):
    rng = np.random.default_rng(5)
    g = mlp([rng.normal(size=(6, 3)), rng.normal(size=(6, 6)), rng.normal(size=(1, 6))],
            [rng.normal(size=6) - 0.5, rng.normal(size=6) - 0.5, np.zeros(1)])
    box = Box(-np.ones(3), np.ones(3))
    a = analyze(g, box, seed=7)
    b = analyze(g, box, seed=7)

    def strip(f):
        d = f.to_json()
        d["meta"].pop("timings")
        for n in d["neurons"].values():
            for q in n["stats"].get("queries", []):
                q.pop("time")
        return d
    assert json.dumps(strip(a)) == json.dumps(strip(b))
    path = tmp_path / "facts.json"
    a.save(str(path))
    back = Facts.load(str(path))
    assert back.stable_map() == a.stable_map()
    assert back.to_json()["neurons"] == a.to_json()["neurons"]


def test_budget_leaves_incomplete_facts_with_decided_neurons():
    rng = np.random.default_rng(11)
    sizes = [6, 30, 30, 30, 30, 2]
    ws = [rng.normal(size=(b, a)) / np.sqrt(a) for a, b in zip(sizes, sizes[1:])]
    bs = [rng.normal(size=b) * 0.3 for b in sizes[1:]]
    g = mlp(ws, bs)
    box = Box(np.zeros(6), np.ones(6))
    facts = analyze(g, box, method="leo", budget=1.0)
    assert not facts.complete and facts.meta["stopped"] == "budget"
    assert sum(f.status != "unknown" for f in facts) > 0


def test_cli_analyze_writes_facts(tmp_path, capsys):
    from pathlib import Path

    from leo_verify.cli import main
    ex = Path(__file__).resolve().parents[1] / "examples" / "nets"
    out = tmp_path / "facts.json"
    rc = main(["analyze", str(ex / "tiny_mlp.onnx"), "--domain", str(ex / "tiny_mlp_domain.json"),
               "-o", str(out)])
    assert rc == 0
    facts = Facts.load(str(out))
    assert facts.complete and len(facts) == 16
    assert "total" in capsys.readouterr().out
    rc = main(["analyze", str(ex / "tiny_mlp.onnx"), "--domain", "box:1,0", "-o", str(out)])
    assert rc == 8


def test_dask_local_cluster_gives_identical_facts():
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(2)
    g = mlp([rng.normal(size=(10, 3)), rng.normal(size=(10, 10)) * 0.6, rng.normal(size=(1, 10))],
            [rng.normal(size=10) * 0.3, rng.normal(size=10) * 0.3 - 0.2, np.zeros(1)])
    box = Box(np.zeros(3), np.ones(3))
    local = analyze(g, box, workers=1, n_random=50, n_corners=8, gradient_steps=3)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        remote = analyze(g, box, executor=client.get_executor(), workers=2, n_random=50, n_corners=8,
                         gradient_steps=3)
    assert remote.meta["counters"]["milp_queries"] == local.meta["counters"]["milp_queries"]
    assert {n: (f.status, f.evidence, f.witness_pos, f.witness_neg) for n, f in remote.neurons.items()} == \
        {n: (f.status, f.evidence, f.witness_pos, f.witness_neg) for n, f in local.neurons.items()}


def test_cli_scheduler_address_on_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    from pathlib import Path

    from leo_verify.cli import main
    ex = Path(__file__).resolve().parents[1] / "examples" / "nets"
    args = [str(ex / "tiny_mlp.onnx"), "--domain", str(ex / "tiny_mlp_domain.json")]
    assert main(["analyze", *args, "-o", str(tmp_path / "local.json")]) == 0
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        rc = main(["analyze", *args, "--scheduler", cluster.scheduler_address,
                   "-o", str(tmp_path / "dask.json")])
    assert rc == 0
    a, b = Facts.load(str(tmp_path / "local.json")), Facts.load(str(tmp_path / "dask.json"))
    assert a.to_json()["neurons"].keys() == b.to_json()["neurons"].keys()
    assert {n: (f.status, f.witness_pos, f.witness_neg) for n, f in a.neurons.items()} == \
        {n: (f.status, f.witness_pos, f.witness_neg) for n, f in b.neurons.items()}
    # an address nobody listens on is one readable line, exit 3
    assert main(["analyze", *args, "--scheduler", "tcp://127.0.0.1:9", "-o", str(tmp_path / "x.json")]) == 3


def test_ctrl_c_leaves_incomplete_facts_with_decided_neurons(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path
    bench = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "acasxu"
    if not bench.is_dir():
        pytest.skip("../shared/benchmarks not present")
    out = tmp_path / "facts.json"
    proc = subprocess.Popen([sys.executable, "-m", "leo_verify", "analyze",
                             str(bench / "ACASXU_run2a_1_2_batch_2000.onnx"), "--domain",
                             str(bench / "prop_1.vnnlib"), "--query-time-limit", "5", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a shell's background job ignores SIGINT and children inherit
                            # that; a user's Ctrl-C reaches a foreground process: simulate it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(6)  # past loading and the first layers, inside the analysis
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    facts = Facts.load(str(out))
    assert not facts.complete and facts.meta["stopped"] == "interrupted"
    assert 0 < sum(f.status != "unknown" for f in facts) < len(facts)


def test_input_splitting_stops_at_its_deadline_and_proves_only_closed_neurons():
    """Issue 17 (budgets that hold): ``split_layer`` bounds no piece after its deadline, and a
    neuron whose pieces are left open stays unknown; without a deadline the same layer is
    proven by splitting."""
    import time

    from leo_verify.analysis.fast import witness_phase
    from leo_verify.analysis.split import split_layer
    from leo_verify.analysis.state import AnalysisOptions, AnalysisState
    rng = np.random.default_rng(0)
    depth, width = 6, 8
    ws = [(np.eye(width, 3) if k == 0 else np.eye(width)) + 0.3 * rng.normal(size=(width, 3 if k == 0 else width))
          for k in range(depth)]
    g = mlp(ws + [rng.normal(size=(2, width))], [0.1 * rng.normal(size=width) for _ in range(depth)] + [np.zeros(2)])
    box = Box(np.zeros(3), np.ones(3))
    layer = g.relus()[-1][0]

    def fresh():
        st_ = AnalysisState(g, box, AnalysisOptions(n_random=200, n_corners=8, gradient_steps=0))
        st_.refresh_bounds()
        witness_phase(st_)
        return st_
    late = fresh()
    before = {n: f.status for n, f in late.facts.items()}
    split_layer(late, layer, deadline=time.monotonic() - 1.0)
    assert late.counters.get("split_pieces", 0) == 0
    assert {n: f.status for n, f in late.facts.items()} == before
    free = fresh()
    split_layer(free, layer)
    assert free.counters["split_pieces"] > 0
    proven = [n for n, f in free.facts.items() if f.status != before[n]]
    assert proven and all(free.facts[n].evidence == "symbolic" for n in proven), proven


def test_witness_refuted_by_the_exact_replay_leaves_the_column_open_for_other_points(monkeypatch):
    """The float pass only proposes: a proposal the exact replay refutes is not
    accepted, and the column is covered by another point instead."""
    from leo_verify.analysis import witness
    graph = mlp([np.array([[1.0, -1.0], [1.0, 1.0]]), np.array([[1.0, 1.0]])],
                [np.array([0.0, -1.0]), np.array([0.0])])
    rng = np.random.default_rng(0)
    points = rng.random((50, 2))
    nids = list(neuron_index(graph))
    honest = witness.search_witnesses(graph, points, nids)
    assert set(honest.pos) == set(nids) and set(honest.neg) == set(nids)

    real, refused = witness._confirm, []

    def refuse_first_points(graph_, point, claims, idx):
        if len(refused) < 3:  # the exact replay "refutes" the first three points offered
            refused.append(tuple(point))
            return []
        return real(graph_, point, claims, idx)

    monkeypatch.setattr(witness, "_confirm", refuse_first_points)
    found = witness.search_witnesses(graph, points, nids)
    assert len(refused) == 3
    assert set(found.pos) == set(nids) and set(found.neg) == set(nids)
    for side, sign in ((found.pos, 1), (found.neg, -1)):
        for nid, point in side.items():
            assert tuple(point) not in refused
            assert sign * exact_pre(graph, point, nid) > 0
