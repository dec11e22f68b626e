"""proofs/: the z3 soundness proofs of the rewrite rules run and give their expected answers.

* every script exits 0 and prints the expected verdict (unsat for the sound
  rules, sat with a re-checked counterexample for the wrong one);
* the SMT-LIB written by ``--smt2`` parses back (``z3.parse_smt2_file``) and
  gives the same answer, also with the z3 binary when it is installed;
* ``run_all.py`` tabulates them and fails on a mismatch;
* the driver reports a false claim as a mismatch (the scripts can fail);
* the formulas the proofs verify are the ones the passes compute: the
  passes' exact output weights on small nets equal the proofs' rewrite
  functions evaluated in Fractions.
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import z3

from leo_verify.passes import drop_inactive, fold_stable, merge_active
from leo_verify.testing import mlp

PROOFS = Path(__file__).resolve().parent.parent / "proofs"
EXPECTED = {
    "drop_inactive": "unsat",
    "fold_active": "unsat",
    "fold_mixed": "unsat",
    "merge_rank": "unsat",
    "merge_proportional": "unsat",
    "collapse_dead": "unsat",
    "wrong_drop_active": "sat",
}
VERDICT = re.compile(r"^verdict: (\S+) expected=(\S+) got=(\S+) time=(\S+) status=(\S+)$",
                     re.MULTILINE)
TIMEOUT = 120


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """rule -> (completed process, path of its --smt2 file); each script runs once."""
    out = tmp_path_factory.mktemp("smt2")
    cache = {}

    def get(rule):
        if rule not in cache:
            smt2 = out / f"{rule}.smt2"
            proc = subprocess.run([sys.executable, str(PROOFS / f"{rule}.py"), "--smt2", str(smt2)],
                                  capture_output=True, text=True, timeout=TIMEOUT)
            cache[rule] = (proc, smt2)
        return cache[rule]

    return get


@pytest.fixture
def proofs_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PROOFS))
    return importlib.import_module


def test_every_script_is_listed():
    scripts = {p.stem for p in PROOFS.glob("*.py")} - {"_proof", "run_all"}
    assert scripts == set(EXPECTED)
    run_all = (PROOFS / "run_all.py").read_text()
    for rule, answer in EXPECTED.items():
        assert f'"{rule}": "{answer}"' in run_all


@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_script_gives_expected_verdict(runs, rule):
    proc, _ = runs(rule)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = VERDICT.search(proc.stdout)
    assert m, proc.stdout
    assert m.group(1) == rule
    assert m.group(2) == m.group(3) == EXPECTED[rule]
    assert m.group(5) == "OK"
    # every side check agreed too (no row flagged)
    assert "MISMATCH" not in proc.stdout


def test_wrong_rule_prints_a_rechecked_counterexample(runs):
    proc, _ = runs("wrong_drop_active")
    assert "counterexample (z3 model" in proc.stdout
    assert "x = [" in proc.stdout and "W[1] = [" in proc.stdout
    assert "the outputs differ: counterexample confirmed" in proc.stdout


@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_smt2_parses_back_with_the_same_answer(runs, rule):
    proc, smt2 = runs(rule)
    assert proc.returncode == 0
    text = smt2.read_text()
    assert f"(set-info :status {EXPECTED[rule]})" in text
    assert "(check-sat)" in text
    s = z3.Solver()
    s.set("timeout", TIMEOUT * 1000)
    s.add(z3.parse_smt2_file(str(smt2)))
    assert str(s.check()) == EXPECTED[rule]


def test_z3_binary_rechecks_the_smt2(runs):
    exe = shutil.which("z3", path=os.path.dirname(sys.executable)) or shutil.which("z3")
    if exe is None:
        pytest.skip("no z3 binary (the z3-solver wheel usually installs one beside python)")
    for rule, answer in EXPECTED.items():
        _, smt2 = runs(rule)
        res = subprocess.run([exe, f"-T:{TIMEOUT}", str(smt2)], capture_output=True, text=True,
                             timeout=TIMEOUT + 10)
        assert res.stdout.split() == [answer], (rule, res.stdout, res.stderr)


def test_run_all_tabulates_and_passes():
    proc = subprocess.run([sys.executable, str(PROOFS / "run_all.py")], capture_output=True,
                          text=True, timeout=6 * TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rule, answer in EXPECTED.items():
        assert re.search(rf"^{rule}\s*\| {answer}\s*\| {answer}\s*\|\s*[\d.]+ \| OK$",
                         proc.stdout, re.MULTILINE), proc.stdout
    assert f"{len(EXPECTED)}/{len(EXPECTED)} as expected" in proc.stdout


def test_run_all_fails_when_an_answer_differs(proofs_path, monkeypatch, capsys):
    run_all = proofs_path("run_all")
    monkeypatch.setattr(run_all, "RULES", {"drop_inactive": "sat"})  # claim the wrong answer
    assert run_all.main([]) == 1
    out = capsys.readouterr().out
    assert re.search(r"drop_inactive\s*\| sat\s*\| unsat .*MISMATCH", out), out


def test_driver_reports_a_false_claim(proofs_path, capsys):
    p = proofs_path("_proof")
    z = z3.Real("z")
    # relu(z) == z needs z >= 0: without it the claim is false (sat), so "unsat" is a mismatch
    assert p.run(rule="false_claim", doc="relu is the identity", hypotheses=[],
                 goal=p.relu(z) == z, expected="unsat", argv=[]) == 1
    out = capsys.readouterr().out
    assert "verdict: false_claim expected=unsat got=sat" in out and "status=MISMATCH" in out
    # a failing side check alone also makes the run fail
    assert p.run(rule="side", doc="side check", hypotheses=[z >= 0], goal=p.relu(z) == z,
                 checks=[p.Check("wrongly expected unsat", [z > 1], "unsat")], argv=[]) == 1
    assert "status=MISMATCH" in capsys.readouterr().out
    # and the true claim passes
    assert p.run(rule="true_claim", doc="relu on z >= 0", hypotheses=[z >= 0],
                 goal=p.relu(z) == z, argv=[]) == 0


# -- the proven formulas are the passes' formulas --------------------------------

def _q(a):
    return [[Fraction(v) for v in row] for row in a] if np.ndim(a) == 2 else [Fraction(v) for v in a]


def _exact(op):
    w, b = op.rational()
    return [list(row) for row in w], list(b)


def _coefficients(w, basis, dep):
    """The exact K with W_dep = K W_basis (two basis rows; solved on two columns, checked on all)."""
    (a, b), (c, d) = [[w[i][j] for j in (0, 1)] for i in basis]
    det = a * d - b * c
    assert det != 0
    k = [[(w[r][0] * d - w[r][1] * c) / det, (w[r][1] * a - w[r][0] * b) / det] for r in dep]
    for kr, r in zip(k, dep):
        assert [kr[0] * w[basis[0]][j] + kr[1] * w[basis[1]][j] for j in range(len(w[r]))] == w[r]
    return k


def test_merge_pass_computes_the_proven_rewrite(proofs_path):
    mr = proofs_path("merge_rank")
    r0, r1 = np.array([1, 2, 0.0]), np.array([0, 1, -1.0])
    w0 = [r0, r1, 1 * r0 + 0.5 * r1, -0.25 * r0 + 2 * r1, [1, -1, 0.5]]
    b0 = [0.5, 1, -0.25, 2, 0]
    v = [[1, -2, 0.75, 3, -1], [0.5, 1, -1.5, 0.25, 2]]
    c = [0.125, -1]
    g = mlp([w0, v], [b0, c])
    stable = {f"relu0[{i}]": "active" for i in range(4)}  # unit 4 left unstable
    out, log = merge_active(g, stable)
    merged = [e for e in log if e["action"] == "merged"]
    assert len(merged) == 1 and merged[0]["unverified"] == []
    index = {f"relu0[{i}]": i for i in range(5)}
    basis = [index[n] for n in merged[0]["basis"]]
    dep = [index[n] for n in merged[0]["neurons"]]
    assert len(basis) == 2 and len(dep) == 2 and 4 not in basis + dep
    k = _coefficients(_q(w0), basis, dep)
    v2, c2, keep = mr.merge_user(_q(v), _q(c), _q(b0), k, basis, dep)
    assert list(out.op("relu0").neurons) == [f"relu0[{i}]" for i in keep]
    assert _exact(out.op("fc1")) == (v2, c2)
    # the bias correction is really exercised here (b_D != K b_B)
    _, c3, _ = mr.merge_user(_q(v), _q(c), _q(b0), k, basis, dep, shift=False)
    assert c3 != c2


def test_fold_pass_computes_the_proven_rewrite(proofs_path):
    fm = proofs_path("fold_mixed")
    w0 = [[1, -2, 0.5], [0.25, 1, -1], [-1, 0.75, 2]]
    b0 = [0.5, -3, 1.25]
    v = [[1, -2, 0.75], [0.5, 1, -1.5]]
    c = [0.125, -1]
    g = mlp([w0, v], [b0, c])
    stable = {"relu0[0]": "active", "relu0[1]": "inactive", "relu0[2]": "active"}
    out, log = fold_stable(g, stable)
    assert [e["how"] for e in log if e["action"] == "folded"] == ["composed into users"]
    assert out.relus() == [] and out.args("fc1") == [out.input_name]
    assert _exact(out.op("fc1")) == fm.compose(_q(v), _q(c), _q(w0), _q(b0), fm.ACT)


def test_drop_pass_computes_the_proven_rewrite():
    w0 = [[1, -2, 0.5], [0.25, 1, -1], [-1, 0.75, 2]]
    b0 = [0.5, -3, 1.25]
    v = [[1, -2, 0.75], [0.5, 1, -1.5]]
    c = [0.125, -1]
    g = mlp([w0, v], [b0, c])
    out, _ = drop_inactive(g, {"relu0[1]": "inactive"})
    keep = [0, 2]
    assert _exact(out.op("fc0")) == ([_q(w0)[i] for i in keep], [_q(b0)[i] for i in keep])
    assert _exact(out.op("fc1")) == ([[row[i] for i in keep] for row in _q(v)], _q(c))
