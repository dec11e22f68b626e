"""`leo-verify compress` end to end on the bundled example and a shared ACAS Xu box."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from leo_verify.cli import main
from leo_verify.domain import parse_domain
from leo_verify.io.onnx import load_onnx
from leo_verify.semantics import evaluate

EX = Path(__file__).resolve().parents[1] / "examples" / "nets"
BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def corners_edges_random(box, n, rng):
    d = box.size
    pts = [box.sample(n, rng)]
    bits = rng.integers(0, 2, size=(min(2 ** d, 1024), d))
    pts.append(box.lower + bits * (box.upper - box.lower))
    # edge points: one coordinate free, the others at a corner
    edge = box.lower + rng.integers(0, 2, size=(200, d)) * (box.upper - box.lower)
    k = rng.integers(0, d, size=200)
    edge[np.arange(200), k] = box.lower[k] + rng.random(200) * (box.upper - box.lower)[k]
    pts.append(edge)
    return np.vstack(pts)


def run_compress(model, domain, out, *extra):
    rc = main(["compress", str(model), "--domain", str(domain), "-o", str(out), *extra])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    return load_onnx(out / "compressed.onnx"), report


def check_agreement(model, domain, out, report, n=10_000):
    g0 = load_onnx(model)
    g1 = load_onnx(out / "compressed.onnx")
    box = parse_domain(str(domain), n=g0.input_size)
    x = corners_edges_random(box, n, np.random.default_rng(0))
    y0, y1 = evaluate(g0, x), evaluate(g1, x)
    np.testing.assert_allclose(y1, y0, rtol=1e-6, atol=1e-6)
    counts = report["facts"]["counts"]
    stable = counts["stably_active"] + counts["stably_inactive"]
    if stable:
        assert report["after"]["neurons"] < report["before"]["neurons"]
    kept = sum(1 for v in report["neurons"].values() if v["kept"])
    assert kept == report["after"]["neurons"] == len(g1.neurons())
    # every neuron not proven stable is kept
    for nid, v in report["neurons"].items():
        if v["status"] in ("unstable", "unknown"):
            assert v["kept"], nid
    cert = report["certificate"]
    if cert.get("detail") == "certification not run":
        assert cert["verdict"] == "not certified"
    else:  # a correct compression of these nets certifies, every obligation proven
        assert cert["verdict"] == "certified" and cert["obligations"]["open"] == 0, cert["open"]


def test_compress_bundled_example(tmp_path, capsys):
    out = tmp_path / "out"
    g1, report = run_compress(EX / "tiny_mlp.onnx", EX / "tiny_mlp_domain.json", out, "--format", "onnx,torch")
    check_agreement(EX / "tiny_mlp.onnx", EX / "tiny_mlp_domain.json", out, report)
    assert (out / "compressed.pt").exists()
    assert report["outputs"]["onnx"]["sha256"] and report["model"]["sha256"]
    assert "neurons" in capsys.readouterr().out
    # facts from analyze give the same compression
    facts = tmp_path / "facts.json"
    assert main(["analyze", str(EX / "tiny_mlp.onnx"), "--domain", str(EX / "tiny_mlp_domain.json"),
                 "-o", str(facts)]) == 0
    out2 = tmp_path / "out2"
    _, report2 = run_compress(EX / "tiny_mlp.onnx", EX / "tiny_mlp_domain.json", out2, "--facts", str(facts))
    assert report2["after"] == report["after"]
    # facts for another domain are refused
    assert main(["compress", str(EX / "tiny_mlp.onnx"), "--domain", "box:0,0.5", "-o", str(tmp_path / "o3"),
                 "--facts", str(facts)]) == 9


def test_compress_refuses_to_overwrite_input(tmp_path):
    src = tmp_path / "compressed.onnx"
    src.write_bytes((EX / "tiny_mlp.onnx").read_bytes())
    rc = main(["compress", str(src), "--domain", str(EX / "tiny_mlp_domain.json"), "-o", str(tmp_path)])
    assert rc == 10
    assert src.read_bytes() == (EX / "tiny_mlp.onnx").read_bytes()


@pytest.mark.skipif(not BENCH.is_dir(), reason="../shared/benchmarks not present")
def test_compress_acas_prop1(tmp_path):
    model = BENCH / "acasxu" / "ACASXU_run2a_1_1_batch_2000.onnx"
    domain = BENCH / "acasxu" / "prop_1.vnnlib"
    out = tmp_path / "out"
    # certification of ACAS boxes is measured in examples/certify_benchmarks.py
    _, report = run_compress(model, domain, out, "--query-time-limit", "20", "--no-certify")
    check_agreement(model, domain, out, report)
    assert report["removed"]["neurons"] >= report["facts"]["counts"]["stably_inactive"] > 100


@pytest.mark.skipif(not (EX / "digits").is_dir(), reason="digits nets not generated")
def test_compress_l1_digits_net(tmp_path):
    model = EX / "digits" / "digits_64x50x50x10_l1_1e-03.onnx"
    domain = tmp_path / "box.json"
    domain.write_text(json.dumps({"lower": [0.0] * 64, "upper": [1.0] * 64}))
    out = tmp_path / "out"
    _, report = run_compress(model, domain, out)
    check_agreement(model, domain, out, report)
    # every proven-inactive neuron goes; active ones only where rank or folding allows
    assert report["removed"]["neurons"] >= report["facts"]["counts"]["stably_inactive"] >= 10
