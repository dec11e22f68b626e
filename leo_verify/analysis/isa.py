"""ISA (Serra et al., NeurIPS 2021): one MILP per network that tries to flip candidates.

1. Candidates from data: a neuron never positive on the data (the user's
   ``--data``, else sampled points of the box) is a candidate for *stably
   inactive*; never negative, for *stably active*.  Neurons seen on both
   sides are replayed exactly as witnesses.
2. One MILP over the whole network (proven-stable neurons fixed, sound
   symbolic bounds as big-M) with an indicator ``f_j`` per candidate; the
   objective maximises the number of indicators.  First ``f_j = 1`` forces
   a flip beyond the margin (``z_j >= tau_j`` for an inactive candidate,
   ``z_j <= -tau_j`` for an active one), so solutions are real witnesses;
   when no flip is left, ``f_j = 1`` only forces candidate j *within the
   margin of flipping* (``z_j >= -tau_j`` / ``z_j <= tau_j``).
3. Each solution's input point is replayed through the whole network: the
   candidates it truly flips become unstable (with an exact witness);
   candidates it claims within the margin but does not flip exactly are
   removed as *unknown* (the margin cannot decide them).  The settled
   candidates are removed and the MILP re-solved — OR-Tools has no lazy
   constraint callback for SCIP, so where the paper adds lazy cuts inside
   one branch-and-bound we re-solve; each solve is warm only through the
   smaller candidate set.
4. When the dual bound of the objective drops below 1, no remaining
   candidate can come within its margin of flipping: all are proven stable.
"""
from __future__ import annotations

import numpy as np

from ..semantics import evaluate_all
from .backends import solve
from .facts import STABLY_ACTIVE, STABLY_INACTIVE, UNKNOWN
from .fast import _limit, tau_for
from .milp import encode
from .witness import candidate_points

__all__ = ["run_isa", "candidates_from_points"]


def candidates_from_points(state, points) -> dict:
    """neuron id -> "inactive" | "active" for neurons never flipped on ``points``."""
    vals = evaluate_all(state.graph, points)
    out = {}
    for nid, f in state.facts.items():
        if f.status != UNKNOWN:
            continue
        pre, row, _ = state.index[nid]
        z = vals[pre][:, row]
        if np.all(z <= 0):
            out[nid] = "inactive"
        elif np.all(z >= 0):
            out[nid] = "active"
    return out


def _solve(state, prog, objective, *, time_limit, **options):
    """:func:`solve`, or its recorded answer when the run's checkpoint has one."""
    j = getattr(state, "journal", None)
    if j is None:
        return solve(prog, objective, time_limit=time_limit, **options)
    from .checkpoint import solve_key
    key = solve_key(j.key, prog, objective, **options)
    res = j.lookup_solve(key)
    if res is None:
        res = solve(prog, objective, time_limit=time_limit, **options)
        j.record_solve(key, res, time_limit=time_limit)
    return res


def run_isa(state, executor, *, data=None, progress=None) -> None:
    state.refresh_bounds()
    opts = state.options
    if data is not None:
        pts = np.asarray(data, dtype=np.float64).reshape(-1, state.box.size)
        pts = pts[state.box.contains(pts)]
        if not len(pts):
            pts = candidate_points(state.box, state.rng, n_random=opts.n_random, n_corners=0)
    else:
        pts = candidate_points(state.box, state.rng, n_random=opts.n_random, n_corners=opts.n_corners)
    state.add_points(pts)  # non-candidates settle as unstable by exact witnesses
    cands = candidates_from_points(state, pts)
    rounds = 0
    # phase "flip": f_j = 1 needs a flip beyond the margin (z_j >= tau), so each
    # solution is a real witness; once no flip is left, phase "prove": f_j = 1
    # needs only z_j >= -tau, and an optimum below 1 proves every candidate.
    phase = "flip"
    while cands:
        state.check_budget()
        rounds += 1
        enc = encode(state.graph, state.box, state.bounds, fixed=state.stable_fixed())
        prog = enc.program
        flags = {}
        for nid, kind in cands.items():
            z = enc.preact[nid]
            lo, hi = prog.variables[z].lb, prog.variables[z].ub
            tau = tau_for(state, nid)
            f = prog.add_var(f"{nid}.flip", 0.0, 1.0, integer=True)
            t = tau if phase == "flip" else -tau
            if kind == "inactive":
                big = max(0.0, t - lo)  # f = 1 -> z >= t ; f = 0 -> z >= lo
                prog.add_row({z: 1.0, f: -big}, t - big, np.inf, name=f"{nid}.flip")
            else:
                big = max(0.0, hi + t)  # f = 1 -> z <= -t ; f = 0 -> z <= hi
                prog.add_row({z: 1.0, f: big}, -np.inf, -t + big, name=f"{nid}.flip")
            flags[nid] = f
        res = _solve(state, prog, {f: 1.0 for f in flags.values()}, sense="max",
                     backend=opts.solver, time_limit=_limit(state), threads=opts.threads,
                     dual_stop=0.5)
        state.counters["milp"] += 1
        state.counters["milp_time"] += float(res.time)
        stats = {"isa_round": rounds, "isa_phase": phase, "solver": res.backend, "status": res.status,
                 "candidates": len(cands)}
        no_flip = res.status != "error" and res.dual is not None and np.isfinite(res.dual) and res.dual < 1.0
        if no_flip and phase == "flip":
            phase = "prove"
            continue
        if no_flip:
            for nid, kind in cands.items():
                status = STABLY_INACTIVE if kind == "inactive" else STABLY_ACTIVE
                state.prove(nid, status, "milp", bound=0.0, stats=dict(stats))
            break
        if res.x is None or res.primal is None or res.primal < 0.5:
            break  # timeout or error without a solution: the rest stays unknown
        claimed = [nid for nid, f in flags.items() if res.x[f] > 0.5]
        state.add_points(enc.input_point(res.x)[None, :])
        for nid in claimed:
            # flipped exactly -> settled by witness; else within the margin -> unknown
            state.facts[nid].stats.update(stats)
            cands.pop(nid, None)
        for nid in list(cands):
            if state.facts[nid].status != UNKNOWN:
                cands.pop(nid)
        state.flush_facts()
    if progress is not None:
        for layer, _ in state.graph.relus():
            progress(state, layer)
