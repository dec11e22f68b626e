"""Run every proof script and tabulate: rule | expected | got | time.

    python proofs/run_all.py [--smt2-dir DIR] [--timeout SECONDS]

Each script runs in its own process (``sys.executable proofs/<rule>.py``).
``got`` is the answer of the script's main query as it printed it; a script
whose side checks disagree, that crashes or that times out counts as a
mismatch.  ``--smt2-dir DIR`` also writes every main query to
``DIR/<rule>.smt2`` (re-check with ``z3 DIR/<rule>.smt2``).  Exit status 0
iff every script gave its expected answer, 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

#: rule -> expected answer of its main query ("unsat": the rule is sound).
RULES = {
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


def run_one(rule: str, *, timeout: float, smt2_dir: str | None) -> dict:
    cmd = [sys.executable, os.path.join(HERE, f"{rule}.py")]
    if smt2_dir:
        cmd += ["--smt2", os.path.join(smt2_dir, f"{rule}.smt2")]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"rule": rule, "got": "timeout", "status": "MISMATCH", "code": None,
                "seconds": time.perf_counter() - t0, "output": ""}
    seconds = time.perf_counter() - t0
    m = VERDICT.search(proc.stdout)
    got = m.group(3) if m else "no verdict"
    status = m.group(5) if m else "MISMATCH"
    ok = proc.returncode == 0 and status == "OK" and got == RULES[rule]
    return {"rule": rule, "got": got, "status": "OK" if ok else "MISMATCH",
            "code": proc.returncode, "seconds": seconds,
            "output": proc.stdout + proc.stderr}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--smt2-dir", help="write each main query to DIR/<rule>.smt2")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per script")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each script's output")
    args = ap.parse_args(argv)
    if args.smt2_dir:
        os.makedirs(args.smt2_dir, exist_ok=True)

    rows = [run_one(rule, timeout=args.timeout, smt2_dir=args.smt2_dir) for rule in RULES]
    w = max(len(r) for r in RULES)
    print(f"{'rule'.ljust(w)} | expected | got        | time (s) | status")
    print(f"{'-' * w}-|----------|------------|----------|---------")
    for r in rows:
        print(f"{r['rule'].ljust(w)} | {RULES[r['rule']]:<8} | {r['got']:<10} | "
              f"{r['seconds']:8.2f} | {r['status']}")
    bad = [r for r in rows if r["status"] != "OK"]
    for r in rows if args.verbose else bad:
        print(f"\n===== {r['rule']} (exit code {r['code']}) =====\n{r['output']}")
    print(f"\n{len(rows) - len(bad)}/{len(rows)} as expected")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
