"""Faults and long runs: checkpoint + resume after SIGKILL / Ctrl-C, the journal's
robustness, output-folder locking, and solver faults that must end as `unknown`."""
from __future__ import annotations

import concurrent.futures as cf
import glob
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from leo_verify.analysis import analyze
from leo_verify.analysis import backends
from leo_verify.analysis.checkpoint import Journal, read_journal, run_key, run_material
from leo_verify.analysis.facts import Facts, canonical_facts
from leo_verify.analysis.state import AnalysisOptions
from leo_verify.domain import Box
from leo_verify.errors import OutputError
from leo_verify.testing import mlp

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples" / "nets"
# LEO on an l1-trained digits net: 128 MILP queries, ~20 s, every query optimal
# well inside the time limit (so a run's answers do not depend on the clock)
DIGITS = EX / "digits" / "digits_64x50x50x10_l1_1e-03.onnx"
N_QUERIES = 128


def _cli(*args):
    return [sys.executable, "-m", "leo_verify", *map(str, args)]


def _analyze_args(ckpt, out):
    return _cli("analyze", DIGITS, "--domain", "box:0,1", "--method", "leo", "--query-time-limit", "60",
                "--no-progress", "--checkpoint", ckpt, "-o", out)


def _journal(folder) -> str:
    files = glob.glob(os.path.join(folder, "*.jsonl"))
    assert len(files) == 1, files
    return files[0]


def _queries(records):
    return [r["q"] for r in records if r["t"] == "query"]


def _canonical(path) -> str:
    return json.dumps(canonical_facts(json.loads(Path(path).read_text())), sort_keys=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    if not DIGITS.exists():
        pytest.skip("digits nets not generated")
    d = tmp_path_factory.mktemp("whole")
    out, ckpt = d / "facts.json", d / "ckpt"
    r = subprocess.run(_analyze_args(ckpt, out), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    keys = _queries(read_journal(_journal(ckpt)))
    assert len(keys) == len(set(keys)) == N_QUERIES
    return out, set(keys)


def _interrupt_and_resume(tmp_path, uninterrupted, sig):
    whole_out, whole_keys = uninterrupted
    ckpt, out = tmp_path / "ckpt", tmp_path / "facts.json"
    proc = subprocess.Popen(_analyze_args(ckpt, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            # a background job's children inherit an ignored SIGINT; a user's
                            # Ctrl-C reaches a foreground process with the default handler
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # stop it once some solver queries have finished (and long before the end)
    deadline = time.monotonic() + 300
    n = 0
    while time.monotonic() < deadline and proc.poll() is None:
        files = glob.glob(str(ckpt / "*.jsonl"))
        n = len(_queries(read_journal(files[0]))) if files else 0
        if n >= 30:
            break
        time.sleep(0.05)
    assert proc.poll() is None and 30 <= n < N_QUERIES, (n, proc.poll())
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        assert not out.exists()
    else:  # Ctrl-C: exit 130, the facts decided so far are written, marked incomplete
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        partial = Facts.load(str(out))
        assert not partial.complete and partial.meta["stopped"] == "interrupted"
    first = read_journal(_journal(ckpt))
    first_keys = _queries(first)
    first_facts = {r["n"] for r in first if r["t"] == "fact"}
    assert 30 <= len(first_keys) < N_QUERIES

    r = subprocess.run(_analyze_args(ckpt, out), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "checkpoint" in ln]
    assert len(lines) == 1 and f"{len(first_facts)} facts resumed" in lines[0], r.stderr
    # (a) the resumed run's facts are those of an uninterrupted run (timings aside)
    assert _canonical(out) == _canonical(whole_out)
    # (b) no finished query ran again: the second run's queries are disjoint from the
    # first run's, and together they are exactly the uninterrupted run's queries
    records = read_journal(_journal(ckpt))
    assert records[:len(first)] == first
    second_keys = _queries(records[len(first):])
    assert not set(second_keys) & set(first_keys)
    assert set(first_keys) | set(second_keys) == whole_keys
    assert len(first_keys) + len(second_keys) == N_QUERIES
    meta = json.loads(out.read_text())["meta"]["run"]["checkpoint"]
    assert meta["replayed_queries"] == len(first_keys)
    assert meta["executed_queries"] == len(second_keys)
    assert meta["resumed_facts"] == len(first_facts) and meta["differing_facts"] == 0


@pytest.mark.slow
def test_sigkill_then_resume_redoes_no_finished_query(tmp_path, uninterrupted):
    _interrupt_and_resume(tmp_path, uninterrupted, signal.SIGKILL)


@pytest.mark.slow
def test_ctrl_c_then_resume_redoes_no_finished_query(tmp_path, uninterrupted):
    _interrupt_and_resume(tmp_path, uninterrupted, signal.SIGINT)


# -- the journal --------------------------------------------------------------

def _tiny():
    from leo_verify.io import load
    from leo_verify.domain import parse_domain
    g = load(str(EX / "tiny_mlp.onnx"))
    return g, parse_domain(str(EX / "tiny_mlp_domain.json"), n=g.input_size)


def test_journal_survives_torn_and_corrupt_lines(tmp_path):
    g, box = _tiny()
    first = analyze(g, box, method="leo", checkpoint=str(tmp_path))
    path = first.meta["run"]["checkpoint"]["journal"]
    n = first.meta["run"]["checkpoint"]["executed_queries"]
    assert n == first.meta["counters"]["milp_queries"] > 0
    raw = Path(path).read_bytes()
    lines = raw.split(b"\n")
    # corrupt one query record in the middle (its checksum no longer fits) ...
    i = next(k for k, ln in enumerate(lines) if b'"t":"query"' in ln and k > 1)
    lines[i] = lines[i].replace(b'"verdict":"', b'"verdict":"x', 1)
    # ... and leave a torn last line, as a SIGKILL in the middle of a write would
    Path(path).write_bytes(b"\n".join(lines) + b'{"t":"query","q":"deadbeef","out":{"verd')
    logs = []
    again = analyze(g, box, method="leo", checkpoint=str(tmp_path), log=logs.append)
    ck = again.meta["run"]["checkpoint"]
    assert ck["replayed_queries"] == n - 1 and ck["executed_queries"] == 1
    assert json.dumps(canonical_facts(again.to_json())) == json.dumps(canonical_facts(first.to_json()))
    assert len(logs) == 1 and f"{len(again)} facts resumed" in logs[0]
    data = Path(path).read_bytes()
    assert data.endswith(b"\n") and b"deadbeef" not in data  # the torn line was cut off
    for line in data.splitlines():
        json.loads(line)  # JSON lines only
    # a third run replays everything
    third = analyze(g, box, method="leo", checkpoint=str(tmp_path))
    assert third.meta["run"]["checkpoint"]["executed_queries"] == 0


def test_run_key_covers_what_changes_answers(tmp_path):
    g, box = _tiny()
    versions = {"leo_verify": "x", "scip": "y"}

    def key(graph=g, b=box, data=None, versions=versions, **opts):
        return run_key(run_material(graph, b, AnalysisOptions(**opts), data=data, versions=versions,
                                    tau_rel=1e-6))
    base = key()
    assert key() == base
    # how far a run goes, and where its queries run, do not change its answers
    assert key(budget=5.0) == base and key(workers=4) == base and key(progress=True) == base
    other = Box(box.lower, np.nextafter(box.upper, np.inf))  # one ulp wider
    g2 = g.copy()
    name = next(n for n, op in g2.items() if op.kind == "affine")
    op = g2.op(name)
    w = op.weight.copy()
    w[0, 0] = np.nextafter(w[0, 0], np.inf)
    from leo_verify.graph import Affine
    g2.replace(name, Affine(w, op.bias))
    variants = [key(b=other), key(graph=g2), key(method="leo"), key(solver="highs"), key(seed=1),
                key(query_time_limit=5.0), key(n_random=10), key(use_symbolic=False), key(threads=2),
                key(data=np.zeros((1, 4))), key(versions={**versions, "leo_verify": "z"})]
    assert len(set(variants + [base])) == len(variants) + 1
    # a journal with another key is another file
    a = Journal(str(tmp_path), run_material(g, box, AnalysisOptions(), versions=versions, tau_rel=1e-6))
    b = Journal(str(tmp_path), run_material(g, box, AnalysisOptions(seed=3), versions=versions,
                                            tau_rel=1e-6))
    assert a.path != b.path
    a.close()
    b.close()


def test_unusable_checkpoint_folder(tmp_path, monkeypatch):
    g, box = _tiny()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    from leo_verify.errors import InputFileError
    with pytest.raises(InputFileError):  # a folder the user named: an error
        analyze(g, box, checkpoint=str(blocker / "sub"))
    monkeypatch.setenv("LEO_VERIFY_CACHE", str(blocker))  # the default cache: a warning
    logs = []
    facts = analyze(g, box, checkpoint=True, log=logs.append)
    assert facts.complete and facts.meta["run"]["checkpoint"] is None
    assert len(logs) == 1 and "warning" in logs[0]


# -- output folders -----------------------------------------------------------

def _wait_for(pred, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_second_compress_on_a_locked_folder_fails_at_once(tmp_path):
    if not DIGITS.exists():
        pytest.skip("digits nets not generated")
    out = tmp_path / "out"
    slow = _cli("compress", DIGITS, "--domain", "box:0,1", "--method", "leo", "--no-certify",
                "--no-checkpoint", "-o", out)
    first = subprocess.Popen(slow, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = out / ".lock"
        assert _wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid))
        t0 = time.monotonic()
        second = subprocess.run(_cli("compress", EX / "tiny_mlp.onnx", "--domain",
                                     EX / "tiny_mlp_domain.json", "--no-checkpoint", "-o", out),
                                capture_output=True, text=True, timeout=120)
        assert time.monotonic() - t0 < 30
        assert second.returncode == OutputError.exit_code
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and str(out) in err[0] and f"pid {first.pid}" in err[0], err
        assert first.poll() is None  # the holder goes on undisturbed
        first.send_signal(signal.SIGKILL)  # killed while analysing: nothing half-written
        first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    leftovers = [p.name for p in out.iterdir() if p.name != ".lock"]
    assert leftovers == [], leftovers
    # the kernel released the dead holder's lock: the folder is usable again
    third = subprocess.run(_cli("compress", EX / "tiny_mlp.onnx", "--domain", EX / "tiny_mlp_domain.json",
                                "--no-checkpoint", "--no-certify", "-o", out),
                           capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["outputs"]["onnx"]["sha256"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_folder_lock_in_process(tmp_path):
    from leo_verify.util import folder_lock
    with folder_lock(str(tmp_path)):
        with pytest.raises(OutputError, match=f"pid {os.getpid()}"):
            with folder_lock(str(tmp_path)):
                pass
    with folder_lock(str(tmp_path)):  # released
        pass


# -- solver faults ------------------------------------------------------------

def _net():
    # 20 inputs (no input splitting); with the options below, fast needs LP and MILP
    rng = np.random.default_rng(1)
    ws = [rng.normal(size=(10, 20)) * 0.4, rng.normal(size=(10, 10)) * 0.5, rng.normal(size=(2, 10))]
    bs = [rng.normal(size=10) * 0.5 - 0.4, rng.normal(size=10) * 0.5 - 0.3, np.zeros(2)]
    return mlp(ws, bs), Box(np.zeros(20), np.ones(20))


def _raise(self, c, **kw):
    raise RuntimeError("solver crashed (injected)")


def _nan(self, c, *, sense, **kw):
    n = self.n
    return backends.SolveResult("optimal", primal=float("nan"), dual=float("nan"),
                                x=np.full(n, np.nan), backend=self.name, sense=sense)


def _inf_dual(self, c, *, sense, **kw):
    # a finite incumbent with an infinite "bound": no bound at all
    return backends.SolveResult("optimal", primal=0.0, dual=float("-inf"),
                                x=np.zeros(self.n), backend=self.name, sense=sense)


def _error(self, c, *, sense, **kw):
    return backends.SolveResult("error", backend=self.name, sense=sense, message="injected")


FAST_NO_SAMPLING = dict(n_random=0, n_corners=0, gradient_steps=0, use_symbolic=False)


@pytest.mark.parametrize("fault", [_raise, _nan, _inf_dual, _error], ids=lambda f: f.__name__)
@pytest.mark.parametrize("method", ["fast", "leo", "isa"])
def test_solver_faults_leave_neurons_unknown(monkeypatch, fault, method):
    g, box = _net()
    opts = FAST_NO_SAMPLING if method == "fast" else {}
    healthy = analyze(g, box, method=method, query_time_limit=30, **opts)
    by_solver = [n for n, f in healthy.neurons.items() if f.evidence in ("milp", "lp")]
    assert by_solver, "the test net must need the solver"
    monkeypatch.setattr(backends._ScipModel, "run", fault)
    broken = analyze(g, box, method=method, query_time_limit=30, **opts)
    assert broken.complete  # a broken solver is not a crash ...
    for nid, f in broken.neurons.items():
        assert f.evidence not in ("milp", "lp"), (nid, f)  # ... and not a claim
        if f.status != "unknown":  # decided without a solver: as in the healthy run
            assert f.status == healthy[nid].status, nid
    assert broken.counts()["unknown"] > healthy.counts()["unknown"]
    errors = [q for f in broken for q in f.stats.get("queries", []) if q["verdict"] == "error"]
    if method != "isa":
        assert errors and all(q["dual"] is None for q in errors)


def _crash_worker():
    # a solver that takes its worker process down with it (a segfault, say)
    backends._ScipModel.run = lambda self, c, **kw: os._exit(3)


def test_worker_crash_leaves_neurons_unknown():
    g, box = _net()
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(2, mp_context=ctx, initializer=_crash_worker) as pool:
        facts = analyze(g, box, method="leo", executor=pool, workers=2, query_time_limit=30)
    assert facts.complete
    assert not [n for n, f in facts.neurons.items() if f.evidence in ("milp", "lp")]
    assert facts.counts()["unknown"] > 0
    msgs = [q.get("message", "") for f in facts for q in f.stats.get("queries", [])]
    assert msgs and all("worker crashed" in m for m in msgs)
