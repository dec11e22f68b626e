"""Shared driver of the proof scripts in this folder (not a proof itself).

Every script builds, over z3 ``Real`` constants (exact rationals, no floats):

* ``definitions``: named intermediate values (pre-activations
  ``z_i == W_i . x + b_i``), true in every model by construction;
* ``hypotheses``: the rule's side conditions (stability facts, linear
  dependencies), stated at one symbolic input point;
* ``goal``: "the rewritten network computes the same outputs" at that point;

and asks z3 whether ``hypotheses AND NOT goal`` is satisfiable.  Weights,
biases and inputs are free constants, so ``unsat`` means the rule holds for
*every* choice of real weights and every input satisfying the hypotheses;
``sat`` gives a concrete counterexample (weights and an input).  A
definition ``z_i == W_i . x + b_i`` restricts nothing: every assignment of the
free constants extends uniquely to the named ones.

Besides the main query a script lists *side checks* that keep the proof
honest: the hypotheses are satisfiable in a non-trivial way (an ``unsat``
from contradictory hypotheses would prove nothing), and a slightly wrong
variant of the rule (a *mutant*) is ``sat`` (the encoding can tell a right
rewrite from a wrong one).  The script exits 0 only if the main query and
every side check give their expected answers.

Command line of every script::

    python proofs/<rule>.py [--smt2 FILE] [--timeout SECONDS]

``--smt2 FILE`` writes the main query as SMT-LIB 2 (``(set-info :status ..)``
holds the expected answer), so that ``z3 FILE`` or another solver with
nonlinear real arithmetic can re-check it.

The last line printed is machine-readable (``proofs/run_all.py`` and the
tests read it)::

    verdict: <rule> expected=<sat|unsat> got=<sat|unsat|unknown> time=<s> status=<OK|MISMATCH>
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Sequence

import z3

__all__ = ["relu", "vec", "mat", "affine", "col", "dot", "named", "Check", "run", "value", "fmt",
           "main_exit"]


# --------------------------------------------------------------------------- encoding

def relu(z: z3.ArithRef) -> z3.ArithRef:
    """The exact ReLU of leo_verify's interpreter (``v if v > 0 else 0``)."""
    return z3.If(z > 0, z, z3.RealVal(0))


def vec(name: str, n: int) -> list[z3.ArithRef]:
    """``n`` free real constants ``name_0 .. name_{n-1}``."""
    return [z3.Real(f"{name}_{i}") for i in range(n)]


def mat(name: str, rows: int, cols: int) -> list[list[z3.ArithRef]]:
    """A ``rows x cols`` matrix of free real constants ``name_i_j``."""
    return [[z3.Real(f"{name}_{i}_{j}") for j in range(cols)] for i in range(rows)]


def col(m: Sequence[Sequence[z3.ArithRef]], j: int) -> list[z3.ArithRef]:
    return [row[j] for row in m]


def dot(a: Sequence, b: Sequence):
    """``sum_i a_i b_i`` for z3 terms or plain numbers (Fractions) alike; 0 if empty."""
    return sum((p * q for p, q in zip(a, b)), 0)


def _sum(terms: Sequence[z3.ArithRef]) -> z3.ArithRef:
    terms = list(terms)
    return z3.Sum(terms) if terms else z3.RealVal(0)


def affine(w: Sequence[Sequence[z3.ArithRef]], x: Sequence[z3.ArithRef],
           b: Sequence[z3.ArithRef]) -> list[z3.ArithRef]:
    """``w x + b`` (``w`` is a list of rows; a row may be empty)."""
    return [_sum([wi[j] * x[j] for j in range(len(x))]) + bi for wi, bi in zip(w, b)]


def named(name: str, terms: Sequence[z3.ArithRef]) -> tuple[list[z3.ArithRef], list]:
    """Fresh constants ``name_i`` and their definitions ``name_i == terms[i]``.

    Pre-activations are named this way: ``z_i == W_i . x + b_i`` is a
    definition (every model gives ``z_i`` exactly that value), not an
    assumption, and it lets z3 reason about ``relu(z_i)`` by cases on the
    scalar ``z_i`` instead of on an expanded polynomial.  (With the expanded
    terms, merge_rank at n = 3 returned ``unknown`` after 120 s; named, it is
    ``unsat`` in milliseconds.)
    """
    xs = vec(name, len(terms))
    return xs, [v == t for v, t in zip(xs, terms)]


# --------------------------------------------------------------------------- models

def value(model: z3.ModelRef, term: z3.ArithRef) -> Fraction:
    """The exact rational value of ``term`` in ``model`` (model completion on)."""
    v = model.eval(term, model_completion=True)
    if not z3.is_rational_value(v):  # only algebraic numbers are irrational
        raise ValueError(f"non-rational model value {v} for {term}")
    return Fraction(v.numerator_as_long(), v.denominator_as_long())


def fmt(q: Fraction) -> str:
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


# --------------------------------------------------------------------------- driver

@dataclass
class Check:
    """A side check: ``constraints`` must be ``expected`` (``"sat"``/``"unsat"``)."""

    label: str
    constraints: list
    expected: str


@dataclass
class _Outcome:
    label: str
    expected: str
    got: str = "unknown"
    seconds: float = 0.0
    model: z3.ModelRef | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.got == self.expected


def _solve(label: str, constraints: list, expected: str, timeout_s: float) -> _Outcome:
    s = z3.Solver()
    s.set("timeout", int(timeout_s * 1000))
    s.add(*constraints)
    t0 = time.perf_counter()
    r = s.check()
    out = _Outcome(label, expected, str(r), time.perf_counter() - t0)
    if r == z3.sat:
        out.model = s.model()
    return out


def smt2_text(constraints: list, expected: str, comment: str) -> str:
    """The SMT-LIB 2 benchmark of ``constraints`` with ``:status expected``."""
    s = z3.Solver()
    s.add(*constraints)
    text = s.to_smt2()
    text = text.replace("(set-info :status unknown)", f"(set-info :status {expected})", 1)
    head = "".join(f"; {line}\n" for line in comment.strip().splitlines())
    return head + text


def run(*, rule: str, doc: str, hypotheses: list, goal: z3.BoolRef,
        definitions: Sequence = (), expected: str = "unsat", checks: Sequence[Check] = (),
        on_model: Callable[[z3.ModelRef], bool] | None = None,
        argv: Sequence[str] | None = None) -> int:
    """Parse the command line, solve, print, return the exit code.

    ``definitions`` (e.g. named pre-activations) are added to every query,
    the main one and each side check.

    ``on_model`` (for an expected ``sat``) prints the counterexample and
    re-checks it outside z3 with exact Fractions; it returns False if the
    model does not show what it should, which makes the run a mismatch.
    """
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    ap.add_argument("--smt2", metavar="FILE", help="write the main query as SMT-LIB 2")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds per z3 query (default 120); a timeout is a mismatch")
    args = ap.parse_args(argv)

    defs = list(definitions)
    main_q = defs + list(hypotheses) + [z3.Not(goal)]
    print(f"rule: {rule}")
    print(doc.strip())
    print()
    if args.smt2:
        comment = (f"leo_verify proofs/{rule}.py: hypotheses AND NOT(goal)\n"
                   f"expected: {expected}")
        with open(args.smt2, "w", encoding="utf-8") as fh:
            fh.write(smt2_text(main_q, expected, comment))
        print(f"wrote SMT-LIB 2 query to {args.smt2}")

    t0 = time.perf_counter()
    main = _solve("main: hypotheses AND NOT(same outputs)", main_q, expected, args.timeout)
    side = [_solve(c.label, defs + list(c.constraints), c.expected, args.timeout)
            for c in checks]
    total = time.perf_counter() - t0

    width = max(len(o.label) for o in [main, *side])
    print(f"{'query'.ljust(width)} | expected | got     | seconds")
    for o in [main, *side]:
        mark = "" if o.ok else "   <-- MISMATCH"
        print(f"{o.label.ljust(width)} | {o.expected:<8} | {o.got:<7} | {o.seconds:.3f}{mark}")
    ok = main.ok and all(o.ok for o in side)
    if main.got == "sat" and main.model is not None and on_model is not None:
        print()
        ok = on_model(main.model) and ok
    elif main.got == "sat" and main.model is not None:
        print("\ncounterexample (model of the main query):")
        print(main.model)
    print()
    status = "OK" if ok else "MISMATCH"
    print(f"verdict: {rule} expected={expected} got={main.got} time={total:.3f} status={status}")
    return 0 if ok else 1


def main_exit(code: int) -> None:
    sys.stdout.flush()
    sys.exit(code)
