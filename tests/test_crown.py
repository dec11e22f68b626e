"""Exact CROWN bounds and the piece-tree proofs built on them (certify/crown.py, crown_split.py)."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leo_verify.analysis.bounds import compute_bounds
from leo_verify.analysis.witness import neuron_index
from leo_verify.certify.claims import prove_claims
from leo_verify.kernel.claims import check_crown_tree as check_layer_tree, recheck_claims
from leo_verify.kernel.crown import crown_bounds, preactivations
from leo_verify.certify.crown_split import prove_layer_by_pieces
from leo_verify.kernel.intervals import node_bounds
from leo_verify.domain import Box
from leo_verify.graph import Affine
from leo_verify.io import load
from leo_verify.semantics import evaluate_exact_all
from leo_verify.testing import boxes, networks

from groundtruth import abs_trick, extrema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "nets", "digits", "digits_64x25x25x10_l1_1e-03.onnx")

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _q(box: Box):
    return box.exact_bounds()


# -- soundness against the exact extrema -------------------------------------------------
@given(networks(inputs=(1, 3), hidden=(1, 4), layers=(1, 3)), st.data())
@SETTINGS
def test_crown_bounds_contain_the_exact_extrema(net, data):
    box = data.draw(boxes(net.input_size))
    truth = extrema(net, box)
    idx = neuron_index(net)
    # true phases with a margin (a fact the caller has proven) may be passed in
    phase = {}
    for nid, (zmax, _, zmin, _) in truth.items():
        if data.draw(st.booleans()):
            if zmax < -1e-6:
                phase[nid] = "inactive"
            elif zmin > 1e-6:
                phase[nid] = "active"
    b = crown_bounds(net, _q(box), phase=phase)
    iv = node_bounds(net, _q(box), phase=phase)
    for nid, (zmax, xmax, zmin, xmin) in truth.items():
        pre, row, _ = idx[nid]
        lo, hi = b[pre][0].fraction(row), b[pre][1].fraction(row)
        # the exact value at the float argmax/argmin lies inside the proven bounds
        for x in (xmax, xmin):
            if x is not None:
                v = evaluate_exact_all(net, box.clip(np.asarray(x)))[pre][row]
                assert lo <= v <= hi, (nid, float(lo), float(v), float(hi))
        # never looser than the exact intervals
        assert iv[pre][0].fraction(row) <= lo and hi <= iv[pre][1].fraction(row)


def test_crown_is_as_tight_as_float_crown_on_a_trained_net():
    # the float analysis' CROWN (rigorous, float64) and the exact one agree to ~1e-9:
    # an interval-only or wrongly relaxed implementation would be far looser
    net = load(DIGITS)
    box = Box(np.zeros(64), np.ones(64))
    exact = crown_bounds(net, _q(box))
    fl = compute_bounds(net, box)
    iv = node_bounds(net, _q(box))
    deep = [p for p in preactivations(net) if net.args(p)[0] != net.input_name]
    assert deep
    for p in deep:
        lo, hi = exact[p][0].floats(), exact[p][1].floats()
        ilo, ihi = iv[p][0].floats(), iv[p][1].floats()
        # back-substitution runs for every unit the intervals allow to be positive
        # (an inactive unit outputs 0 whatever its bounds)
        unst = ihi > 0
        assert np.any(unst) and np.any(~unst)
        assert np.all(np.abs(hi - fl[p][1])[unst] <= 1e-8 * (1 + np.abs(fl[p][1][unst])))
        assert np.all(np.abs(lo - fl[p][0])[unst] <= 1e-8 * (1 + np.abs(fl[p][0][unst])))
        assert np.all((hi == ihi)[~unst]) and np.all((lo == ilo)[~unst])
        assert np.sum((hi - lo)[unst]) < 0.9 * np.sum((ihi - ilo)[unst])  # far tighter than intervals


# -- piece trees -----------------------------------------------------------------------


def test_piece_tree_proves_what_the_whole_box_cannot_and_is_rechecked():
    net = abs_trick()
    box = Box(np.array([-1.0]), np.array([1.0]))
    whole = crown_bounds(net, _q(box))
    assert whole["z"][0].fraction(0) < 0  # the whole box does not show it
    claims = {"relu1[0]": (0, "active")}
    tree, proven, stats = prove_layer_by_pieces(net, box, "z", claims, lemmas={}, phase={},
                                                deadline=time.monotonic() + 30)
    assert proven == {"relu1[0]"} and stats["pieces"] >= 3
    assert "split" in tree and "settles" not in tree
    assert check_layer_tree(net, _q(box), tree, "z", claims, lemmas={}, phase={}) == {"relu1[0]"}
    # tampering: a cut outside the box, a missing child, a settle removed -> nothing proven
    for mutate in (lambda t: t["split"].update(at="5"),
                   lambda t: t["children"].pop(),
                   lambda t: [c.pop("settles", None) for c in t["children"]],
                   lambda t: t["split"].update(dim=3),
                   lambda t: [c.update(settles=7) for c in t["children"]],  # malformed, not a crash
                   lambda t: t.update(children="xy")):
        bad = json.loads(json.dumps(tree))
        mutate(bad)
        assert check_layer_tree(net, _q(box), bad, "z", claims, lemmas={}, phase={}) == set()
    # a mutated network (the offset made negative: z = -1/1024 < 0) fails the same tree
    mutated = net.copy()
    mutated.replace("fc1", Affine(np.array([[1.0, -1.0]]), np.array([-(2.0 ** -10)])))
    assert check_layer_tree(mutated, _q(box), tree, "z", claims, lemmas={}, phase={}) == set()


def test_a_false_claim_is_refuted_not_proven():
    net = abs_trick()
    box = Box(np.array([-1.0]), np.array([1.0]))
    claims = {"relu1[0]": (0, "inactive")}  # false everywhere: z = 1/1024
    tree, proven, stats = prove_layer_by_pieces(net, box, "z", claims, lemmas={}, phase={},
                                                deadline=time.monotonic() + 30)
    assert proven == set() and stats["refuted"] == ["relu1[0]"]


@given(networks(inputs=(1, 2), hidden=(1, 4), layers=(2, 3)), st.data())
@SETTINGS
def test_prove_claims_with_crown_pieces_never_proves_a_false_claim_and_rechecks(net, data):
    box = data.draw(boxes(net.input_size, degenerate=False))
    truth = extrema(net, box)
    idx = neuron_index(net)
    claims = {nid: data.draw(st.sampled_from(["active", "inactive"])) for nid in net.neurons()}
    res = prove_claims(net, box, claims, time_limit=0.0, max_nodes=1, input_split=False,
                       crown_budget=5.0, crown_pieces=64)
    for nid, p in res.proofs.items():
        if p.status != "proven":
            continue
        zmax, xmax, zmin, xmin = truth[nid]
        pre, row, _ = idx[nid]
        if p.claim == "inactive" and zmax > 1e-9:
            assert evaluate_exact_all(net, xmax)[pre][row] <= 0, ("false inactive claim proven", nid)
        if p.claim == "active" and zmin < -1e-9:
            assert evaluate_exact_all(net, xmin)[pre][row] >= 0, ("false active claim proven", nid)
    claims_json = json.loads(json.dumps([p.to_json() for p in res.proofs.values()]))
    trees = json.loads(json.dumps(res.trees))
    verdict = recheck_claims(net, _q(box), claims_json, res.lemmas, trees=trees)
    assert all(verdict[n] for n, p in res.proofs.items() if p.status == "proven")
    if any(p.method == "crown-split" for p in res.proofs.values()):
        # without the trees those claims do not check
        bare = recheck_claims(net, _q(box), claims_json, res.lemmas)
        assert not all(bare[n] for n, p in res.proofs.items() if p.method == "crown-split")


def test_crown_pieces_prove_a_deep_claim_end_to_end():
    net = abs_trick()
    box = Box(np.array([-1.0]), np.array([1.0]))
    res = prove_claims(net, box, {"relu1[0]": "active"}, time_limit=0.0, max_nodes=1, input_split=False,
                       crown_budget=10.0)
    assert res.proofs["relu1[0]"].status == "proven" and res.proofs["relu1[0]"].method == "crown-split"
    verdict = recheck_claims(net, _q(box), [p.to_json() for p in res.proofs.values()], res.lemmas,
                             trees=res.trees)
    assert verdict["relu1[0]"] is True and all(verdict.values())
    # malformed trees (not a mapping, claims not a mapping) prove nothing, without a crash
    claims_json = [p.to_json() for p in res.proofs.values()]
    for bad in (["z"], {"z": {"claims": 5, "tree": 3}}, {"z": {"claims": {"relu1[0]": [0, "active"]}, "tree": []}}):
        assert recheck_claims(net, _q(box), claims_json, res.lemmas, trees=bad)["relu1[0]"] is False
    # the same claim without a budget stays open (branch and bound has no nodes)
    res0 = prove_claims(net, box, {"relu1[0]": "active"}, time_limit=0.0, max_nodes=1, input_split=False)
    assert res0.proofs["relu1[0]"].status == "open"


ACAS = os.path.join(ROOT, "..", "shared", "benchmarks", "acasxu")


@pytest.mark.skipif(not os.path.isdir(ACAS), reason="shared ACAS Xu benchmarks not present")
def test_acas_deep_layer_piece_tree_matches_float_split():
    # ACAS Xu 1_1 over the prop_1 box: layer 2's claims that the whole-box LP leaves open
    # are proven by exact pieces and rechecked from JSON
    from leo_verify.domain import parse_domain
    net = load(os.path.join(ACAS, "ACASXU_run2a_1_1_batch_2000.onnx"))
    box = parse_domain(os.path.join(ACAS, "prop_1.vnnlib"), n=net.input_size)
    pre = net.args(net.relus()[1][0])[0]
    fl = compute_bounds(net, box)[pre]
    # layer-2 units the whole-box bound cannot decide and 2,000 samples never see change sign
    claims = {}
    rng = np.random.default_rng(0)
    xs = rng.uniform(box.lower, box.upper, size=(2000, 5))
    from leo_verify.semantics import evaluate_all
    vals = evaluate_all(net, xs)[pre]
    for i, nid in enumerate(net.relus()[1][1].neurons):
        if fl[0][i] < 0 < fl[1][i]:
            if np.all(vals[:, i] < 0):
                claims[nid] = (i, "inactive")
            elif np.all(vals[:, i] > 0):
                claims[nid] = (i, "active")
    assert claims
    tree, proven, stats = prove_layer_by_pieces(net, box, pre, claims, lemmas={}, phase={},
                                                deadline=time.monotonic() + 60, max_pieces=300)
    assert proven  # at least one deep claim is proven exactly
    again = check_layer_tree(net, _q(box), json.loads(json.dumps(tree)), pre, claims, lemmas={}, phase={})
    assert again == proven


def test_cli_compress_certifies_with_a_piece_tree_and_recheck_catches_tampering(tmp_path):
    # end to end: the analysis proves relu1[0] active by splitting; compress re-proves it
    # exactly with a piece tree, folds it, certifies; recheck recomputes the tree
    import shutil
    import subprocess
    import sys
    from leo_verify.io.onnx import save_onnx
    model = tmp_path / "abs_trick.onnx"
    save_onnx(abs_trick(), str(model), dtype="float64")
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "leo_verify"]
    p = subprocess.run(cli + ["compress", str(model), "--domain", "box:-1,1", "-o", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((out / "proofs" / "certificate.json").read_text())
    methods = {c["neuron"]: c["method"] for c in doc["regions"][0]["claims"] if c["status"] == "proven"}
    assert methods.get("relu1[0]") == "crown-split", methods
    assert doc["regions"][0]["trees"]["z"]["claims"] == {"relu1[0]": [0, "active"]}
    assert not any(e["obligation"] == "stability:relu1[0]" for e in doc["smt2"])
    p = subprocess.run(cli + ["recheck", str(out), "--json"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0 and json.loads(p.stdout)["verdict"] == "certified", p.stdout + p.stderr
    # tampered tree: the first cut moved outside the box -> the claim, and the certificate, fail
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    doc["regions"][0]["trees"]["z"]["tree"]["split"]["at"] = "3"
    (bad / "proofs" / "certificate.json").write_text(json.dumps(doc))
    p = subprocess.run(cli + ["recheck", str(bad), "--json"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 2 and json.loads(p.stdout)["verdict"] == "not certified", p.stdout + p.stderr


def test_certify_api_uses_piece_trees_and_accepts_a_pieces_budget():
    # certify() on its own (no proofs from compress) proves the deep claim with a piece tree;
    # compress passes certify_options through to it
    from leo_verify.certify.certificate import certify
    from leo_verify.compressor import compress
    net = abs_trick()
    box = Box(np.array([-1.0]), np.array([1.0]))
    r = compress(net, box, certify=False)
    assert "relu1[0]" not in r.graph.neurons()  # folded: the analysis proved it active
    cert = certify(net, r.graph, box, {"relu1[0]": "active"}, fuzz_points=500)
    assert cert.verdict == "certified", [o.to_json() for o in cert.obligations if o.status != "proven"]
    assert cert.data["regions"][0]["trees"]["z"]["claims"] == {"relu1[0]": [0, "active"]}
    r2 = compress(net, box, certify_options={"pieces_budget": 30.0, "fuzz_points": 500})
    assert r2.report["certificate"]["verdict"] == "certified"


# -- many inputs: one exact CROWN bound of the whole box per layer ---------------------------
def _cancel_net(n_inputs=20):
    """Two identical, always-active units and a layer-2 unit ``h_A - h_B + 0.1``: intervals see
    ``[-1.9, 2.1]``, exact CROWN sees ``0.1`` (both units are linear on the box)."""
    from leo_verify.testing import mlp
    w1 = np.zeros((2, n_inputs))
    w1[:, 0], w1[:, 1] = 1.0, -1.0
    return mlp([w1, np.array([[1.0, -1.0]]), np.array([[1.0]])],
               [np.array([2.0, 2.0]), np.array([0.1]), np.array([0.0])])


def test_many_input_claims_are_proven_by_one_crown_bound_of_the_whole_box_and_recheck():
    net = _cancel_net()
    box = Box(np.zeros(20), np.ones(20))
    l1, l2 = [op.neurons for _, op in net.relus()]
    claims = {l1[0]: "active", l1[1]: "active", l2[0]: "active"}
    res = prove_claims(net, box, claims, time_limit=0.0, max_nodes=1)
    assert {n: p.method for n, p in res.proofs.items()} == \
        {l1[0]: "interval", l1[1]: "interval", l2[0]: "crown-split"}
    pre = net.args(net.relus()[1][0])[0]
    assert res.trees[pre] == {"claims": {l2[0]: [0, "active"]}, "tree": {"settles": [l2[0]]}, "pieces": 1}
    claims_json = json.loads(json.dumps([p.to_json() for p in res.proofs.values()]))
    trees = json.loads(json.dumps(res.trees))
    assert all(recheck_claims(net, _q(box), claims_json, res.lemmas, trees=trees).values())
    # the tree must name the very claim (direction included), and it is needed
    flipped = json.loads(json.dumps(trees))
    flipped[pre]["claims"][l2[0]] = [0, "inactive"]
    assert recheck_claims(net, _q(box), claims_json, res.lemmas, trees=flipped)[l2[0]] is False
    assert recheck_claims(net, _q(box), claims_json, res.lemmas)[l2[0]] is False
    # a false claim is not proven: the unit is 0.1 everywhere
    bad = prove_claims(net, box, {l2[0]: "inactive"}, time_limit=0.0, max_nodes=1)
    assert bad.proofs[l2[0]].status == "open"
    # without the whole-box pass an LP dual proves it (one LP per claim: the cost crown_root saves)
    off = prove_claims(net, box, claims, time_limit=0.0, max_nodes=1, crown_root=False)
    assert off.proofs[l2[0]].method == "lp-dual"


def test_claims_past_the_deadline_stay_open_except_interval_proofs():
    net = _cancel_net()
    box = Box(np.zeros(20), np.ones(20))
    l1, l2 = [op.neurons for _, op in net.relus()]
    res = prove_claims(net, box, {l1[0]: "active", l2[0]: "active"}, deadline=time.monotonic() - 1.0)
    assert res.proofs[l1[0]].status == "proven" and res.proofs[l1[0]].method == "interval"
    assert res.proofs[l2[0]].status == "open" and "deadline" in res.proofs[l2[0]].reason


def test_piece_pool_builds_the_same_tree_as_the_inline_run(monkeypatch):
    """compress --workers N: the pieces' exact bounds run on a process pool; results are used
    in submission order, so the tree (and what it proves) is the inline one."""
    from leo_verify.certify import crown_split
    from leo_verify.certify.crown_split import PiecePool
    net = abs_trick()
    box = Box(np.array([-1.0]), np.array([1.0]))
    pre = net.args(net.relus()[-1][0])[0]
    claims = {"relu1[0]": (0, "active")}
    inline = prove_layer_by_pieces(net, box, pre, claims, lemmas={}, phase={},
                                   deadline=time.monotonic() + 60)
    monkeypatch.setattr(crown_split, "POOL_AFTER", 0)  # the pool from the first round on
    pool = PiecePool(net, 2)
    try:
        pooled = prove_layer_by_pieces(net, box, pre, claims, lemmas={}, phase={},
                                       deadline=time.monotonic() + 60, pool=pool)
        assert pool.pool is not None  # the rounds did go to the processes
    finally:
        pool.close()
    assert inline[1] == pooled[1] == {"relu1[0]"}
    assert json.dumps(inline[0], sort_keys=True) == json.dumps(pooled[0], sort_keys=True)
    assert check_layer_tree(net, _q(box), pooled[0], pre, claims, lemmas={}, phase={}) == {"relu1[0]"}


def test_piece_pool_workers_run_single_threaded_blas(monkeypatch):
    """Two workers with two BLAS threads each spin against each other on 2 cores (2.5x slower
    measured): the workers start with one BLAS thread, and this process keeps its setting."""
    from leo_verify.certify.crown_split import _ONE_THREAD, _start_pool
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    pool = _start_pool(2, abs_trick())
    try:
        got = [pool.apply_async(os.getenv, (k,)).get(timeout=60) for k in _ONE_THREAD]
    finally:
        pool.terminate()
        pool.join()
    assert got == ["1"] * len(_ONE_THREAD)
    assert os.environ["OPENBLAS_NUM_THREADS"] == "7" and "OMP_NUM_THREADS" not in os.environ
