"""Branch and bound over ReLU phases on one LP, every leaf an exact certificate.

The LP is a claim's triangle relaxation (:func:`.lp.build_lp`).  A branch
fixes relaxed units active or inactive, which only changes bounds
(:func:`.lp.fixings`), so one HiGHS model is re-used for every node.  Floats
only steer the search: a node is closed when its multipliers, re-checked
exactly with the branch's bounds (:func:`.lp.verify_multipliers`), prove the
claim or prove the branch empty.  The two children of a split cover the
parent (``z >= 0`` or ``z <= 0``), so the leaves cover the domain.

Branching is *strong branching* on a short list of candidates (largest
``y* - max(z*, 0)`` at the LP optimum, then the largest triangle): each
candidate's two children are solved in floats and the split whose weaker
child improves most is taken.  Measured on l1-trained digits nets, this
needs far fewer nodes than taking the first candidate.
"""
from __future__ import annotations

import time
from fractions import Fraction
from typing import Mapping

import numpy as np

from ..kernel.exact import Q, fraction_str
from ..analysis.backends import highs_time_limit
from .lp import LinearProgram, _floats, _objective, _strs, fixings, highs_model, verify_multipliers

__all__ = ["ReluBranchAndBound"]


class ReluBranchAndBound:
    """Prove ``objective <= 0`` (``sense="max"``) or ``>= 0`` (``"min"``) on ``lp`` by branching.

    Parameters
    ----------
    lp : the relaxation (its relaxed units, ``lp.units``, are the branching candidates).
    objective : variable -> coefficient.
    sense : ``"max"``: prove the maximum ``<= 0``; ``"min"``: the minimum ``>= 0``.
    deadline : ``time.monotonic()`` value after which the search gives up.
    max_nodes : node budget.
    candidates : strong-branching list length.
    """

    def __init__(self, lp: LinearProgram, objective: Mapping[int, Fraction], *, sense: str,
                 deadline: float, max_nodes: int = 2000, candidates: int = 4):
        self.lp, self.sense = lp, sense
        self.sign = 1 if sense == "min" else -1  # we minimise sign * objective and need >= 0
        self.c = _objective(lp, {v: self.sign * Fraction(a) for v, a in objective.items()})
        self.cf = _floats(self.c)
        self.deadline, self.max_nodes, self.k = deadline, max_nodes, candidates
        self.nodes = 0
        self.lps = 0
        self.reason = ""
        h = self.h = highs_model(lp)
        n = lp.num_vars
        self._cols = np.arange(n, dtype=np.int32)
        self._rows = np.arange(lp.num_rows, dtype=np.int32)
        inf = h.getInfinity()
        self._vlo, self._vhi, rlo, rhi = lp.float_bounds()
        self._rlo, self._rhi = np.clip(rlo, -inf, inf), np.clip(rhi, -inf, inf)
        import highspy
        self._hs = highspy
        h.changeColsCost(n, self._cols, self.cf)
        h.changeObjectiveSense(highspy.ObjSense.kMinimize)

    # -- float solves ------------------------------------------------------------
    def _solve(self, fix: Mapping[str, str]):
        """(status, value, duals, x, ray) of the float LP of a branch."""
        h, hs = self.h, self._hs
        vlo, vhi, rhi = self._vlo.copy(), self._vhi.copy(), self._rhi.copy()
        zlo, zhi, zrow = fixings(self.lp, fix)
        for v in zlo:
            vlo[v] = max(vlo[v], 0.0)
        for v in zhi:
            vhi[v] = min(vhi[v], 0.0)
        for r in zrow:
            rhi[r] = min(rhi[r], 0.0)
        vhi = np.maximum(vhi, vlo)  # an empty range: keep HiGHS happy, the LP is then still exact-checked
        h.changeColsBounds(len(vlo), self._cols, vlo, vhi)
        if len(self._rows):
            h.changeRowsBounds(len(self._rows), self._rows, self._rlo, rhi)
        highs_time_limit(h, max(0.05, min(10.0, self.deadline - time.monotonic())))
        h.run()
        self.lps += 1
        st = h.getModelStatus()
        M = hs.HighsModelStatus
        if st == M.kInfeasible:
            ok, has_ray, ray = h.getDualRay()
            return "infeasible", np.inf, None, None, (np.asarray(ray) if has_ray else None)
        if st != M.kOptimal:
            return "unknown", -np.inf, None, None, None
        sol = h.getSolution()
        return ("optimal", float(h.getInfo().objective_function_value),
                np.asarray(sol.row_dual, dtype=np.float64), np.asarray(sol.col_value, dtype=np.float64),
                None)

    def _exact_leaf(self, fix, status, duals, ray) -> dict | None:
        n = self.lp.num_vars
        if status == "infeasible" and ray is not None and np.all(np.isfinite(ray)):
            zero = Q.zeros(n)
            for s in (1, -1):
                lam = Q.of(s * ray)
                if verify_multipliers(self.lp, zero, lam, fix=fix) > 0:
                    return {"proof": "infeasible", "multipliers": _strs(lam)}
            return None
        if status == "optimal" and np.all(np.isfinite(duals)):
            lam = Q.of(duals) if len(duals) else Q.zeros(0)
            lb = verify_multipliers(self.lp, self.c, lam, fix=fix)
            if lb >= 0:
                return {"proof": "lp-dual", "multipliers": _strs(lam), "bound": fraction_str(self.sign * lb)}
        return None

    # -- search --------------------------------------------------------------------------
    def _candidates(self, fix, x) -> list:
        scored = []
        for row, (nid, gap, y, z) in self.lp.tri_rows.items():
            if nid in fix:
                continue
            slack = float(x[y] - max(x[z], 0.0)) if x is not None else 0.0
            if slack > 1e-12 or x is None:
                scored.append(((slack * gap, gap), nid))
        scored.sort(key=lambda t: t[0], reverse=True)
        return [nid for _, nid in scored[: self.k]]

    def prove(self, fix: Mapping[str, str] | None = None, solved=None) -> dict | None:
        """A proof tree for the branch ``fix`` (``None`` if the budget ran out)."""
        fix = dict(fix or {})
        self.nodes += 1
        if self.nodes > self.max_nodes:
            self.reason = f"node limit {self.max_nodes}"
            return None
        if time.monotonic() > self.deadline:
            self.reason = "time limit"
            return None
        status, value, duals, x, ray = solved if solved is not None else self._solve(fix)
        if status == "unknown":
            self.reason = "LP solver gave no answer"
            return None
        if status == "infeasible" or value >= -1e-12:
            leaf = self._exact_leaf(fix, status, duals, ray)
            if leaf is not None:
                return leaf
            if status == "infeasible":
                self.reason = "infeasible branch without an exact Farkas certificate"
                return None
        best = None
        for nid in self._candidates(fix, x):
            kids = [self._solve({**fix, nid: p}) for p in ("active", "inactive")]
            worst = min(k[1] for k in kids)
            if best is None or worst > best[0]:
                best = (worst, nid, kids)
            if worst >= 0 or time.monotonic() > self.deadline:
                break  # (past the deadline the children give up at once: stop scoring)
        if best is None:
            self.reason = "no unit left to branch on"
            return None
        _, nid, kids = best
        children = []
        for p, solved_kid in zip(("active", "inactive"), kids):
            sub = self.prove({**fix, nid: p}, solved_kid)
            if sub is None:
                return None
            children.append(sub)
        return {"split": {"kind": "relu", "neuron": nid}, "children": children}
