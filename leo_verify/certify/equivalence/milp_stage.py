"""Stages: sound bounds of ``f - g`` and the joint MILP (difference and top-1).
"""
from __future__ import annotations

import math

import numpy as np

from ...semantics import evaluate
from .context import _Ctx, _Decided
from .joint import _sound_bounds, Canon, joint_graph, widen_for_exact_weights
from .result import _margin


# -- stages: sound bounds and the joint MILP ------------------------------------------------

def _canon(ctx: _Ctx) -> Canon:
    """The canonical ids of both networks (computed once per check)."""
    if ctx._canon is None:
        canon = Canon(ctx.box)
        canon.add_net(ctx.f, _sound_bounds(ctx.f, ctx.box), private=None if ctx.share else "f")
        canon.add_net(ctx.g, _sound_bounds(ctx.g, ctx.box), private=None if ctx.share else "g")
        ctx._canon = canon
    return ctx._canon


def _joint(ctx: _Ctx):
    """The joint graph, its sound bounds (with a CROWN bound on ``f - g``)."""
    if ctx._joint is None:
        from ...analysis.bounds import compute_bounds, symbolic_bounds
        jg, fo, go = joint_graph(ctx.f, ctx.g, ctx.box, canon=_canon(ctx))
        bounds = compute_bounds(jg, ctx.box, method="symbolic")
        slo, shi = symbolic_bounds(jg, ctx.box, bounds, "diff")
        lo, hi = bounds["diff"]
        bounds["diff"] = (np.maximum(lo, slo), np.minimum(hi, shi))
        bounds["y"] = bounds["diff"]
        bounds = widen_for_exact_weights(jg, bounds)
        ctx._joint = (jg, fo, go, bounds)
    return ctx._joint


def _bounds_stage(ctx: _Ctx, entry: dict):
    jg, fo, go, bounds = _joint(ctx)
    lo, hi = bounds["diff"]
    bound = float(max(np.max(hi, initial=0.0), np.max(-lo, initial=0.0)))
    entry["bound"] = bound
    ctx.best_bound = bound if ctx.best_bound is None else min(ctx.best_bound, bound)
    if ctx.mode == "epsilon" and bound <= ctx.epsilon:
        raise _Decided(ctx.result("equivalent", method="bounds", proof="sound-float",
                                  reason=f"sound bounds give max |f - g| <= {bound:.6g} <= "
                                         f"epsilon = {ctx.epsilon:g}"))
    return f"sound bound max |f - g| <= {bound:.3g}"


def _query_limit(ctx: _Ctx, remaining_queries: int) -> float | None:
    left = ctx.left()
    if left <= 0.05:
        return None
    return max(0.05, left / max(1, remaining_queries))


def _milp_diff_stage(ctx: _Ctx, entry: dict):
    """Maximise and minimise every output of ``f - g`` over the joint MILP.

    epsilon mode proves when every side's dual bound clears ``epsilon`` by the
    margin; exact mode searches for counterexamples only (a float solver
    cannot prove exact equality) with threshold ``thr``.
    """
    from ...analysis.backends import Session
    from ...analysis.milp import encode
    jg, fo, go, bounds = _joint(ctx)
    enc = encode(jg, ctx.box, bounds)
    m = ctx.f.output_size
    lo, hi = bounds["diff"]
    if ctx.mode == "epsilon":
        thr = ctx.epsilon
        proof_at = ctx.epsilon - _margin(ctx.epsilon)
    else:  # exact: look for differences the MILP can see at all
        thr = 1e-6
        proof_at = thr / 2
    centre = (ctx.box.lower + ctx.box.upper) / 2
    session = Session(enc.program, backend=ctx.solver, hint=enc.assignment(centre))
    upper = {}  # (i, sign) -> proven bound on sign * (f_i - g_i)
    queries = []
    fz = ctx.fuzz
    for i in range(m):
        for s in (1, -1):
            sound = float(hi[i]) if s == 1 else float(-lo[i])
            if sound <= proof_at:
                upper[(i, s)] = sound
                continue
            prio = fz.best_values.get((i, s), -math.inf) if fz is not None else -math.inf
            queries.append((prio, i, s))
    queries.sort(key=lambda q: (-q[0], q[1], -q[2]))
    stats = []
    entry.update(variables=enc.program.num_vars, binaries=enc.program.num_integer,
                 queries=stats)
    open_q = [(i, s) for _, i, s in queries]
    for attempt in range(2):
        still = []
        for k, (i, s) in enumerate(open_q):
            limit = _query_limit(ctx, len(open_q) - k)
            if limit is None:
                still.append((i, s))
                continue
            var = enc.var("diff", i)
            hint = None
            if fz is not None and (i, s) in fz.best_points:
                hint = enc.assignment(fz.best_points[(i, s)])
            sense = "max" if s == 1 else "min"
            # first pass: stop at a clear candidate; second pass (after a candidate
            # that did not replay): search on for the dual bound or a better point
            stops = dict(primal_stop=s * (thr + max(thr, 1e-6)) if attempt == 0 else None,
                         dual_stop=s * proof_at)
            res = session.solve({var: 1.0}, sense=sense, time_limit=limit, hint=hint, **stops)
            stats.append({"output": i, "sign": s, **{k2: res.to_json()[k2] for k2 in
                          ("status", "primal", "dual", "time", "stopped_by", "message")}})
            if res.primal is not None and res.x is not None and s * res.primal > thr:
                ctx.candidate(enc.input_point(res.x), "milp")
            if res.dual is not None and s * res.dual <= proof_at:
                upper[(i, s)] = s * res.dual
                continue
            if res.status == "optimal" and res.dual is not None:
                # solved: the maximum exceeds epsilon - margin in floats but no
                # point replays; running again would not change that
                upper[(i, s)] = s * res.dual
                continue
            still.append((i, s))
        open_q = still
        if not open_q or ctx.left() <= 0.1:
            break
    if len(upper) == 2 * m:
        b = max(max(upper.values()), 0.0)
        ctx.best_bound = b if ctx.best_bound is None else min(ctx.best_bound, b)
    proven = all((i, s) in upper and upper[(i, s)] <= proof_at for i in range(m) for s in (1, -1))
    if ctx.mode == "epsilon" and proven:
        bound = max(upper.values()) if upper else 0.0
        raise _Decided(ctx.result(
            "equivalent", method="milp", proof="milp-float",
            reason=f"joint MILP: every dual bound of +-(f_i - g_i) is <= {bound:.3g} "
                   f"(<= epsilon - margin = {proof_at:.6g}; float solver, not re-proved exactly)"))
    if ctx.mode == "exact" and proven:
        return (f"MILP bounds max |f - g| <= {max(upper.values()):.3g} in floating point; "
                f"exact mode needs an exact proof")
    above = sum(1 for v in upper.values() if v > proof_at)
    return (f"{len(open_q) + above} of {2 * m} output sides not proven: {len(open_q)} open at the "
            f"time limit, {above} with a float maximum above epsilon - margin and no point that "
            f"replays")


def _milp_top1_stage(ctx: _Ctx, entry: dict):
    """For each class ``i``: on ``{x : f_i(x) >= f_k(x) for all k}`` maximise ``g_j - g_i``.

    If every maximum is below ``-tau`` then wherever ``f``'s (first) argmax is
    ``i``, ``g_i > g_j`` strictly for all ``j``, so ``g``'s argmax is ``i`` too.
    An incumbent with ``g_j - g_i > 0`` is a candidate (replayed).
    """
    from ...analysis.backends import Session
    from ...analysis.milp import Program, encode
    jg, fo, go, bounds = _joint(ctx)
    enc = encode(jg, ctx.box, bounds)
    m = ctx.f.output_size
    glo, ghi = bounds[go]
    tau = 1e-6 * max(1.0, float(np.max(np.maximum(np.abs(glo), np.abs(ghi)), initial=0.0)))
    fv, gv = enc.vars(fo), enc.vars(go)
    fz = ctx.fuzz
    pairs = [(i, j) for i in range(m) for j in range(m) if i != j]
    prio = {p: (fz.best_values.get(p, -math.inf) if fz is not None else -math.inf) for p in pairs}
    classes = sorted(range(m), key=lambda i: -max([prio[(i, j)] for j in range(m) if j != i],
                                                  default=-math.inf))
    proved, stats = set(), []
    entry.update(queries=stats, tau=tau)
    rng = np.random.default_rng(ctx.seed)
    samples = np.vstack([((ctx.box.lower + ctx.box.upper) / 2)[None, :], ctx.box.sample(2000, rng)])
    for ci, i in enumerate(classes):
        prog = Program(variables=list(enc.program.variables), rows=list(enc.program.rows))
        for k in range(m):
            if k != i:
                prog.add_row({int(fv[i]): 1.0, int(fv[k]): -1.0}, 0.0, math.inf, name=f"top{i}>{k}")
        # a start solution in f's top-i region: without an incumbent SCIP's dual
        # bound is not readable (pywraplp), so a proof needs one
        start = None
        for j in range(m):
            if j != i and fz is not None and (i, j) in fz.best_points:
                start = fz.best_points[(i, j)]
                break
        if start is None:
            tops = np.argmax(evaluate(ctx.f, samples), axis=1)
            hit = np.flatnonzero(tops == i)
            start = samples[hit[0]] if hit.size else None
        hint = None if start is None else enc.assignment(start)
        session = Session(prog, backend=ctx.solver, hint=hint)
        js = sorted((j for j in range(m) if j != i), key=lambda j: -prio[(i, j)])
        for jk, j in enumerate(js):
            remaining = sum(m - 1 for _ in classes[ci + 1:]) + len(js) - jk
            limit = _query_limit(ctx, remaining)
            if limit is None:
                continue
            obj = {int(gv[j]): 1.0}
            obj[int(gv[i])] = obj.get(int(gv[i]), 0.0) - 1.0
            res = session.solve(obj, sense="max", time_limit=limit, primal_stop=tau,
                                dual_stop=-tau)
            stats.append({"top": i, "rival": j, **{k2: res.to_json()[k2] for k2 in
                          ("status", "primal", "dual", "time", "stopped_by")}})
            if res.primal is not None and res.x is not None and res.primal > 0:
                ctx.candidate(enc.input_point(res.x), "milp")
            if res.status == "infeasible" or (res.dual is not None and res.dual <= -tau):
                proved.add((i, j))
    if len(proved) == len(pairs):
        raise _Decided(ctx.result(
            "equivalent", method="milp", proof="milp-float",
            reason=f"joint MILP: wherever f's top class is i, g_j - g_i <= -{tau:.3g} for every "
                   f"j != i (float solver, not re-proved exactly)"))
    return f"{len(pairs) - len(proved)} of {len(pairs)} class pairs open (ties or time)"
