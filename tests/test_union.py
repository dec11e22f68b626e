"""Input domains that are unions of boxes: analysis, compression, certificate, recheck, check."""
from __future__ import annotations

import json
import os
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_cases import ROOT, copy_folder, edit_json, run_cli
from leo_verify.analysis.facts import Facts, NeuronFact
from leo_verify.analysis.union import merge_facts
from leo_verify.compressor import compress
from leo_verify.domain import Box, Domain, parse_union
from leo_verify.graph import Affine, Graph, Input, Output, Relu
from leo_verify.io.onnx import save_onnx
from leo_verify.semantics import evaluate, evaluate_exact

ACAS = os.path.join(ROOT, "..", "shared", "benchmarks", "acasxu")


def two_sided() -> Graph:
    """``y = relu(x0 - 1/2) + relu(x1 - 2)``: unit 0 is off on x0 <= 0.4 and on x0 >= 0.6;
    unit 1 is off on the whole [0, 1]^2."""
    g = Graph(name="two-sided")
    g.add("x", Input(2))
    g.add("fc1", Affine(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([-0.5, -2.0])), ["x"])
    g.add("relu1", Relu(["relu1[0]", "relu1[1]"]), ["fc1"])
    g.add("fc2", Affine(np.array([[1.0, 1.0]]), np.zeros(1)), ["relu1"])
    g.add("y", Output(1), ["fc2"])
    return g.lint(where="test")


BOXES = Domain((Box([0.0, 0.0], [0.375, 1.0]), Box([0.625, 0.0], [1.0, 1.0])), source="two boxes")


def test_a_unit_with_opposite_directions_on_two_boxes_is_kept():
    r = compress(two_sided(), BOXES, certify_options={"fuzz_points": 1000})
    assert r.report["certificate"]["verdict"] == "certified"
    kept = set(r.graph.neurons())
    assert "relu1[0]" in kept  # inactive on box 0, active on box 1: not stable on the union
    assert "relu1[1]" not in kept  # inactive on both boxes: dropped
    assert r.facts["relu1[0]"].status == "unstable" and r.facts["relu1[1]"].status == "stably_inactive"
    rng = np.random.default_rng(0)
    x = BOXES.sample(400, rng)
    assert np.array_equal(evaluate(r.graph, x), evaluate(two_sided(), x))
    # a naive per-box compression of box 1 alone would drop nothing but fold unit 0 as active:
    # it differs on box 0 -- the union must not be treated as its last box
    one = compress(two_sided(), BOXES.boxes[1], certify=False)
    x0 = BOXES.boxes[0].sample(100, rng)
    assert not np.allclose(evaluate(one.graph, x0), evaluate(two_sided(), x0)) or \
        "relu1[0]" in one.graph.neurons()


@given(st.lists(st.sampled_from(["stably_active", "stably_inactive", "unstable", "unknown"]), min_size=1,
                max_size=4))
@settings(max_examples=200, deadline=None)
def test_merged_status_is_stable_only_when_every_box_agrees(statuses):
    per = []
    for k, s in enumerate(statuses):
        f = NeuronFact("r[0]", "r", status=s, evidence="interval" if "stably" in s else "witness",
                       witness_pos=[float(k)] if s in ("unstable", "stably_active") else None,
                       witness_neg=[float(k)] if s in ("unstable", "stably_inactive") else None)
        per.append(Facts({"r[0]": f}))
    got = merge_facts(per)["r[0]"].status
    if len(set(statuses)) == 1 and statuses[0].startswith("stably"):
        assert got == statuses[0]
    else:
        assert got in ("unstable", "unknown")


def test_json_list_and_repeated_flags_give_the_same_union(tmp_path):
    p = tmp_path / "u.json"
    p.write_text(json.dumps([{"lower": [0, 0], "upper": [0.375, 1]}, {"lower": [0.625, 0], "upper": [1, 1]}]))
    a = parse_union(str(p), n=2)
    b = parse_union(["box:0,0.375", "box:0.625,1"], n=2)
    assert len(a) == len(b) == 2
    assert a.exact_boxes()[0] == ([Fraction(0)] * 2, [Fraction(3, 8), Fraction(1)])


@pytest.fixture(scope="module")
def union_folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("union")
    model = str(base / "two_sided.onnx")
    save_onnx(two_sided(), model, dtype="float32")
    dom = base / "u.json"
    dom.write_text(json.dumps([{"lower": [0, 0], "upper": [0.375, 1]}, {"lower": [0.625, 0], "upper": [1, 1]}]))
    out = str(base / "out")
    code, so, se = run_cli(["compress", model, "--domain", str(dom), "-o", out])
    assert code == 0, so + se
    return out, model, str(dom)


def test_union_certificate_has_per_box_obligations_and_rechecks(union_folder):
    out, model, dom = union_folder
    doc = json.load(open(os.path.join(out, "proofs", "certificate.json")))
    assert len(doc["regions"]) == 2
    ids = {o["id"] for o in doc["obligations"]}
    assert {"stability:relu1[1]@0", "stability:relu1[1]@1"} <= ids
    report = json.load(open(os.path.join(out, "report.json")))
    assert len(report["domain"]["boxes"]) == 2
    code, so, se = run_cli(["recheck", out, "--json", "--domain", dom])
    assert code == 0 and json.loads(so)["verdict"] == "certified", so + se
    # pinning only one of the two boxes is another question
    code, so, _ = run_cli(["recheck", out, "--json", "--domain", "box:0,1"])
    assert code == 2 and "domain:requested" in json.loads(so)["failed"]


def test_a_claim_proven_on_one_box_only_does_not_certify(union_folder, tmp_path):
    out, model, dom = union_folder
    bad = copy_folder(out, tmp_path / "bad")

    def drop_box(d):  # the second box's proof of relu1[1] replaced by nothing
        d["regions"][1]["claims"] = [c for c in d["regions"][1]["claims"] if c["neuron"] != "relu1[1]"]
    edit_json(os.path.join(bad, "proofs", "certificate.json"), drop_box)
    code, so, _ = run_cli(["recheck", bad, "--json"])
    assert code == 2 and json.loads(so)["verdict"] == "not certified"


def test_check_over_a_union(union_folder, tmp_path):
    out, model, dom = union_folder
    code, so, se = run_cli(["check", model, os.path.join(out, "compressed.onnx"), "--domain", dom, "--exact"])
    assert code == 0, so + se
    # a copy whose unit 0 is dropped differs on box 1 only: a counterexample from that box
    g = two_sided()
    h = Graph(name="wrong")
    h.add("x", Input(2))
    h.add("fc1", Affine(np.array([[0.0, 1.0]]), np.array([-2.0])), ["x"])
    h.add("relu1", Relu(["relu1[1]"]), ["fc1"])
    h.add("fc2", Affine(np.array([[1.0]]), np.zeros(1)), ["relu1"])
    h.add("y", Output(1), ["fc2"])
    wrong = str(tmp_path / "wrong.onnx")
    save_onnx(h.lint(where="test"), wrong, dtype="float32")
    code, so, se = run_cli(["check", model, wrong, "--domain", dom, "--epsilon", "1e-3"])
    assert code == 1, so + se
    assert g is not None


@pytest.mark.skipif(not os.path.isdir(ACAS), reason="shared ACAS Xu benchmarks not present")
def test_acas_prop6_two_boxes_compress_certify_and_agree(tmp_path):
    model = os.path.join(ACAS, "ACASXU_run2a_1_1_batch_2000.onnx")
    prop = os.path.join(ACAS, "prop_6.vnnlib")
    out = str(tmp_path / "p6")
    # without a budget the MILPs on these wide boxes take half an hour; the budget bounds the run
    # and what is not decided in time is kept (sound), so the result is still certified
    code, so, se = run_cli(["compress", model, "--domain", prop, "-o", out, "--no-checkpoint",
                            "--budget", "60", "--query-time-limit", "5"])
    assert code == 0, so + se
    report = json.load(open(os.path.join(out, "report.json")))
    assert len(report["domain"]["boxes"]) == 2
    assert report["after"]["neurons"] < report["before"]["neurons"]
    from leo_verify.io import load
    a, b = load(model), load(os.path.join(out, "compressed.onnx"))
    dom = parse_union(prop, n=5)
    x = dom.sample(2000, np.random.default_rng(1))
    assert np.allclose(evaluate(a, x), evaluate(b, x), atol=1e-4)
    xs = [x[0], x[-1]]
    for p in xs:
        fa = evaluate_exact(a, [Fraction(float(v)) for v in p])
        assert len(fa) == 5
    code, so, se = run_cli(["recheck", out, "--json", "--domain", prop])
    assert code == 0, so + se
