"""Field sweep: the networks people verify, end to end, next to onnxruntime.

For each (network, specification) pair of ``../shared/benchmarks/rl/`` (VNN-COMP 2022
cartpole and lunarlander, two specifications each) and ``../shared/benchmarks/acasxu/``
(ACAS Xu nets, every ``prop_1..prop_10``; prop_6 is a union of two boxes):

1. load the network and evaluate it (float64, head applied) on ``--points`` points sampled
   from the specification's input domain (seeded), against onnxruntime on the original file
   (``eval diff``: max abs difference);
2. ``leo-verify compress MODEL --domain SPEC -o OUT --no-checkpoint`` (a subprocess, killed
   after ``--timeout`` seconds; a timeout is a row of the table, not a crash);
3. ``leo-verify recheck OUT --domain SPEC --json`` (a subprocess);
4. run ``OUT/compressed.onnx`` and the original in onnxruntime on the same points
   (``emitted diff``: max abs difference; a drop-in replacement, so expect ~1e-6 or less: both
   runs round in float32), and in float64 with leo_verify's interpreter (``f64 diff``: the
   real-arithmetic difference, which the certificate's eps bounds).

    python examples/field_sweep.py --quick                   # cartpole 14, lunarlander 1, ACAS 1_1 prop_3/4
    python examples/field_sweep.py                           # all RL pairs + ACAS 1_1 x prop_1..10
    python examples/field_sweep.py --acas-nets 1_1,1_2 --timeout 600 --out out/sweep --json out/sweep.json
    python examples/field_sweep.py --no-acas                 # the four RL pairs only

Prints a Markdown table; ``--json`` also writes every row. ``run_pair`` is the per-pair
function the CI test (``tests/test_field_sweep.py``) uses.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "benchmarks"))
RL = os.path.join(BENCH, "rl")
ACAS = os.path.join(BENCH, "acasxu")

RL_PAIRS = [("cartpole", "cartpole.onnx", "cartpole_case_safe_14.vnnlib"),
            ("cartpole", "cartpole.onnx", "cartpole_case_safe_27.vnnlib"),
            ("lunarlander", "lunarlander.onnx", "lunarlander_case_safe_1.vnnlib"),
            ("lunarlander", "lunarlander.onnx", "lunarlander_case_safe_10.vnnlib")]
QUICK_RL = [RL_PAIRS[0], RL_PAIRS[2]]


def acas_model(net: str) -> str:
    return os.path.join(ACAS, f"ACASXU_run2a_{net}_batch_2000.onnx")


def pairs(args) -> list:
    """``[(network label, model path, spec path), ...]`` in sweep order."""
    out = []
    if not args.no_rl:
        for name, model, spec in (QUICK_RL if args.quick else RL_PAIRS):
            out.append((name, os.path.join(RL, model), os.path.join(RL, spec)))
    if not args.no_acas:
        nets = ["1_1"] if args.quick and args.acas_nets is None else \
            [n.strip() for n in (args.acas_nets or "1_1").split(",") if n.strip()]
        props = [3, 4] if args.quick and args.props is None else \
            [int(p) for p in (args.props or ",".join(str(k) for k in range(1, 11))).split(",")]
        for net in nets:
            for p in props:
                out.append((f"acas_{net}", acas_model(net), os.path.join(ACAS, f"prop_{p}.vnnlib")))
    return out


# -- onnxruntime -------------------------------------------------------------------------------------
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def _initializers(path: str) -> set:
    import onnx
    return {t.name for t in onnx.load(path, load_external_data=False).graph.initializer}


def ort_outputs(path: str, x: np.ndarray) -> np.ndarray:
    """The first output of the ONNX file ``path`` at each point (row) of ``x``, as float64
    ``(len(x), m)``. A fixed batch dimension (or a rank-1 input) is run point by point; a
    dynamic one in one batch."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # no warning for weights listed as graph inputs (old TF exporters)
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    consts = _initializers(path)
    if inp.name in consts:  # weights as graph inputs: the data input is the one without a value
        inp = next(i for i in sess.get_inputs() if i.name not in consts)
    dtype = _ORT_TYPES.get(inp.type)
    if dtype is None:
        raise ValueError(f"{path}: input type {inp.type} is not supported by the sweep")
    shape = list(inp.shape)
    fixed = [d for d in shape[1:] if isinstance(d, int)]
    if len(shape) >= 2 and not isinstance(shape[0], int) and len(fixed) == len(shape) - 1:
        xs = np.asarray(x, dtype=dtype).reshape([len(x), *shape[1:]])
        y = sess.run(None, {inp.name: xs})[0]
        return np.asarray(y, dtype=np.float64).reshape(len(x), -1)
    one = [1 if not isinstance(d, int) else d for d in shape]
    rows = []
    for p in np.asarray(x, dtype=dtype):
        y = sess.run(None, {inp.name: p.reshape(one)})[0]
        rows.append(np.asarray(y, dtype=np.float64).ravel())
    return np.stack(rows)


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


# -- CLI subprocesses ----------------------------------------------------------------------------------
def _cli() -> list:
    return [sys.executable, "-m", "leo_verify"]


def _run(cmd: list, timeout: float | None, env: dict) -> tuple:
    """``(exit code or None on timeout, stdout, stderr, seconds)``; on timeout the whole
    process group of the child (started here in its own session) is killed."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    try:
        so, se = p.communicate(timeout=timeout)
        return p.returncode, so, se, time.perf_counter() - t
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        so, se = p.communicate()
        return None, so, se, time.perf_counter() - t


def _env() -> dict:
    env = dict(os.environ)
    if not env.get("LEO_VERIFY_CACHE"):
        env["LEO_VERIFY_CACHE"] = tempfile.mkdtemp(prefix="leo_sweep_cache_")
    return env


def _last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


# -- one pair ---
def empty_row(name: str, model: str, spec: str, **kw) -> dict:
    return {"network": name, "spec": os.path.splitext(os.path.basename(spec))[0], "model": model,
            "domain": spec, "out": None, "boxes": None, "points": None, "neurons_before": None,
            "neurons_after": None, "eval_diff": None, "emitted_diff": None, "emitted_f64_diff": None,
            "eps": None, "compress_s": None, "recheck_s": None, "compress_exit": None, "recheck_exit": None,
            "recheck_verdict": None, "error": None, **kw}


# -- one pair ------------------------------------------------------------------------------------------
def run_pair(name: str, model: str, spec: str, out: str, *, points: int = 1000, seed: int = 0,
             timeout: float | None = None, budget: float | None = None,
             certify_pieces_budget: float | None = None, certify_time_limit: float | None = None,
             query_time_limit: float | None = None, extra: tuple = ()) -> dict:
    """load -> eval vs onnxruntime -> compress -> recheck -> emitted vs original in onnxruntime.

    ``out`` is this pair's output folder (removed first if it exists). Returns one row (a dict);
    problems are recorded in ``row["error"]``, never raised.
    """
    from leo_verify.domain import parse_union
    from leo_verify.io import load
    from leo_verify.semantics import evaluate

    row = empty_row(name, model, spec, out=out, points=points)
    env = _env()
    # 1. load, sample, eval vs onnxruntime
    g = load(model)
    dom = parse_union(spec, n=g.input_size)
    row["boxes"] = len(dom)
    row["neurons_before"] = len(g.neurons())
    x = dom.sample(points, np.random.default_rng(seed))
    y_ort = ort_outputs(model, x)
    y64 = evaluate(g, x, apply_head=True).reshape(len(x), -1)
    row["eval_diff"] = max_abs(y64, y_ort)
    # 2. compress
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    cmd = [*_cli(), "compress", model, "--domain", spec, "-o", out, "--no-checkpoint", "--no-progress"]
    for flag, val in (("--budget", budget), ("--certify-pieces-budget", certify_pieces_budget),
                      ("--certify-time-limit", certify_time_limit), ("--query-time-limit", query_time_limit)):
        if val is not None:
            cmd += [flag, str(val)]
    cmd += list(extra)
    code, so, se, secs = _run(cmd, timeout, env)
    row["compress_s"] = round(secs, 2)
    row["compress_exit"] = "timeout" if code is None else code
    if code is None:
        row["error"] = f"compress timed out after {timeout} s"
        return row
    report_path = os.path.join(out, "report.json")
    if not os.path.isfile(report_path):
        row["error"] = f"compress exit {code}, no report.json: {_last_line(se) or _last_line(so)}"
        return row
    with open(report_path) as fh:
        rep = json.load(fh)
    row["neurons_after"] = rep["after"]["neurons"]
    if rep["before"]["neurons"] != row["neurons_before"]:
        row["error"] = f"report says {rep['before']['neurons']} neurons before, the loader {row['neurons_before']}"
    files = (rep.get("head") or {}).get("files") or {}
    if "compressed.onnx" in files:
        row["eps"] = files["compressed.onnx"].get("bound_float")
    if code not in (0, 2):
        row["error"] = row["error"] or f"compress exit {code}: {_last_line(se)}"
    # 3. recheck
    code_r, so_r, se_r, secs_r = _run([*_cli(), "recheck", out, "--domain", spec, "--json"], timeout, env)
    row["recheck_s"] = round(secs_r, 2)
    row["recheck_exit"] = "timeout" if code_r is None else code_r
    try:
        row["recheck_verdict"] = json.loads(so_r)["verdict"]
    except (ValueError, KeyError, TypeError):
        row["recheck_verdict"] = "timeout" if code_r is None else "no verdict"
        row["error"] = row["error"] or f"recheck exit {row['recheck_exit']}: {_last_line(se_r)}"
    # 4. emitted file vs original in onnxruntime
    emitted = os.path.join(out, "compressed.onnx")
    if os.path.isfile(emitted):
        try:
            row["emitted_diff"] = max_abs(ort_outputs(emitted, x), y_ort)
            # the same in float64 (leo_verify's reader and interpreter): the real-arithmetic
            # difference that eps bounds, without onnxruntime's float32 rounding
            row["emitted_f64_diff"] = max_abs(evaluate(load(emitted), x, apply_head=True).reshape(len(x), -1), y64)
        except Exception as exc:  # noqa: BLE001 - a row of the table, not a crash
            row["error"] = row["error"] or f"onnxruntime on {emitted}: {type(exc).__name__}: {exc}"
    else:
        row["error"] = row["error"] or "no compressed.onnx written"
    return row


# -- table ---------------------------------------------------------------------------------------------
def _fmt(v, kind: str = "") -> str:
    if v is None:
        return "-"
    if kind == "e":
        return f"{v:.1e}"
    if kind == "s":
        return f"{v:.1f}"
    return str(v)


def verdict(row: dict) -> str:
    c = row["compress_exit"]
    if c is None:
        return "load/eval failed"
    if c == "timeout":
        return "compress timeout"
    return f"exit {c} / {row['recheck_verdict'] or '-'}"


def table(rows: list) -> str:
    head = ("| network | spec | boxes | neurons before | neurons after | eval diff | emitted diff | f64 diff "
            "| eps (proven) | compress s | recheck s | verdict (compress exit / recheck) |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append("| " + " | ".join([
            r["network"], r["spec"], _fmt(r["boxes"]), _fmt(r["neurons_before"]), _fmt(r["neurons_after"]),
            _fmt(r["eval_diff"], "e"), _fmt(r["emitted_diff"], "e"), _fmt(r.get("emitted_f64_diff"), "e"), _fmt(r["eps"], "e"),
            _fmt(r["compress_s"], "s"), _fmt(r["recheck_s"], "s"), verdict(r)]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="cartpole safe_14, lunarlander safe_1, ACAS 1_1 prop_3 and prop_4")
    ap.add_argument("--acas-nets", default=None, help="comma-separated, e.g. 1_1,1_2 (default 1_1)")
    ap.add_argument("--props", default=None, help="ACAS properties, e.g. 1,2,6 (default 1..10)")
    ap.add_argument("--no-acas", action="store_true")
    ap.add_argument("--no-rl", action="store_true")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per compress (and per recheck)")
    ap.add_argument("--budget", type=float, default=None, help="passed to compress --budget")
    ap.add_argument("--certify-pieces-budget", type=float, default=None)
    ap.add_argument("--certify-time-limit", type=float, default=None)
    ap.add_argument("--query-time-limit", type=float, default=None)
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output folders (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="write the rows to this file")
    args = ap.parse_args(argv)
    if not os.path.isdir(BENCH):
        print(f"benchmarks not found: {BENCH}", file=sys.stderr)
        return 4
    base = args.out or tempfile.mkdtemp(prefix="field_sweep_")
    rows = []
    todo = pairs(args)
    for k, (name, model, spec) in enumerate(todo, 1):
        stem = os.path.splitext(os.path.basename(spec))[0]
        print(f"[{k}/{len(todo)}] {name} {stem} ...", file=sys.stderr, flush=True)
        try:
            row = run_pair(name, model, spec, os.path.join(base, f"{name}__{stem}"), points=args.points,
                           seed=args.seed, timeout=args.timeout, budget=args.budget,
                           certify_pieces_budget=args.certify_pieces_budget,
                           certify_time_limit=args.certify_time_limit, query_time_limit=args.query_time_limit)
        except Exception as exc:  # noqa: BLE001 - load/eval failure: a row, not a crash
            row = empty_row(name, model, spec, error=f"{type(exc).__name__}: {exc}")
        rows.append(row)
        print(f"    {verdict(row)}  {row['neurons_before']} -> {row['neurons_after']} neurons  "
              f"compress {row['compress_s']} s  recheck {row['recheck_s']} s"
              + (f"  ({row['error']})" if row.get("error") else ""), file=sys.stderr, flush=True)
        if args.json:  # keep partial results of a long sweep
            with open(args.json, "w") as fh:
                json.dump({"rows": rows, "args": vars(args)}, fh, indent=1)
    print(table(rows))
    errs = [r for r in rows if r.get("error")]
    if errs:
        print()
        for r in errs:
            print(f"* {r['network']} {r['spec']}: {r['error']}")
    print(f"\noutput folders: {base}")
    ok = all(r["compress_exit"] == 0 and r["recheck_verdict"] == "certified" for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
