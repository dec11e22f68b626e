"""Merge stably active neurons whose pre-activations are linearly dependent (LEO).

On the domain an active unit outputs its pre-activation ``y_i = W_i x + b_i``.
If ``W_d = K_d W_B`` for a set ``B`` of *active* units, then

    y_d = K_d W_B x + b_d = K_d (y_B - b_B) + b_d,

so a user affine ``U`` may read ``y_d`` from ``y_B``: ``U[:, B] += U[:, d] K_d``
and ``b_U += U[:, d] (b_d - K_d b_B)``, after which unit ``d`` is deleted.

Finding ``B``: greedy float64 Gram-Schmidt over the active rows proposes a
basis and candidate dependents (cheap, also on wide layers).  In exact mode
``K`` is then solved exactly on an independent column subset of ``W_B`` and
``K_d W_B == W_d`` is verified over all columns in Fractions; only verified
rows are merged, so a float misjudgement can cost compression, never
correctness.  In float mode ``K`` comes from least squares and a row merges
when its residual is at rounding level (``float_rtol``); the result then
equals the original only up to rounding.

Handled: ReLU layers fed by an affine node (shared feeders get a private
copy of the kept rows) whose users are all affine.  Skipped (logged): users
that are adds or the output, and non-affine feeders (their coordinates are
independent, nothing to merge).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..graph import Affine, Graph, Relu
from ._linalg import as_matrix, independent_rows, mm, mv, solve_left, zeros
from ._rewrite import build, check_stable, remove_dead, restrict_feeder, weights

__all__ = ["merge_active"]


def _dependencies(op: Affine, active: list[int], *, exact: bool, rtol: float,
                  float_rtol: float, max_exact_rank: int, max_coef: float):
    """Basis ``B``, merged rows ``D`` (verified) with ``W_D = K W_B``, ``K``, rejected rows."""
    local = independent_rows(op.weight[active], rtol=rtol)
    basis = [active[j] for j in local]
    in_basis = set(basis)
    cand = [a for a in active if a not in in_basis]
    if not cand:
        return basis, [], None, []
    if exact and len(basis) > max_exact_rank:  # O(rank^3) Fraction work: too slow
        return basis, [], None, cand
    w, _ = weights(op, exact=exact)
    wb, wd = as_matrix(w[basis], exact=exact), as_matrix(w[cand], exact=exact)
    if not basis:
        k = zeros((len(cand), 0), exact=exact)
    elif exact:
        cols = independent_rows(op.weight[basis].T, rtol=rtol)
        k = solve_left(wb[:, cols], wd[:, cols]) if len(cols) == len(basis) else None
        if k is None:  # float and exact rank disagree: merge nothing here
            return basis, [], None, cand
    else:
        k = np.linalg.lstsq(wb.T, wd.T, rcond=None)[0].T
    recon = mm(k, wb, exact=exact)
    if exact:
        ok = [all(recon[i] == wd[i]) for i in range(len(cand))]
    else:
        scale = np.linalg.norm(wd, axis=1) + np.linalg.norm(k, axis=1) * np.linalg.norm(wb)
        ok = list(np.linalg.norm(recon - wd, axis=1) <= float_rtol * scale)
    # large coefficients cancel in float evaluation of the merged weights
    big = [max((abs(v) for v in row), default=0) > max_coef for row in k]
    ok = [o and not bg for o, bg in zip(ok, big)]
    rows = [i for i in range(len(cand)) if ok[i]]
    return (basis, [cand[i] for i in rows], k[rows] if rows else None,
            [cand[i] for i in range(len(cand)) if not ok[i]])


def merge_active(graph: Graph, stable: Mapping[str, str], *, exact: bool = True,
                 rtol: float = 1e-9, float_rtol: float = 1e-12, max_exact_rank: int = 256,
                 max_coef: float = 1e4) -> tuple[Graph, list[dict]]:
    """Merge linearly dependent stably active units into a basis of active units.

    Parameters
    ----------
    graph : the network (not modified).
    stable : neuron id -> ``"active"`` / ``"inactive"``, proven over the domain.
    exact : rational arithmetic and exact verification (default) or float64.
    rtol : relative threshold of the float rank decision (candidates only).
    float_rtol : float mode: largest accepted relative residual of ``W_d - K_d W_B``.
    max_exact_rank : exact mode: layers whose active rows have a larger rank
        are left alone (the exact solve costs O(rank^3) rational operations).
    max_coef : rows needing a coefficient ``|K_dj|`` above this are not merged:
        exact over the reals, but their float weights would cancel badly.
    """
    check_stable(stable)
    g = graph.copy()
    log: list[dict] = []
    for relu, _ in graph.relus():
        op = g.op(relu)
        active = [i for i, nid in enumerate(op.neurons) if stable.get(nid) == "active"]
        feeder = g.args(relu)[0]
        if not active or g.op(feeder).kind != "affine":
            continue
        fop = g.op(feeder)
        users = g.users(relu)
        blockers = [u for u in users if g.op(u).kind != "affine"]
        convs = [u for u in users if g.op(u).kind == "affine" and g.op(u).layout is not None]
        if convs and not blockers:
            # merging rewrites the users' columns: a convolution would become a dense matrix
            log.append({"pass": "merge", "layer": relu, "action": "kept", "skipped": True,
                        "reason": "feeds a convolution", "users": convs,
                        "count": len(active)})
            continue
        if blockers:  # report the float candidates; no exact work for a skip
            basis = {active[j] for j in independent_rows(fop.weight[active], rtol=rtol)}
            ids = [op.neurons[i] for i in active if i not in basis]
            if ids:
                log.append({"pass": "merge", "layer": relu, "action": "kept", "skipped": True,
                            "reason": "feeds add/output", "users": blockers,
                            "neurons": ids, "count": len(ids)})
            continue
        basis, dep, k, rejected = _dependencies(fop, active, exact=exact, rtol=rtol,
                                                float_rtol=float_rtol,
                                                max_exact_rank=max_exact_rank,
                                                max_coef=max_coef)
        if not dep:
            if rejected:
                log.append({"pass": "merge", "layer": relu, "action": "kept", "skipped": True,
                            "reason": (f"rank {len(basis)} > max_exact_rank" if exact
                                       and len(basis) > max_exact_rank
                                       else "dependency not verified or ill-conditioned"),
                            "neurons": [op.neurons[i] for i in rejected], "count": len(rejected)})
            continue
        _, b = weights(fop, exact=exact)
        b = as_matrix(b, exact=exact)
        shift = b[dep] - mv(k, b[basis], exact=exact)  # b_d - K_d b_B
        gone = set(dep)
        keep = [i for i in range(op.size) if i not in gone]
        for u in users:
            wu, bu = (as_matrix(a, exact=exact) for a in weights(g.op(u), exact=exact))
            wu_d = wu[:, dep]
            wu[:, basis] = wu[:, basis] + mm(wu_d, k, exact=exact)
            bu = bu + mv(wu_d, shift, exact=exact)
            g.replace(u, build(wu[:, keep], bu, exact=exact))
        how = restrict_feeder(g, relu, keep)
        g.replace(relu, Relu([op.neurons[i] for i in keep]))
        log.append({"pass": "merge", "layer": relu, "action": "merged",
                    "neurons": [op.neurons[i] for i in dep],
                    "basis": [op.neurons[i] for i in basis], "count": len(dep),
                    "remaining": len(keep), "unverified": [op.neurons[i] for i in rejected],
                    "feeder": how})
    remove_dead(g)
    return g, log
