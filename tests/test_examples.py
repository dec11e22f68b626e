"""The example scripts run and print what they promise (subprocesses with timeouts)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
ACAS = os.path.normpath(os.path.join(ROOT, "..", "shared", "benchmarks", "acasxu"))


def run(args, *, timeout: float, cwd: str = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_equivalence_check_example():
    r = run([os.path.join(EXAMPLES, "equivalence_check.py")], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "1. original vs its compression" in out
    verdicts = [line.strip() for line in out.splitlines() if line.startswith("    verdict:")]
    assert [v.split()[1] for v in verdicts] == ["EQUIVALENT", "COUNTEREXAMPLE", "EQUIVALENT"], out
    assert "(exact)" in out  # the counterexample's difference, replayed in exact arithmetic
    assert "->  exit 0" in out and "->  exit 1" in out
    assert "all verdicts as expected" in out


def test_regression_example_passes():
    r = run(["-m", "pytest", "-q", "-p", "no:cacheprovider",
             os.path.join(EXAMPLES, "test_regression_example.py")], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 passed" in r.stdout


def test_reproduce_table1_quick(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "table1"
    r = run([os.path.join(EXAMPLES, "reproduce_table1.py"), "--quick", "--out", str(out)], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    text = r.stdout
    assert "| dataset | arch" in text and "paper (approx.)" in text and "8-31 %" in text
    rows = [line for line in text.splitlines() if line.startswith("| digits")]
    assert len(rows) == 2 and all("| certified" in line for line in rows)
    assert "2/2 certified" in text
    res = json.loads((out / "results.json").read_text())
    by_l1 = {row["l1"]: row for row in res["rows"]}
    assert by_l1[0.0]["compression_pct"] == 0.0          # no l1: nothing stable over [0, 1]^64
    assert by_l1[1e-3]["compression_pct"] > 5.0          # l1: stable neurons removed
    assert sum(by_l1[1e-3]["removed_per_layer"]) == by_l1[1e-3]["neurons"][0] - by_l1[1e-3]["neurons"][1]
    for row in res["rows"]:
        folder = out / row["name"]
        assert (folder / "compressed.onnx").is_file()
        assert json.loads((folder / "report.json").read_text())["certificate"]["verdict"] == "certified"
    assert "| digits" in (out / "results.md").read_text()


def test_reproduce_table1_usage_error():
    r = run([os.path.join(EXAMPLES, "reproduce_table1.py"), "--datasets", "cifar"], timeout=60)
    assert r.returncode == 3 and "cifar" in r.stderr


def test_acasxu_regions_help_and_usage():
    r = run([os.path.join(EXAMPLES, "acasxu_regions.py"), "--help"], timeout=60)
    assert r.returncode == 0 and "--quick" in r.stdout and "--props" in r.stdout
    r = run([os.path.join(EXAMPLES, "acasxu_regions.py"), "--nets", "0-3"], timeout=60)
    assert r.returncode == 3 and "within 1-9" in r.stderr


@pytest.mark.skipif(not os.path.isdir(ACAS), reason="../shared/benchmarks/acasxu not present")
def test_acasxu_regions_one_box():
    r = run([os.path.join(EXAMPLES, "acasxu_regions.py"), "--nets", "1", "--props", "4",
             "--outputs", "0", "--milp-time-limit", "5"], timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(line for line in r.stdout.splitlines() if line.startswith("1_1 "))
    assert "certified" in line
    assert "downstream MILP total: original" in r.stdout
