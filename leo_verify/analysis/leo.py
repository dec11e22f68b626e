"""LEO (Serra, Kumar, Ramalingam, CPAIOR 2020) as published — the reference method.

Layer by layer, for every neuron not already settled by interval bounds, one
MILP maximising and one minimising its pre-activation over the subnetwork
below it.  Big-M constants come from the bounds proven for earlier layers
(the MILP optima of those layers, widened by the margin), and neurons of
earlier layers proven stable are fixed (no binary).  Queries run to
optimality (no early stop).  The optima become the proven bounds that build
the next layer's MILP.  Solutions with the right sign are replayed exactly
as witnesses, so that "unstable" also carries evidence.
"""
from __future__ import annotations

import numpy as np

from .facts import STABLY_ACTIVE, STABLY_INACTIVE, UNKNOWN
from .fast import _limit, tau_for
from .queries import LayerTask, Query

__all__ = ["run_leo"]


def run_leo(state, executor, *, data=None, progress=None) -> None:
    state.refresh_bounds()
    for layer, op in state.graph.relus():
        state.check_budget()
        pre = state.graph.args(layer)[0]
        queries = []
        for nid in op.neurons:
            # as published: both MILPs for every neuron not already stable,
            # also those a replayed witness showed unstable (their optima are
            # the bounds the next layer's big-M is built from)
            if state.facts[nid].stable:
                continue
            _, row, _ = state.index[nid]
            tau = tau_for(state, nid)
            queries += [Query(nid, row, "max", tau), Query(nid, row, "min", tau)]
        if queries:
            task = LayerTask(state.graph, state.box, state.bounds, state.stable_fixed(), pre, queries,
                             backend=state.options.solver, time_limit=_limit(state),
                             threads=state.options.threads, early_stop=False)
            _apply(state, pre, executor.run_task(task))
        state.refresh_bounds()
        if progress is not None:
            progress(state, layer)


def _apply(state, pre, outcomes) -> None:
    size = state.graph.size_of(pre)
    lo, hi = state.known.get(pre, (np.full(size, -np.inf), np.full(size, np.inf)))
    lo, hi = lo.copy(), hi.copy()
    points = []
    for out in outcomes:
        state.counters["milp"] += 1
        state.counters["milp_time"] += out.stats.get("time", 0.0)
        _, row, _ = state.index[out.nid]
        fact = state.facts[out.nid]
        fact.stats.setdefault("queries", []).append(
            {"sense": out.sense, "verdict": out.verdict, "dual": out.dual, "primal": out.primal,
             **out.stats})
        if out.point is not None and out.verdict == "witness":
            points.append(out.point)
        if out.dual is None or not np.isfinite(out.dual) or out.verdict in ("error",):
            continue
        tau = tau_for(state, out.nid)
        # a valid dual bound, widened by the margin, is a proven bound for the next layers
        if out.sense == "max":
            hi[row] = min(hi[row], out.dual + tau)
        else:
            lo[row] = max(lo[row], out.dual - tau)
    state.known[pre] = (lo, hi)
    for out in outcomes:
        if out.verdict == "proved" and state.facts[out.nid].status == UNKNOWN:
            status = STABLY_INACTIVE if out.sense == "max" else STABLY_ACTIVE
            state.prove(out.nid, status, "milp", bound=0.0, stats={})
    if points:
        state.add_points(np.array(points))
