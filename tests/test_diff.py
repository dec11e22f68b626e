"""The differential prover of ``check`` (issue 16): exact bounds, split trees, check certificates.

* the kernel's exact differential bounds contain every exactly evaluated
  difference of the two networks (hypothesis-drawn networks, pairs and boxes);
* a tree the prover builds re-checks in the kernel, and a false claim does not;
* ``check -o`` + ``recheck RESULT.json`` end to end, and a hostile edit of any
  bound field of RESULT.json (or of network B, re-hashed) gives NOT CERTIFIED.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leo_verify import cli
from leo_verify.certify.equivalence import check_equivalence
from leo_verify.domain import Box
from leo_verify.errors import DataError
from leo_verify.graph import Affine
from leo_verify.io.onnx.writer import save_onnx
from leo_verify.kernel import diff, diff_tree
from leo_verify.kernel.exact import ProofInvalid, Q
from leo_verify.kernel.recheck_check import recheck_check
from leo_verify.semantics import evaluate_exact
from leo_verify.testing import boxes, mlp, networks


def perturbed(f, scale: float, seed: int, *, prune: float = 0.0):
    """``f`` with every weight moved by up to ``scale`` (relative) and a share pruned to 0."""
    rng = np.random.default_rng(seed)
    g = f.copy()
    for name, op in list(g.items()):
        if op.kind == "affine":
            w = op.weight * (1 + scale * rng.uniform(-1, 1, op.weight.shape))
            if prune:
                w[rng.uniform(size=w.shape) < prune] = 0.0
            g.replace(name, Affine(w.astype(np.float32).astype(np.float64), op.bias))
    return g


def widened(f, extra: int, seed: int):
    """The same function with ``extra`` dead units (zero weights, bias -1) added to the first layer."""
    rng = np.random.default_rng(seed)
    ws, bs = [], []
    affines = [n for n, op in f.items() if op.kind == "affine"]
    for n in affines:
        ws.append(f.op(n).weight.copy())
        bs.append(f.op(n).bias.copy())
    ws[0] = np.vstack([ws[0], np.zeros((extra, ws[0].shape[1]))])
    bs[0] = np.concatenate([bs[0], -np.ones(extra)])
    ws[1] = np.hstack([ws[1], rng.normal(size=(ws[1].shape[0], extra)).astype(np.float32)])
    return mlp(ws, bs, name="wide")


def chain_nets(**kw):
    return networks(residual=False, **kw)


def draw_pair(data, *, hidden: int, layers: int):
    """A drawn chain ``f``, a pair ``g`` (perturbed, pruned or unrelated, same shape), a box and
    the two chains aligned."""
    f = data.draw(chain_nets(inputs=(1, 3), hidden=(1, hidden), layers=(1, layers)))
    kind = data.draw(st.sampled_from(["perturbed", "pruned", "other"]))
    if kind == "other":
        g = data.draw(chain_nets(inputs=(f.input_size, f.input_size), hidden=(1, hidden),
                                 layers=(len(f.relus()), len(f.relus())),
                                 outputs=(f.output_size, f.output_size)))
    else:
        g = perturbed(f, 0.1, data.draw(st.integers(0, 99)), prune=0.3 if kind == "pruned" else 0.0)
    al = diff.align(f, g)
    assert not isinstance(al, str), al
    return f, g, data.draw(boxes(f.input_size)), al


def probe_points(data, box, n: int) -> list:
    """``n`` drawn points of ``box`` and three of its corners."""
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    corners = [np.where(rng.uniform(size=box.size) < 0.5, box.lower, box.upper) for _ in range(3)]
    return [*rng.uniform(box.lower, box.upper, size=(n, box.size)), *corners]


# -- soundness of the exact bounds ----------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_exact_bounds_contain_every_difference(data):
    f, g, box, al = draw_pair(data, hidden=5, layers=3)
    b = diff.propagate(al, Q.of(box.lower), Q.of(box.upper))
    lo_d, hi_d = (diff._range(b["Ld"], b["box"], upper=False).fractions(),
                  diff._range(b["Ud"], b["box"], upper=True).fractions())
    lo_f, hi_f = (diff._range(b["Lf"], b["box"], upper=False).fractions(),
                  diff._range(b["Uf"], b["box"], upper=True).fractions())
    for x in probe_points(data, box, 5):
        ef, eg = evaluate_exact(f, x.tolist()), evaluate_exact(g, x.tolist())
        for i, (a, c) in enumerate(zip(ef, eg)):
            assert lo_d[i] <= a - c <= hi_d[i], (i, float(a - c), float(lo_d[i]), float(hi_d[i]))
            assert lo_f[i] <= a <= hi_f[i]


def test_alignment_pads_hidden_widths_and_refuses_other_shapes():
    f = networks_fixed()
    g = widened(f, 3, 0)
    al = diff.align(f, g)
    assert not isinstance(al, str) and al.widths == (f.size_of("fc0") + 3,) + al.widths[1:]
    # the dead units change nothing: the difference is exactly 0 on the box
    b = diff.propagate(al, Q.of([0.0, 0.0]), Q.of([1.0, 1.0]))
    assert diff.leaf_proves(b, "exact", Fraction(0))
    deeper = mlp([np.eye(2)] * 4, [np.zeros(2)] * 4)
    assert "affine layers" in diff.align(f, deeper)


def networks_fixed():
    rng = np.random.default_rng(3)
    ws = [rng.normal(size=(4, 2)), rng.normal(size=(4, 4)), rng.normal(size=(2, 4))]
    bs = [0.3 * rng.normal(size=4), 0.3 * rng.normal(size=4), np.zeros(2)]
    return mlp([w.astype(np.float32).astype(np.float64) for w in ws],
               [b.astype(np.float32).astype(np.float64) for b in bs], name="fixed")


# -- the prover and the kernel's tree check --------------------------------------------------

def test_prover_tree_rechecks_and_a_false_claim_does_not():
    f = networks_fixed()
    g = perturbed(f, 0.02, 1)
    box = Box(np.zeros(2), np.ones(2))
    r = check_equivalence(f, g, box, epsilon=0.05, methods=("fuzz", "diff"), time_limit=30)
    assert (r.verdict, r.method, r.proof) == ("equivalent", "diff", "exact"), r.reason
    reg = r.certificate["regions"][0]
    al = diff.align(f, g)
    lo, hi = [Fraction(v) for v in reg["lower"]], [Fraction(v) for v in reg["upper"]]
    assert diff_tree.check_tree(al, lo, hi, reg["tree"], "epsilon", Fraction(0.05)) == reg["leaves"]
    true_max = max(abs(a - c) for x in np.random.default_rng(0).uniform(0, 1, (200, 2))
                   for a, c in zip(evaluate_exact(f, x.tolist()), evaluate_exact(g, x.tolist())))
    # the same tree for a tolerance below the true difference: some leaf must fail
    with pytest.raises(ProofInvalid, match="does not prove"):
        diff_tree.check_tree(al, lo, hi, reg["tree"], "epsilon", true_max / 2)
    # a cut outside its node's box, a bad dimension, a tree with a missing child
    if reg["tree"]:
        bad = copy.deepcopy(reg["tree"])
        bad["at"] = "7/2"
        with pytest.raises(ProofInvalid, match="not strictly inside"):
            diff_tree.check_tree(al, lo, hi, bad, "epsilon", Fraction(0.05))
        bad = copy.deepcopy(reg["tree"])
        bad["dim"] = 9
        with pytest.raises(ProofInvalid, match="input index"):
            diff_tree.check_tree(al, lo, hi, bad, "epsilon", Fraction(0.05))
        bad = copy.deepcopy(reg["tree"])
        bad["children"] = bad["children"][:1]
        with pytest.raises(ProofInvalid, match="two nodes"):
            diff_tree.check_tree(al, lo, hi, bad, "epsilon", Fraction(0.05))
    # a wider region than the one proven: refused when the claim is false there
    wide_hi = [Fraction(4), Fraction(4)]
    with pytest.raises(ProofInvalid):
        diff_tree.check_tree(al, lo, wide_hi, reg["tree"], "epsilon", true_max / 2)


def test_mutated_network_gives_a_counterexample_not_a_proof():
    f = networks_fixed()
    g = f.copy()
    op = g.op("fc2")
    g.replace("fc2", Affine(op.weight, op.bias + np.array([0.1, 0.0])))
    r = check_equivalence(f, g, Box(np.zeros(2), np.ones(2)), epsilon=0.05, methods=("diff",), time_limit=20)
    assert r.verdict == "counterexample" and r.method == "diff" and r.certificate is None
    assert Fraction(r.counterexample["difference_exact"]) > Fraction(0.05)


def test_top1_on_separated_classes_and_on_a_pruned_pair():
    f = networks_fixed()
    op = f.op("fc2")
    f.replace("fc2", Affine(op.weight, op.bias + np.array([50.0, 0.0])))
    g = perturbed(f, 0.01, 4)
    r = check_equivalence(f, g, Box(np.zeros(2), np.ones(2)), mode="top1", methods=("diff",), time_limit=20)
    assert (r.verdict, r.method) == ("equivalent", "diff"), r.reason


# -- check -o and recheck RESULT.json ----------------------------------------------------------

@pytest.fixture(scope="module")
def certified_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("diffcert")
    f = networks_fixed()
    g = perturbed(f, 0.02, 1)
    fa, fb = str(d / "a.onnx"), str(d / "b.onnx")
    save_onnx(f, fa, dtype="float32")
    save_onnx(g, fb, dtype="float32")
    dom = d / "dom.json"
    dom.write_text(json.dumps({"lower": [0, 0], "upper": [1, 1]}))
    res = str(d / "result.json")
    code = cli.main(["check", fa, fb, "--domain", str(dom), "--epsilon", "0.05", "-o", res, "--no-progress"])
    assert code == 0
    doc = json.loads(open(res).read())
    assert doc["certificate"]["regions"][0]["leaves"] >= 2, "the fixture should need a split tree"
    return d, fa, fb, res, doc


def _write(path, doc):
    with open(path, "w") as fh:
        json.dump(doc, fh)


def _verdict(path, **kw) -> str:
    try:
        return recheck_check(path, log=lambda *a: None, **kw)["verdict"]
    except DataError:
        return "error"


def test_recheck_result_end_to_end(certified_pair, capsys):
    d, fa, fb, res, doc = certified_pair
    assert _verdict(res) == "equivalent"
    assert cli.main(["recheck", res]) == 0
    assert "recheck: EQUIVALENT" in capsys.readouterr().out
    dom = str(d / "dom.json")
    assert cli.main(["recheck", res, "--domain", dom]) == 0
    assert cli.main(["recheck", res, "--domain", "box:0,2"]) == 2


def test_recheck_result_refuses_hostile_edits(certified_pair, tmp_path):
    d, fa, fb, res, doc = certified_pair
    edits = {
        "epsilon": lambda x: x.__setitem__("epsilon", 0.001),
        "cert epsilon": lambda x: x["certificate"].__setitem__("epsilon", "1/1000"),
        "both epsilons": lambda x: (x.__setitem__("epsilon", 0.0009765625),
                                    x["certificate"].__setitem__("epsilon", "1/1024")),
        "mode": lambda x: x.__setitem__("mode", "top1"),
        "verdict": lambda x: x.__setitem__("verdict", "unknown"),
        "hash a": lambda x: x["certificate"]["a"].__setitem__("sha256", "0" * 64),
        "domain": lambda x: x["inputs"]["domain"].__setitem__("upper", [2.0, 2.0]),
        "region and domain": lambda x: (x["inputs"]["domain"].__setitem__("upper", [8.0, 8.0]),
                                        x["certificate"]["regions"][0].__setitem__("upper", ["8", "8"])),
        "leaves": lambda x: x["certificate"]["regions"][0].__setitem__("leaves", 1),
        "tree cut": lambda x: x["certificate"]["regions"][0]["tree"].__setitem__("at", "5"),
        "tree pruned": lambda x: x["certificate"]["regions"][0].__setitem__("tree", {}),
        "no certificate": lambda x: x.__setitem__("certificate", None),
        "extra field": lambda x: x["certificate"].__setitem__("trust", True),
        "method": lambda x: x["certificate"]["regions"][0].__setitem__("method", "bab"),
        "empty box": lambda x: (x["inputs"]["domain"].__setitem__("lower", [1.0, 1.0]),
                                x["inputs"]["domain"].__setitem__("upper", [0.0, 0.0]),
                                x["certificate"]["regions"][0].__setitem__("lower", ["1", "1"]),
                                x["certificate"]["regions"][0].__setitem__("upper", ["0", "0"]),
                                x["certificate"]["regions"][0].__setitem__("tree", {}),
                                x["certificate"]["regions"][0].__setitem__("leaves", 1)),
    }
    for name, edit in edits.items():
        bad = copy.deepcopy(doc)
        edit(bad)
        path = str(tmp_path / f"{name.replace(' ', '_')}.json")
        _write(path, bad)
        assert _verdict(path) != "equivalent", name
    # network B swapped for a different one and the hashes re-written everywhere: the tree fails
    g2 = perturbed(networks_fixed(), 0.3, 7)
    fb2 = str(tmp_path / "b2.onnx")
    save_onnx(g2, fb2, dtype="float32")
    h = hashlib.sha256(open(fb2, "rb").read()).hexdigest()
    bad = copy.deepcopy(doc)
    bad["inputs"]["b"].update(file=fb2, sha256=h)
    bad["certificate"]["b"]["sha256"] = h
    path = str(tmp_path / "swapped.json")
    _write(path, bad)
    s = recheck_check(path, log=lambda *a: None)
    assert s["verdict"] != "equivalent" and any("region" in k for k in s["failed"]), s["failed"]
    # the reviewer's own copy of B that differs from the certified one: hash mismatch
    assert _verdict(res, model_b=fb2) != "equivalent"


def mutate_randomly(doc: dict, tmp_path, n: int, seed: int) -> list:
    """``n`` random edits of one field of ``doc``'s certificate, each written and rechecked;
    the edited documents that recheck still calls EQUIVALENT."""
    rnd = random.Random(seed)
    values = [0, 1, -1, 2, "0", "1/2", "-1/3", "1/0", "2/4", None, True, [], {}, "x", 1e308, 64, "99999/100000"]

    def paths(x, pre=()):
        if isinstance(x, dict):
            for k, v in x.items():
                yield from paths(v, pre + (k,))
        elif isinstance(x, list):
            for i, v in enumerate(x):
                yield from paths(v, pre + (i,))
        yield pre

    cert_paths = [p for p in paths(doc["certificate"]) if p]
    accepted = []
    for k in range(n):
        bad = copy.deepcopy(doc)
        p = rnd.choice(cert_paths)
        parent = bad["certificate"]
        for key in p[:-1]:
            parent = parent[key]
        new = rnd.choice(values)
        if parent[p[-1]] == new and type(parent[p[-1]]) is type(new):
            continue
        parent[p[-1]] = new
        path = str(tmp_path / f"m{k}.json")
        _write(path, bad)
        if _verdict(path) == "equivalent":
            accepted.append(bad)
    return accepted


def test_recheck_result_random_mutations(certified_pair, tmp_path):
    """300 random edits of the certificate's leaves: never EQUIVALENT unless the meaning is unchanged."""
    d, fa, fb, res, doc = certified_pair
    accepted = mutate_randomly(doc, tmp_path, 300, 2026)
    for bad in accepted:
        # allowed only when the edit kept the proof's meaning (e.g. a cut moved to another
        # point that still proves, or a smaller epsilon that still holds and matches)
        tree = bad["certificate"]["regions"][0]["tree"]
        al = diff.align(*(load_pair(fa, fb)))
        lo = [Fraction(v) for v in bad["certificate"]["regions"][0]["lower"]]
        hi = [Fraction(v) for v in bad["certificate"]["regions"][0]["upper"]]
        assert lo == [0, 0] and hi == [1, 1]
        assert diff_tree.check_tree(al, lo, hi, tree, bad["certificate"]["mode"],
                                    Fraction(bad["certificate"]["epsilon"])) >= 1
        assert Fraction(bad["certificate"]["epsilon"]) == Fraction(doc["epsilon"])
    assert len(accepted) < 300


def load_pair(fa, fb):
    from leo_verify.io import load
    return load(fa), load(fb)


def test_check_certificate_not_written_for_a_float_answer(tmp_path):
    """A pair the differential prover cannot align (different depths) has no certificate."""
    f = networks_fixed()
    deeper = mlp([np.eye(2), f.op("fc0").weight, f.op("fc1").weight, f.op("fc2").weight],
                 [np.zeros(2), f.op("fc0").bias, f.op("fc1").bias, f.op("fc2").bias])
    fa, fb = str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx")
    save_onnx(f, fa, dtype="float32")
    save_onnx(deeper, fb, dtype="float32")
    res = str(tmp_path / "r.json")
    cli.main(["check", fa, fb, "--domain", "box:0,1", "--epsilon", "1e-3", "-o", res, "--no-progress",
              "--time-limit", "20"])
    doc = json.loads(open(res).read())
    assert doc["certificate"] is None
    s = recheck_check(res, log=lambda *a: None)
    assert s["verdict"] == "not certified" and "certificate" in s["failed"]
    assert os.path.exists(res)


# -- a network against its own compression: the compress certificate is reused ------------------

def test_check_against_own_compression_reuses_the_certificate(tmp_path, capsys):
    shared = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                          "benchmarks", "rl")
    net, dom = os.path.join(shared, "cartpole.onnx"), os.path.join(shared, "cartpole_case_safe_14.vnnlib")
    if not os.path.exists(net):
        pytest.skip("shared benchmarks not mounted")
    out = str(tmp_path / "c")
    assert cli.main(["compress", net, "--domain", dom, "-o", out, "--no-checkpoint", "--no-progress"]) == 0
    rep = json.load(open(os.path.join(out, "report.json")))
    eps = rep["certificate"]["epsilon"]["compressed.onnx"]["float"]
    comp = os.path.join(out, "compressed.onnx")
    capsys.readouterr()
    assert cli.main(["check", net, comp, "--domain", dom, "--epsilon", repr(eps), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "EQUIVALENT" in text and "method: certificate" in text
    # a tolerance below the proven eps: the certificate does not answer it
    from leo_verify.certify.equivalence.from_certificate import from_compress_certificate
    from leo_verify.domain import parse_union
    from leo_verify.io import load
    f, g = load(net), load(comp)
    d = parse_union([dom], n=f.input_size)
    assert from_compress_certificate(net, comp, d, mode="epsilon", epsilon=eps, graphs=(f, g)) is not None
    assert from_compress_certificate(net, comp, d, mode="epsilon", epsilon=eps / 4, graphs=(f, g)) is None
    assert from_compress_certificate(net, comp, d, mode="top1", epsilon=eps, graphs=(f, g)) is None
    # a larger domain than the certified one, another network as A, an edited certificate: not reused
    wide = parse_union(["box:-10,10"], n=f.input_size)
    assert from_compress_certificate(net, comp, wide, mode="epsilon", epsilon=eps, graphs=(f, g)) is None
    other = str(tmp_path / "other.onnx")
    save_onnx(perturbed(f, 0.01, 3), other, dtype="float32")
    assert from_compress_certificate(other, comp, d, mode="epsilon", epsilon=eps) is None
    cert = os.path.join(out, "proofs", "certificate.json")
    doc = json.load(open(cert))
    doc["epsilon"]["compressed.onnx"] = "1/1000000000000"
    _write(cert, doc)
    assert from_compress_certificate(net, comp, d, mode="epsilon", epsilon=eps, graphs=(f, g)) is None


# -- delta-top-1 (--top1-confidence) ------------------------------------------------------------

def confident_pair():
    f = networks_fixed()
    op = f.op("fc2")
    f.replace("fc2", Affine(op.weight * 4, op.bias))
    return f, perturbed(f, 0.3, 5)


def sampled_violations(f, g, delta, n=100_000):
    from leo_verify.semantics import evaluate
    x = np.random.default_rng(0).uniform(0, 1, (n, 2))
    a, b = evaluate(f, x), evaluate(g, x)
    p = np.exp(a - a.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return int(((p > delta) & (np.arange(a.shape[1])[None, :] != b.argmax(1)[:, None])).any(1).sum())


def test_top1_confidence_proves_where_top1_fails_and_finds_real_violations():
    f, g = confident_pair()
    box = Box(np.zeros(2), np.ones(2))
    assert check_equivalence(f, g, box, mode="top1", time_limit=20).verdict == "counterexample"
    r = check_equivalence(f, g, box, mode="top1-confidence", epsilon=0.6, time_limit=30)
    assert (r.verdict, r.method, r.proof) == ("equivalent", "diff", "exact"), r.reason
    assert sampled_violations(f, g, 0.6) == 0
    reg = r.certificate["regions"][0]
    assert r.certificate["delta"] == "3/5" or Fraction(r.certificate["delta"]) == Fraction(0.6)
    al = diff.align(f, g)
    lo, hi = [Fraction(v) for v in reg["lower"]], [Fraction(v) for v in reg["upper"]]
    assert diff_tree.check_tree(al, lo, hi, reg["tree"], "top1-confidence", Fraction(0.6)) == reg["leaves"]
    # the same tree does not prove a lower confidence, where violations exist
    assert sampled_violations(f, g, 0.5) > 0
    with pytest.raises(ProofInvalid):
        diff_tree.check_tree(al, lo, hi, reg["tree"], "top1-confidence", Fraction(1, 2))
    r = check_equivalence(f, g, box, mode="top1-confidence", epsilon=0.5, time_limit=30)
    assert r.verdict == "counterexample", r.reason
    cex = r.counterexample
    assert cex["argmax_f"] != cex["argmax_g"]


def test_top1_confidence_cli_and_recheck(tmp_path, capsys):
    f, g = confident_pair()
    fa, fb = str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx")
    save_onnx(f, fa, dtype="float32")
    save_onnx(g, fb, dtype="float32")
    res = str(tmp_path / "r.json")
    assert cli.main(["check", fa, fb, "--domain", "box:0,1", "--top1-confidence", "0.6", "-o", res,
                     "--no-progress", "--workers", "1"]) == 0
    assert "delta-top-1" in capsys.readouterr().out
    assert recheck_check(res, log=lambda *a: None)["verdict"] == "equivalent"
    doc = json.load(open(res))
    for name, edit in {"delta": lambda x: x["certificate"].__setitem__("delta", "1/2"),
                       "both deltas": lambda x: (x["certificate"].__setitem__("delta", "1/2"),
                                                 x.__setitem__("epsilon", 0.5)),
                       "no delta": lambda x: x["certificate"].pop("delta"),
                       "mode": lambda x: (x.__setitem__("mode", "top1"),
                                          x["certificate"].__setitem__("mode", "top1"),
                                          x["certificate"].pop("delta"))}.items():
        bad = copy.deepcopy(doc)
        edit(bad)
        path = str(tmp_path / f"{name.replace(' ', '_')}.json")
        _write(path, bad)
        assert _verdict(path) != "equivalent", name
    assert cli.main(["check", fa, fb, "--domain", "box:0,1", "--top1-confidence", "1.5", "--no-progress"]) == 3
