"""Same inputs and seed => byte-identical facts and reports, apart from timing fields.

Timing fields (:data:`leo_verify.util.TIMING_KEYS`): ``timings`` (facts ``meta``,
report, report ``certificate``) and ``time`` (each solver query of a fact, each
obligation of a report or certificate); facts ``meta.run`` describes the run's
checkpoint (journal, facts resumed, queries replayed / executed).  Every run is
a fresh process with another ``PYTHONHASHSEED``, so set-order accidents show up.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leo_verify.analysis.facts import canonical_facts
from leo_verify.util import strip_timing_fields

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples" / "nets"
TINY = EX / "tiny_mlp.onnx"
TINY_DOMAIN = EX / "tiny_mlp_domain.json"
DIGITS = EX / "digits" / "digits_64x50x50x10_l1_1e-03.onnx"
BENCH = ROOT.parent / "shared" / "benchmarks" / "acasxu"


def _run(args, hashseed):
    env = dict(os.environ, PYTHONHASHSEED=str(hashseed))
    r = subprocess.run([sys.executable, "-m", "leo_verify", *map(str, args)], capture_output=True,
                       text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr
    return r


def _facts_text(path) -> str:
    return json.dumps(canonical_facts(json.loads(Path(path).read_text())), indent=1)


def _json_text(path) -> str:
    return json.dumps(strip_timing_fields(json.loads(Path(path).read_text())), indent=1)


def _analyze_twice(tmp_path, model, domain, *extra):
    outs = []
    for i, seed in enumerate((1, 2)):
        out = tmp_path / f"facts{i}.json"
        _run(["analyze", model, "--domain", domain, "--no-progress", "--no-checkpoint", "--seed", "7",
              "-o", out, *extra], hashseed=seed)
        outs.append(out)
    a, b = (_facts_text(p) for p in outs)
    assert a == b
    return json.loads(outs[0].read_text())


@pytest.mark.parametrize("method", ["fast", "leo", "isa"])
def test_analyze_twice_identical_facts(tmp_path, method):
    facts = _analyze_twice(tmp_path, TINY, TINY_DOMAIN, "--method", method)
    meta = facts["meta"]
    assert meta["settings"]["seed"] == 7
    import z3
    assert meta["versions"]["z3"] == z3.get_version_string()
    for k in ("leo_verify", "python", "numpy", "ortools", "scip", "highs", "onnx"):
        assert meta["versions"][k]
    if method == "leo":
        assert meta["counters"]["milp_queries"] > 0
    # a run that replays a complete checkpoint gives the same facts, byte for byte
    ck = tmp_path / "ck"
    for i in (0, 1):
        _run(["analyze", TINY, "--domain", TINY_DOMAIN, "--no-progress", "--checkpoint", ck,
              "--seed", "7", "--method", method, "-o", tmp_path / f"ck{i}.json"], hashseed=3 + i)
    assert _facts_text(tmp_path / "ck1.json") == _facts_text(tmp_path / "ck0.json") \
        == _facts_text(tmp_path / "facts0.json")
    assert json.loads((tmp_path / "ck1.json").read_text())["meta"]["run"]["checkpoint"][
        "executed_queries"] == 0


@pytest.mark.skipif(not BENCH.is_dir(), reason="../shared/benchmarks not present")
def test_analyze_twice_identical_facts_acas():
    # LP tightening, input splitting and a MILP query on a real network
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        facts = _analyze_twice(Path(d), BENCH / "ACASXU_run2a_1_1_batch_2000.onnx",
                               BENCH / "prop_3.vnnlib", "--query-time-limit", "60")
    assert facts["meta"]["counters"]["lp_queries"] > 0


def _compress_twice(tmp_path, model, domain, *extra):
    outs = []
    for i, seed in enumerate((1, 2)):
        out = tmp_path / f"out{i}"
        _run(["compress", model, "--domain", domain, "--no-progress", "--no-checkpoint", "-o", out,
              *extra], hashseed=seed)
        outs.append(out)
    a, b = outs
    assert _json_text(a / "report.json") == _json_text(b / "report.json")
    assert (a / "compressed.onnx").read_bytes() == (b / "compressed.onnx").read_bytes()
    report = json.loads((a / "report.json").read_text())
    import z3
    assert report["versions"]["z3"] == z3.get_version_string()
    assert report["facts"]["settings"]["seed"] == 0
    return a, b, report


def test_compress_no_certify_twice_identical(tmp_path):
    _, _, report = _compress_twice(tmp_path, TINY, TINY_DOMAIN, "--no-certify")
    assert report["certificate"]["verdict"] == "not certified"


@pytest.mark.skipif(not DIGITS.exists(), reason="digits nets not generated")
def test_compress_no_certify_twice_identical_digits(tmp_path):
    _, _, report = _compress_twice(tmp_path, DIGITS, "box:0,1", "--no-certify", "--format", "onnx,torch")
    assert report["removed"]["neurons"] > 0


def test_compress_certified_twice_identical(tmp_path):
    a, b, report = _compress_twice(tmp_path, TINY, TINY_DOMAIN)
    assert report["certificate"]["verdict"] == "certified"
    assert _json_text(a / "proofs" / "certificate.json") == _json_text(b / "proofs" / "certificate.json")
    names = sorted(p.name for p in (a / "proofs").iterdir())
    assert names == sorted(p.name for p in (b / "proofs").iterdir())
    for name in names:
        if name.endswith(".smt2"):
            assert (a / "proofs" / name).read_bytes() == (b / "proofs" / name).read_bytes()
