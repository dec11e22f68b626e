"""The float side of the LP-dual certificates: HiGHS proposes multipliers.

The LP itself (the triangle relaxation, built from exact rational data) and
the exact weak-duality check of any multiplier vector live in the checker
kernel (:mod:`leo_verify.kernel.lp`).  Here a floating-point LP solver
(HiGHS) solves the float rounding of that LP; its row duals (or Farkas ray)
are then *checked* by the kernel, so the solver is never trusted: a bad
answer only makes the bound weaker (or the certificate fail).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping

import numpy as np

from ..kernel.exact import Q, fraction_str
from ..kernel.lp import (LP_ENCODERS, LinearProgram, _objective, bound_from_multipliers, build_lp, fixings,
                         verify_multipliers)

__all__ = ["LinearProgram", "LP_ENCODERS", "build_lp", "DualBound", "lp_bound", "verify_multipliers",
           "bound_from_multipliers", "fixings", "highs_model"]


def _floats(q: Q) -> np.ndarray:
    """Nearest floats of a :class:`Q` vector (:meth:`Q.floats`)."""
    return q.floats()


def highs_model(lp: LinearProgram):
    """A HiGHS model of the float rounding of ``lp`` (built once, cached on ``lp``)."""
    if lp._highs is None:
        from ..analysis.backends import _new_highs
        h = _new_highs()
        inf = h.getInfinity()
        rows, cols, coef, *_ = lp.exact()
        vlo, vhi, rlo, rhi = lp.float_bounds()
        vhi = np.maximum(vhi, vlo)  # an empty range: the exact check decides
        h.addVars(lp.num_vars, vlo, vhi)
        if lp.num_rows:
            order = np.lexsort((cols, rows))
            r, c, v = rows[order], cols[order], _floats(coef)[order]
            starts = np.searchsorted(r, np.arange(lp.num_rows)).astype(np.int32)
            h.addRows(lp.num_rows, np.clip(rlo, -inf, inf), np.clip(rhi, -inf, inf), len(v),
                      starts, c.astype(np.int32), v.astype(np.float64))
        h.setOptionValue("threads", 1)
        lp._highs = h
    return lp._highs


@dataclass
class DualBound:
    """A proven bound on an objective (``bound``) and the multipliers that prove it.

    ``kind`` is ``"lower"`` (``c.v >= bound`` on the LP) or ``"upper"``; or
    ``"infeasible"`` when the multipliers prove the LP empty.  ``float_value``
    is the solver's (unproven) optimum, for diagnostics.
    """

    kind: str
    bound: Fraction | None
    multipliers: dict  # row -> multiplier as an exact string (the non-zero ones)
    float_value: float | None = None
    status: str = ""
    duals: np.ndarray | None = None  # the float multipliers (for branching heuristics)
    x: np.ndarray | None = None  # the float LP solution (for branching heuristics)


def lp_bound(lp: LinearProgram, objective: Mapping[int, Fraction], *, sense: str,
             time_limit: float = 10.0) -> DualBound:
    """A proven bound on ``objective`` over ``lp``: ``sense="max"`` gives an upper bound.

    Solves the float LP with HiGHS, then recomputes the bound exactly from its
    row duals (:func:`verify_multipliers`).  If the float LP is infeasible, the
    Farkas ray is checked instead (``kind="infeasible"`` when it proves it).
    Returns ``bound=None`` when the solver gives nothing usable.
    """
    import highspy
    sign = 1 if sense == "min" else -1
    c = _objective(lp, {v: sign * Fraction(a) for v, a in objective.items()})
    h = highs_model(lp)
    n = lp.num_vars
    h.changeColsCost(n, np.arange(n, dtype=np.int32), _floats(c))
    h.changeObjectiveSense(highspy.ObjSense.kMinimize)
    from ..analysis.backends import highs_time_limit
    highs_time_limit(h, time_limit)
    h.run()
    status = h.getModelStatus()
    kind = "lower" if sense == "min" else "upper"
    M = highspy.HighsModelStatus
    if status == M.kInfeasible:
        ok, has_ray, ray = h.getDualRay()
        if has_ray:
            zero = Q.zeros(n)
            for s in (1, -1):
                lam = Q.of(s * np.asarray(ray, dtype=np.float64))
                if verify_multipliers(lp, zero, lam) > 0:
                    return DualBound("infeasible", None, _strs(lam), status="infeasible")
        return DualBound(kind, None, {}, status="infeasible-unproven")
    if status != M.kOptimal:
        return DualBound(kind, None, {}, status=h.modelStatusToString(status))
    duals = np.asarray(h.getSolution().row_dual, dtype=np.float64)
    if not np.all(np.isfinite(duals)):
        # a solver's non-finite answer proves nothing: the query stays open
        return DualBound(kind, None, {}, status="non-finite duals")
    lam = Q.of(duals) if len(duals) else Q.zeros(0)
    lb = verify_multipliers(lp, c, lam)
    value = float(h.getInfo().objective_function_value)
    return DualBound(kind, sign * lb, _strs(lam), float_value=sign * value, status="optimal",
                     duals=duals, x=np.asarray(h.getSolution().col_value, dtype=np.float64))


def _strs(lam: Q) -> dict:
    return {str(i): fraction_str(f) for i, f in enumerate(lam.fractions()) if f != 0}
