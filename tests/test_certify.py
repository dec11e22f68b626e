"""Certification: exact arithmetic, LP-dual bounds, claim proofs, rewrite identity, eps, mutations."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import z3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leo_verify.analysis import analyze
from leo_verify.analysis.witness import neuron_index
from leo_verify.certify.certificate import certify
from leo_verify.certify.claims import prove_claims
from leo_verify.kernel.claims import check_piece_tree, recheck_claims
from leo_verify.kernel.deviation import check_rounding, deviation_bound
from leo_verify.kernel.exact import Q, round_out
from leo_verify.kernel.identity import check_identity
from leo_verify.certify.lp import build_lp, verify_multipliers
from leo_verify.kernel.intervals import fraction_lists, node_bounds
from leo_verify.certify.z3enc import encode_prefix
from leo_verify.domain import Box
from leo_verify.graph import Affine
from leo_verify.passes.runner import compress_graph
from leo_verify.semantics import evaluate_exact, evaluate_exact_all
from leo_verify.testing import boxes, mlp, networks, points_in

from groundtruth import abs_trick, extrema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "examples", "nets", "tiny_mlp.onnx")
TINY_DOM = os.path.join(ROOT, "examples", "nets", "tiny_mlp_domain.json")
DIGITS = os.path.join(ROOT, "examples", "nets", "digits", "digits_64x25x25x10_l1_1e-03.onnx")
CLI = [sys.executable, "-m", "leo_verify"]

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

floats = st.floats(-4, 4, allow_nan=False, width=32)


# -- exact arithmetic -------------------------------------------------------------------
@given(st.lists(floats, min_size=6, max_size=6), st.lists(floats, min_size=6, max_size=6))
@SETTINGS
def test_q_matches_fractions(a, b):
    qa, qb = Q.of(np.array(a).reshape(2, 3)), Q.of(np.array(b).reshape(3, 2))
    fa = np.array([Fraction(v) for v in a], dtype=object).reshape(2, 3)
    fb = np.array([Fraction(v) for v in b], dtype=object).reshape(3, 2)
    assert ((qa @ qb).fractions() == fa.dot(fb)).all()
    assert ((qa + Q.of(np.array(b[:6]).reshape(2, 3))).fractions()
            == fa + np.array([Fraction(v) for v in b], dtype=object).reshape(2, 3)).all()
    assert (qa.pos().fractions() == np.vectorize(lambda v: max(v, 0), otypes=[object])(fa)).all()


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=12))
@SETTINGS
def test_q_of_floats_is_the_exact_rational_of_every_float(values):
    """The vectorised conversion (no Fraction per entry) against Fraction(float), incl.
    subnormals, signed zeros and the extremes of the range."""
    arr = np.array(values)
    q = Q.of_floats(arr)
    assert [Fraction(int(n), q.den) for n in q.num] == [Fraction(v) for v in values]
    with pytest.raises(ValueError):
        Q.of_floats(np.array([1.0, np.inf]))


@given(networks(inputs=(1, 3), hidden=(1, 4), layers=(1, 4)), st.data())
@SETTINGS
def test_node_bounds_from_a_prefix_equal_the_full_computation(net, data):
    """The layer loop of prove_claims / recheck_claims reuses the nodes before the layer it
    adds facts to: the bounds must be those of a full recomputation with the same facts."""
    box = data.draw(boxes(net.input_size)).exact_bounds()
    lemmas, phase, prefix = {}, {}, {}
    for relu, op in net.relus():
        pre = net.args(relu)[0]
        b = node_bounds(net, box, lemmas=lemmas, phase=phase, upto=pre, start=prefix)
        full = node_bounds(net, box, lemmas=lemmas, phase=phase, upto=pre)
        assert list(b) == list(full) and all(b[n][0] == full[n][0] and b[n][1] == full[n][1] for n in full)
        prefix = {n: v for n, v in b.items() if n != pre}
        lo, hi = b[pre]
        # new facts on this layer: a lemma halving one unit's range, phases where they hold
        i = data.draw(st.integers(0, op.size - 1))
        mid = (lo.fraction(i) + hi.fraction(i)) / 2
        lnum = [lo.fraction(k) for k in range(op.size)]
        lnum[i] = mid
        lemmas[pre] = (Q.of(lnum), hi)
        for k, nid in enumerate(op.neurons):
            if hi.fraction(k) <= 0:
                phase[nid] = "inactive"
            elif lnum[k] >= 0:
                phase[nid] = "active"


def _nearest_f32_reference(ex, em) -> bool:
    """|em - ex| <= ulp(em) / 2, one Fraction at a time (the old check_rounding)."""
    return all(abs(Fraction(float(v)) - e) <= Fraction(float(np.spacing(np.abs(np.float32(v))))) / 2
               for v, e in zip(em.ravel(), ex.ravel()))


@given(st.lists(st.fractions(min_value=-4, max_value=4, max_denominator=10 ** 12), min_size=4, max_size=4),
       st.integers(0, 3), st.sampled_from([0, 1, -1]))
@SETTINGS
def test_check_rounding_matches_the_fraction_reference(vals, where, nudge):
    ex = np.array(vals, dtype=object).reshape(2, 2)
    em = np.array([float(np.float32(float(v))) for v in vals]).reshape(2, 2)
    if nudge:  # one float32 ulp away from the nearest value at one entry
        i = np.unravel_index(where, em.shape)
        em[i] = float(np.nextafter(np.float32(em[i]), np.float32(np.inf * nudge)))
    exact = mlp([np.zeros((2, 2)), np.eye(2)], [np.zeros(2), np.zeros(2)])
    exact.replace("fc0", Affine.from_rational(ex, np.array([Fraction(0)] * 2, dtype=object)))
    emitted = exact.copy()
    emitted.replace("fc0", Affine(em, np.zeros(2)))
    ok, why = check_rounding(exact, emitted, dtype=np.float32)
    assert ok == _nearest_f32_reference(ex, em), why


@pytest.mark.parametrize("r, n, m, abits, bbits, vector", [
    (20, 50, 50, 60, 44, False),  # the exact-CROWN shape (ACAS Xu)
    (5, 130, 7, 200, 120, False),  # many limbs on both sides
    (3, 3000, 2, 64, 53, False),  # a long inner dimension shrinks the limbs
    (40, 64, 30, 31, 24, False),
    (1, 300, 50, 100, 44, True),  # matrix @ vector
    (2, 5, 3, 300, 300, False),  # below the limb threshold: numpy's object loop
])
def test_limb_matmul_is_exact(r, n, m, abits, bbits, vector):
    # the float64-limb product must equal Python's integer arithmetic exactly
    import random
    from leo_verify.kernel.exact import int_matmul
    rnd = random.Random(r * n * m)
    a = np.array([[rnd.randint(-(1 << abits), 1 << abits) for _ in range(n)] for _ in range(r)], dtype=object)
    b = np.array([[rnd.randint(-(1 << bbits), 1 << bbits) for _ in range(m)] for _ in range(n)], dtype=object)
    if vector:
        b = b[:, 0]
    a[0, 0] = -(1 << abits)  # the extremes
    b[-1] = (1 << bbits) - 1
    assert (int_matmul(a, b) == a.dot(b)).all()


@given(st.fractions(min_value=-1000, max_value=1000, max_denominator=10 ** 9))
def test_round_out_is_outward_and_short(v):
    up, down = round_out(v, up=True, bits=12), round_out(v, up=False, bits=12)
    assert down <= v <= up
    assert (up == 0) == (v == 0) and (down == 0) == (v == 0)
    assert up.denominator & (up.denominator - 1) == 0  # dyadic


# -- LP duals: ANY multipliers give a valid bound ------------------------------------------
@given(networks(inputs=(1, 3), hidden=(1, 4), layers=(2, 2)), st.data())
@SETTINGS
def test_any_multipliers_give_a_valid_lower_bound(net, data):
    box = data.draw(boxes(net.input_size, degenerate=False))
    relus = net.relus()
    pre = net.args(relus[-1][0])[0]
    b = node_bounds(net, box.exact_bounds(), upto=pre)
    lp = build_lp(net, box.exact_bounds(), b, upto=pre)
    lam = Q.of(data.draw(st.lists(floats, min_size=lp.num_rows, max_size=lp.num_rows)))
    row = data.draw(st.integers(0, net.size_of(pre) - 1))
    c = Q.of([1 if v == lp.node_vars[pre][row] else 0 for v in range(lp.num_vars)])
    lb = verify_multipliers(lp, c, lam)
    # the true minimum of the pre-activation over the box is >= any dual bound
    for _ in range(20):
        x = data.draw(points_in(box))
        assert evaluate_exact_all(net, x)[pre][row] >= lb


# -- claims: never prove a false claim; prove the true ones -----------------------------
@given(networks(inputs=(1, 3), hidden=(1, 4), layers=(1, 2)), st.data())
@SETTINGS
def test_claims_proofs_are_sound_and_rechecked(net, data):
    box = data.draw(boxes(net.input_size))
    truth = extrema(net, box)
    idx = neuron_index(net)
    claims = {}
    for nid in net.neurons():
        claims[nid] = data.draw(st.sampled_from(["active", "inactive"]))
    res = prove_claims(net, box, claims, time_limit=0.5, max_nodes=60)
    for nid, p in res.proofs.items():
        if p.status != "proven":
            continue
        zmax, xmax, zmin, xmin = truth[nid]
        pre, row, _ = idx[nid]
        if p.claim == "inactive" and zmax > 1e-9:
            assert evaluate_exact_all(net, xmax)[pre][row] <= 0, ("false inactive claim proven", nid)
        if p.claim == "active" and zmin < -1e-9:
            assert evaluate_exact_all(net, xmin)[pre][row] >= 0, ("false active claim proven", nid)
    # recheck agrees with the prover, from the JSON alone
    verdict = recheck_claims(net, box.exact_bounds(), [p.to_json() for p in res.proofs.values()], res.lemmas)
    assert all(verdict[n] for n, p in res.proofs.items() if p.status == "proven")
    assert all(v for k, v in verdict.items() if k.startswith("lemma:"))


def test_true_claims_with_margin_are_proven():
    # 2 inputs in [0,1]; unit 0: x0 + x1 + 1 > 0 (active), unit 1: -x0 - 1 < 0 (inactive),
    # unit 2 unstable; layer 2 inactive only through the case split of unit 2
    w1 = [[1, 1], [-1, 0], [1, -1]]
    b1 = [1, -1, 0]
    w2 = [[0, 0, 1], [-1, 0, 0]]
    b2 = [-1.5, 0.5]
    net = mlp([np.array(w1, float), np.array(w2, float), np.eye(2)], [np.array(b1, float), np.array(b2, float), np.zeros(2)])
    box = Box(np.zeros(2), np.ones(2))
    claims = {"relu0[0]": "active", "relu0[1]": "inactive", "relu1[0]": "inactive", "relu1[1]": "inactive"}
    res = prove_claims(net, box, claims)
    st_ = {n: p.status for n, p in res.proofs.items()}
    assert st_ == {"relu0[0]": "proven", "relu0[1]": "proven", "relu1[0]": "proven", "relu1[1]": "proven"}
    # a false claim (relu1[1] = -(x0+x1+1) + 0.5 > 0? no: it is <= -0.5; flip to active) stays open
    res2 = prove_claims(net, box, {**claims, "relu1[1]": "active", "relu0[2]": "inactive"})
    assert res2.proofs["relu1[1]"].status == "open"
    assert res2.proofs["relu0[2]"].status == "open"


def test_borderline_max_exactly_zero_is_proven_and_plus_epsilon_is_not():
    # z = x - 1 on [0, 1]: max exactly 0 -> inactive (y = 0 everywhere); z = x - 1 + 2^-30: not
    for bias, ok in ((-1.0, True), (-1.0 + 2.0 ** -30, False)):
        net = mlp([np.array([[1.0]]), np.array([[1.0]])], [np.array([bias]), np.zeros(1)])
        res = prove_claims(net, Box(np.zeros(1), np.ones(1)), {"relu0[0]": "inactive"})
        assert (res.proofs["relu0[0]"].status == "proven") is ok


# -- the rewrite identity ------------------------------------------------------------------
def _facts_and_compress(net, box):
    facts = analyze(net, box, method="fast", query_time_limit=5, seed=0)
    g, _ = compress_graph(net, facts.stable_map())
    return facts, g


@given(networks(inputs=(1, 3), hidden=(1, 5), layers=(1, 3)), st.data())
@SETTINGS
def test_identity_of_a_correct_rewrite_is_proven_and_z3_agrees(net, data):
    box = data.draw(boxes(net.input_size))
    facts, g = _facts_and_compress(net, box)
    res = prove_claims(net, box, facts.stable_map())
    ident = check_identity(net, g, res.proven)
    assert ident.proven, ident.to_json()
    # independent check: z3 finds no x in the box where the outputs differ
    if len(net.neurons()) <= 10:
        s = z3.Solver()
        vf = encode_prefix(net, box.exact_bounds(), s, upto=net.output_name, tag="f_")
        vg = encode_prefix(g, box.exact_bounds(), s, upto=g.output_name, tag="g_")
        xf, xg = vf[net.input_name], vg[g.input_name]
        s.add(*[a == b for a, b in zip(xf, xg)])
        outs = [(a if a is not None else z3.RealVal(0)) != (b if b is not None else z3.RealVal(0))
                for a, b in zip(vf[net.output_name], vg[g.output_name])]
        s.add(z3.Or(*outs))
        s.set("timeout", 30000)
        assert s.check() == z3.unsat


def test_identity_refutes_dropping_an_unstable_neuron():
    net = mlp([np.array([[1.0], [1.0]]), np.array([[1.0, 1.0]])], [np.array([-0.5, -2.0]), np.zeros(1)])
    box = Box(np.zeros(1), np.ones(1))
    good = {"relu0[1]": "inactive"}
    wrong = {"relu0[0]": "inactive", "relu0[1]": "inactive"}  # relu0[0] is unstable on [0,1]
    g_wrong, _ = compress_graph(net, wrong)
    res = prove_claims(net, box, wrong)
    assert res.proofs["relu0[0]"].status == "open"
    ident = check_identity(net, g_wrong, res.proven)
    assert not ident.proven and "relu0[0]" in ident.output["detail"]
    g_good, _ = compress_graph(net, good)
    assert check_identity(net, g_good, prove_claims(net, box, good).proven).proven


# -- eps and rounding -------------------------------------------------------------------
@given(networks(inputs=(1, 3), hidden=(2, 5), layers=(1, 3)), st.data())
@SETTINGS
def test_deviation_bound_holds_exactly(net, data):
    box = data.draw(boxes(net.input_size))
    # an "emitted" copy with float32-rounded, slightly perturbed weights
    emitted = net.copy()
    for name in emitted.nodes():
        op = emitted.op(name)
        if op.kind == "affine":
            emitted.replace(name, Affine((op.weight * 1.001).astype(np.float32).astype(np.float64), op.bias))
    eps, why = deviation_bound(net, emitted, box.exact_bounds())
    assert eps is not None, why
    for _ in range(10):
        x = data.draw(points_in(box))
        a, b = evaluate_exact(net, x), evaluate_exact(emitted, x)
        assert max(abs(u - v) for u, v in zip(a, b)) <= eps


def test_rounding_check_catches_a_changed_weight():
    net = mlp([np.array([[0.1, 0.2], [0.3, -0.4]]), np.array([[1.0, -1.0]])], [np.zeros(2), np.zeros(1)])
    exact = net.copy()
    r32 = net.copy()
    for name in r32.nodes():
        op = r32.op(name)
        if op.kind == "affine":
            r32.replace(name, Affine(op.weight.astype(np.float32).astype(np.float64), op.bias))
    # the float64 net's weights rounded to float32 are within half an ulp
    assert check_rounding(exact, r32, dtype=np.float32)[0]
    bad = r32.copy()
    w = np.array(bad.op("fc0").weight)
    w[0, 1] = np.float32(w[0, 1] + 1e-3)
    bad.replace("fc0", Affine(w, bad.op("fc0").bias))
    ok, why = check_rounding(exact, bad, dtype=np.float32)
    assert not ok and "fc0" in why and "[0, 1]" in why


# -- the whole certificate, and its mutations ------------------------------------------------
def _tiny():
    from leo_verify.domain import parse_domain
    from leo_verify.io import load
    g = load(TINY)
    return g, parse_domain(TINY_DOM, n=g.input_size)


def test_certificate_of_a_correct_compression_is_certified():
    from leo_verify.compressor import compress
    g, box = _tiny()
    r = compress(g, box, certify_options={"fuzz_points": 2000})
    assert r.report["certificate"]["verdict"] == "certified"
    assert r.report["certificate"]["obligations"]["open"] == 0
    kinds = {o["kind"] for o in r.report["obligations"]}
    assert kinds == {"stability", "rewrite", "rounding", "deviation", "fuzz"}


def test_spent_budget_cuts_the_fuzz_campaign_short_but_not_the_proofs(monkeypatch):
    """compress --budget: certification past the deadline still proves every obligation (an
    obligation cut short would leave the certificate open); only the falsification campaign,
    evidence rather than proof, is shortened, and its detail says so."""
    import time
    from leo_verify.compressor import compress
    from leo_verify.certify import certificate
    monkeypatch.setattr(certificate, "_FUZZ_MIN_SECONDS", 0.0)  # the tiny net's campaign is faster
    g, box = _tiny()
    r = compress(g, box, certify=False, proven_claims_only=True)
    r.deadline = time.monotonic() - 1.0
    cert = r.certify(box, fuzz_points=2000)
    assert cert.verdict == "certified"
    fuzz = [o for o in cert.obligations if o.kind == "fuzz"]
    assert fuzz and all(o.status == "passed" and "cut short by the budget" in o.detail for o in fuzz)
    r.deadline = None
    again = r.certify(box, fuzz_points=2000)
    assert all("cut short" not in o.detail for o in again.obligations if o.kind == "fuzz")


def test_mutation_changed_emitted_weight_is_not_certified():
    from leo_verify.compressor import compress
    from leo_verify.io.onnx import graph_from_onnx_model, to_onnx_model
    g, box = _tiny()
    r = compress(g, box, certify=False)
    emitted = graph_from_onnx_model(to_onnx_model(r.graph))
    name = [n for n in emitted.nodes() if emitted.op(n).kind == "affine"][1]
    w = np.array(emitted.op(name).weight)
    w[0, 0] += 1e-3
    emitted.replace(name, Affine(w, emitted.op(name).bias))
    cert = r.certify(box, emitted={"compressed.onnx": emitted}, fuzz_points=2000)
    assert cert.verdict == "not certified"
    bad = {o.id for o in cert.open}
    assert "rounding:compressed.onnx" in bad


def _flipped_facts():
    """The tiny net's facts with one unstable neuron falsely claimed stably inactive."""
    from leo_verify.analysis.facts import STABLY_INACTIVE
    g, box = _tiny()
    facts = analyze(g, box, method="fast", query_time_limit=5)
    victim = next(n for n, f in facts.neurons.items() if f.status == "unstable")
    facts.neurons[victim].status = STABLY_INACTIVE
    facts.neurons[victim].evidence = "interval"
    return g, box, facts, victim


def test_mutation_flipped_claim_is_not_certified_and_fuzz_refutes():
    from leo_verify.compressor import compress
    g, box, facts, victim = _flipped_facts()
    # a rewrite that trusts the (wrong) float facts, then certification
    r = compress(g, box, facts=facts, proven_claims_only=False, certify_options={"fuzz_points": 2000})
    cert = r.certificate
    assert cert.verdict == "not certified"
    by_id = {o.id: o for o in cert.obligations}
    assert by_id[f"stability:{victim}"].status == "open"
    assert by_id["rewrite:output"].status == "open"
    # the dropped unstable unit changes outputs: the campaign finds and replays it
    assert by_id["fuzz:compressed.onnx"].status == "refuted", by_id["fuzz:compressed.onnx"].detail


def test_default_compress_uses_only_exactly_proven_claims():
    from leo_verify.compressor import compress
    g, box, facts, victim = _flipped_facts()
    r = compress(g, box, facts=facts, certify_options={"fuzz_points": 2000})
    assert victim in r.graph.neurons()  # the unproven claim was not used: its neuron stays
    assert victim in r.report["claims"]["not_proven"]
    assert r.report["certificate"]["verdict"] == "certified"


# -- CLI: compress writes proofs, recheck reproduces; tampering is caught -----------------
def _run(args, **kw):
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=600, cwd=ROOT, **kw)


def test_cli_compress_certifies_and_recheck_reproduces(tmp_path):
    out = tmp_path / "out"
    p = _run(["compress", DIGITS, "--domain", "box:0,1", "-o", str(out), "--query-time-limit", "5"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "CERTIFIED" in p.stdout
    doc = json.loads((out / "proofs" / "certificate.json").read_text())
    assert doc["verdict"] == "certified"
    for ent in doc["smt2"]:
        assert (out / "proofs" / ent["file"]).exists() and ent["expected"] == "unsat"
    p = _run(["recheck", str(out), "--json"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["verdict"] == "certified"

    # tamper 1: a multiplier of a stored LP proof -> that claim no longer checks
    t1 = tmp_path / "t1"
    shutil.copytree(out, t1)
    doc1 = json.loads((t1 / "proofs" / "certificate.json").read_text())
    lemmas = doc1["regions"][0]["lemmas"]
    if lemmas:
        k = next(iter(lemmas[0]["multipliers"]))
        lemmas[0]["multipliers"][k] = "0"
        lemmas[0]["value"] = str(Fraction(lemmas[0]["value"]) - 1 if lemmas[0]["side"] == "upper"
                                 else Fraction(lemmas[0]["value"]) + 1)
    else:  # no LP lemma on this net: claim an interval proof for a wrong side instead
        c0 = doc1["regions"][0]["claims"][0]
        c0["claim"] = "active" if c0["claim"] == "inactive" else "inactive"
    (t1 / "proofs" / "certificate.json").write_text(json.dumps(doc1))
    p = _run(["recheck", str(t1), "--json"])
    assert p.returncode == 2 and json.loads(p.stdout)["verdict"] == "not certified"

    # tamper 2: the emitted network changed after certification
    t2 = tmp_path / "t2"
    shutil.copytree(out, t2)
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(t2 / "compressed.onnx"))
    init = m.graph.initializer[0]
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 1e-3
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(m, str(t2 / "compressed.onnx"))
    p = _run(["recheck", str(t2), "--json"])
    assert p.returncode == 2
    failed = json.loads(p.stdout)["failed"]
    assert "hash:compressed.onnx" in failed and "rounding:compressed.onnx" in failed


def test_smt2_files_are_unsat_under_z3(tmp_path):
    out = tmp_path / "out"
    p = _run(["compress", TINY, "--domain", TINY_DOM, "-o", str(out)])
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((out / "proofs" / "certificate.json").read_text())
    assert doc["smt2"], "the tiny net has a claim proven by branching: it must have an SMT-LIB file"
    for ent in doc["smt2"]:
        s = z3.Solver()
        s.from_file(str(out / "proofs" / ent["file"]))
        assert str(s.check()) == ent["expected"]


def test_smt2_statements_past_the_deadline_are_not_written_and_not_indexed(tmp_path):
    """compress --budget: SMT-LIB files are an extra re-check, written only while the budget
    lasts; the index lists those written (recheck never reads them)."""
    import time as _time
    from leo_verify.certify.proofs import write_proofs
    from leo_verify.compressor import compress
    from leo_verify.io.onnx import save_onnx
    from leo_verify.util import sha256_file
    g, box = _tiny()
    r = compress(g, box, certify=False, proven_claims_only=True)
    for when, out in ((None, tmp_path / "all"), (_time.monotonic() - 1.0, tmp_path / "late")):
        out.mkdir()
        save_onnx(r.graph, str(out / "compressed.onnx"))
        cert = r.certify(box, fuzz_points=500)
        skipped: list = []
        write_proofs(str(out), cert, original=r.original, compressed=r.graph, model_sha=sha256_file(TINY),
                     emitted={"compressed.onnx": str(out / "compressed.onnx")}, deadline=when,
                     smt2_skipped=skipped)
        doc = json.loads((out / "proofs" / "certificate.json").read_text())
        written = sorted(f.name for f in (out / "proofs").glob("*.smt2"))
        assert sorted(e["file"] for e in doc["smt2"]) == written
        if when is None:
            assert written and not skipped
            n_all = len(written)
        else:
            assert not written and len(skipped) == n_all
            assert all(o.get("smt2") is None for o in doc["obligations"])


# -- claims proven piece by piece -----------------------------------------------------
def test_pieces_prove_what_the_whole_box_relaxation_cannot_and_recheck():
    from leo_verify.certify.pieces import prove_by_pieces
    import time as _time
    # z = relu(x) - relu(-x) - x + 1/1024 = 1/1024 > 0 for every x (active), but the
    # triangle relaxation over [-1, 1] allows z < 0 at x = 0
    net = abs_trick()
    box = Box(np.array([-1.0]), np.array([1.0]))
    claims = {"relu1[0]": "active"}
    whole = prove_claims(net, box, claims, time_limit=0.0, max_nodes=1)
    assert whole.proofs["relu1[0]"].status == "open"  # no branching allowed: the relaxation fails
    tree, got = prove_by_pieces(net, box, claims, claims, deadline=_time.monotonic() + 30, time_limit=0.0,
                                max_nodes=1)
    assert got == {"relu1[0]"}
    assert check_piece_tree(net, tree, box.exact_bounds(), claims) == {"relu1[0]"}
    assert "split" in tree and tree["proves"] == []
    # tampering: a split point outside the piece, or a multiplier changed, proves nothing
    bad = json.loads(json.dumps(tree))
    bad["split"]["at"] = "5"
    assert check_piece_tree(net, bad, box.exact_bounds(), claims) == set()


def test_package_compress_can_be_called_twice():
    import leo_verify
    import leo_verify.compressor  # noqa: F401  (the implementation module imported first)
    g, box = _tiny()
    for _ in range(2):
        r = leo_verify.compress(g, box, certify=False)
        assert r.graph.neurons()
    assert callable(leo_verify.compress)
