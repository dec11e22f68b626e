"""The answer of an equivalence check (:class:`CheckResult`), exact number helpers and
:func:`replay` (the guard every counterexample passes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import numpy as np

from ...domain import Box
from ...graph import Graph
from ...heads import apply_head
from ...semantics import evaluate, evaluate_exact


MODES = ("epsilon", "exact", "top1", "top1-confidence")
#: every stage :func:`check_equivalence` can run (``"structural"``: the hook provers)
METHODS = ("fuzz", "structural", "diff", "bounds", "milp", "z3")
VERDICTS = ("equivalent", "counterexample", "unknown")


def _margin(epsilon: float) -> float:
    """Safety margin of a floating-point MILP proof of ``max |f - g| <= epsilon``."""
    return 1e-9 + 1e-6 * epsilon


@dataclass
class CheckResult:
    """The outcome of :func:`check_equivalence`.

    Attributes
    ----------
    verdict : ``"equivalent"``, ``"counterexample"`` or ``"unknown"``.
    mode, epsilon : the question asked.
    method : the prover that decided (``"fuzz"``, ``"structural"`` or a hook's own
        name, ``"bounds"``, ``"milp"``, ``"z3"``), or ``None`` when unknown.
    proof : for ``"equivalent"``: ``"exact"`` (exact rational reasoning: z3, an
        exact structural prover), ``"sound-float"`` (rigorous outward-rounded float
        bounds) or ``"milp-float"`` (a float MILP solver's dual bounds beyond a
        margin, not re-proved exactly); for a counterexample ``"replayed"``
        (exact re-evaluation); ``None`` when unknown.
    reason : why the verdict (what each stage said), one line.
    counterexample : the replayed counterexample (see :func:`replay`) or ``None``.
    max_diff_seen : the largest float quantity seen (``max_i |f_i - g_i|``; top1:
        the disagreement margin) at any evaluated point.
    best_bound : a proven bound on ``max_i |f_i - g_i|`` over the box (float;
        from sound bounds or MILP dual bounds, the proof level as in ``proof``),
        or ``None``.
    stages : per stage: name, outcome, seconds and details.
    discarded : candidates that did not replay (source and the exact check).
    time : seconds.
    """

    verdict: str
    mode: str = "epsilon"
    epsilon: float = 0.0
    method: str | None = None
    proof: str | None = None
    reason: str = ""
    counterexample: dict | None = None
    max_diff_seen: float = 0.0
    best_bound: float | None = None
    stages: list = field(default_factory=list)
    discarded: list = field(default_factory=list)
    time: float = 0.0
    solver: str = "scip"
    seed: int = 0
    fuzz: dict | None = None
    certificate: dict | None = None

    def to_json(self) -> dict:
        return {
            "verdict": self.verdict,
            "mode": self.mode,
            "epsilon": self.epsilon,
            "method": self.method,
            "proof": self.proof,
            "reason": self.reason,
            "counterexample": self.counterexample,
            "max_diff_seen": _num(self.max_diff_seen),
            "best_bound": _num(self.best_bound),
            "stages": self.stages,
            "discarded": self.discarded,
            "solver": self.solver,
            "seed": self.seed,
            "fuzz": self.fuzz,
            "certificate": self.certificate,
            "timings": {s["stage"]: s["time"] for s in self.stages},
            "time": self.time,
        }


#: what the reason of an exact proof without a kernel certificate says (the CLI's hint keys on it)
UNCERTIFIED = "leaves no certificate the checker kernel re-checks"


def kernel_certificate(result: "CheckResult", f: Graph, g: Graph) -> dict | None:
    """The body of the kernel-checkable certificate of an EQUIVALENT ``result``, or None.

    A certificate counts only when it is about the very question asked, in the form
    :func:`leo_verify.kernel.recheck_check.recheck_check` re-checks: the same mode, the same
    epsilon (delta), and heads the kernel accepts for that mode (a proof about the logits at
    ``epsilon / L`` for networks with a head is not one).
    """
    from ...kernel.exact import fraction_str
    from ...kernel.recheck_check import head_ok
    c = result.certificate
    if result.verdict != "equivalent" or c is None or c.get("mode") != result.mode:
        return None
    if result.mode == "epsilon" and c.get("epsilon") != fraction_str(Fraction(result.epsilon)):
        return None
    if result.mode == "top1-confidence" and c.get("delta") != fraction_str(Fraction(result.epsilon)):
        return None
    through = "logit_epsilon" in c
    if not (head_ok(f, result.mode, through_lipschitz=through)[0]
            and head_ok(g, result.mode, through_lipschitz=through)[0]):
        return None
    if through and f.op(f.output_name).head_key() != g.op(g.output_name).head_key():
        return None
    return c


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _qtext(q: Fraction) -> str:
    q = Fraction(q)
    return f"{q.numerator}/{q.denominator}"


def _to_fraction(v) -> Fraction:
    if isinstance(v, Fraction):
        return v
    if isinstance(v, str):
        return Fraction(v)
    if isinstance(v, (int, np.integer)):
        return Fraction(int(v))
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"coordinate {v!r} is not finite")
    return Fraction(f)


#: a float64 softmax of exact logits is within this much (relative) of the real one
CONFIDENCE_MARGIN = 1e-9


def _first_argmax(vals: Sequence) -> int:
    best = 0
    for i, v in enumerate(vals):
        if v > vals[best]:
            best = i
    return best


# -- replay ------------------------------------------------------------------------

def replay(f: Graph, g: Graph, box: Box, point, *, mode: str = "epsilon",
           epsilon: float = 0.0) -> tuple[dict | None, dict]:
    """Re-evaluate a candidate counterexample exactly.

    ``point``: floats, Fractions or ``"p/q"`` strings; it is clipped into the
    box exactly first.  Returns ``(counterexample, check)``: the counterexample
    dict if the exact outputs confirm it (``None`` otherwise) and a small
    description of the exact check (for the discarded list).
    """
    lo, hi = box.exact_bounds()
    q = [_to_fraction(v) for v in np.asarray(point, dtype=object).ravel().tolist()]
    if len(q) != box.size:
        return None, {"replayed": False, "why": f"point has {len(q)} values, box {box.size}"}
    clipped = any(v < l or v > h for v, l, h in zip(q, lo, hi))
    q = [min(max(v, l), h) for v, l, h in zip(q, lo, hi)]
    ef, eg = evaluate_exact(f, q), evaluate_exact(g, q)
    fp = np.array([float(v) for v in q])
    yf, yg = evaluate(f, fp)[0], evaluate(g, fp)[0]
    diffs = [a - b for a, b in zip(ef, eg)]
    k = max(range(len(diffs)), key=lambda i: abs(diffs[i])) if diffs else 0
    dmax = abs(diffs[k]) if diffs else Fraction(0)
    af, ag = _first_argmax(ef), _first_argmax(eg)
    if mode == "epsilon":
        ok = dmax > _to_fraction(epsilon)
    elif mode == "exact":
        ok = dmax != 0
    elif mode == "top1-confidence":
        # softmax of f's exact logits in float64 (exp is accurate to a few ulps; the margin is ~1e7 ulps)
        thr = float(epsilon) * (1 + CONFIDENCE_MARGIN) + CONFIDENCE_MARGIN
        probs = apply_head("softmax", {}, np.array([[float(v) for v in ef]]))[0]
        ok = any(p > thr and c != ag for c, p in enumerate(probs))
    else:
        ok = af != ag
    check = {"difference": float(dmax), "output": int(k), "argmax_f": af, "argmax_g": ag,
             "replayed": bool(ok), "clipped": clipped}
    if not ok:
        return None, check
    exact_point = all(float(v) == v for v in q)
    cex = {
        "point": [float(v) for v in q],
        "point_exact": [_qtext(v) for v in q],
        "point_is_float": exact_point,
        "f": [float(v) for v in yf],
        "g": [float(v) for v in yg],
        "f_exact": [_qtext(v) for v in ef],
        "g_exact": [_qtext(v) for v in eg],
        "f_exact_float": [float(v) for v in ef],
        "g_exact_float": [float(v) for v in eg],
        "difference": float(dmax),
        "difference_exact": _qtext(dmax),
        "output": int(k),
        "float_difference": float(np.max(np.abs(yf - yg))) if len(yf) else 0.0,
        "argmax_f": af,
        "argmax_g": ag,
        "clipped": clipped,
    }
    return cex, check
