"""The default method: cheap sound bounds, witnesses, then MILP only for what is left.

1. interval + symbolic (CROWN) bounds settle many neurons as stable;
2. witnesses — box centre, corners, random points, the user's data — settle
   most unstable neurons (one exactly re-checked point settles many);
3. a projected sign-gradient search per open neuron side finds the harder
   witnesses;
4. layer by layer, MILP queries with early stops (first witness / dual bound
   beyond the margin) for the neurons still open; every solver solution is
   replayed through the whole network; proofs tighten the bounds that build
   the next layer's MILP (tightened big-M).
"""
from __future__ import annotations

import time

import numpy as np

from .facts import STABLY_ACTIVE, STABLY_INACTIVE, UNKNOWN
from .queries import LayerTask, Query
from .split import split_layer
from .state import TAU_REL, AnalysisState
from .witness import candidate_points, gradient_search

__all__ = ["run_fast", "tau_for", "milp_layer", "witness_phase"]


def tau_for(state: AnalysisState, nid: str) -> float:
    """The margin a solver's bound must clear for ``nid`` (see :data:`TAU_REL`)."""
    pre, row, _ = state.index[nid]
    g = state.graph
    op = g.op(pre)
    if op.kind == "affine":
        arg = g.args(pre)[0]
        lo, hi = state.interval[arg]
        scale = float(np.abs(op.weight[row]) @ np.maximum(np.abs(lo), np.abs(hi)) + abs(op.bias[row]))
    else:
        lo, hi = state.interval[pre]
        scale = float(max(abs(lo[row]), abs(hi[row])))
    return TAU_REL * max(1.0, scale)


def witness_phase(state: AnalysisState, *, data=None) -> None:
    """Sampling and gradient witnesses for every neuron still unknown."""
    opts = state.options
    pts = candidate_points(state.box, state.rng, n_random=opts.n_random,
                           n_corners=opts.n_corners, data=data)
    state.add_points(pts)
    state.check_budget()
    targets = []
    for nid in state.open_neurons():
        if nid not in state.witnesses.pos:
            targets.append((nid, "pos"))
        if nid not in state.witnesses.neg:
            targets.append((nid, "neg"))
    if not targets or opts.gradient_steps <= 0:
        return
    # start each trajectory at the sampled point that came closest
    from ..semantics import evaluate_all
    vals = evaluate_all(state.graph, pts)
    starts = []
    for nid, side in targets:
        pre, row, _ = state.index[nid]
        z = vals[pre][:, row]
        starts.append(pts[int(np.argmax(z) if side == "pos" else np.argmin(z))])
    best = gradient_search(state.graph, state.box, targets, np.array(starts),
                           steps=opts.gradient_steps, rng=state.rng)
    state.add_points(best)


def milp_queries_for(state: AnalysisState, nids) -> list:
    """The queries that can still change something for ``nids``."""
    qs = []
    for nid in nids:
        f = state.facts[nid]
        if f.status != UNKNOWN:
            continue
        pre, row, _ = state.index[nid]
        tau = tau_for(state, nid)
        if nid not in state.witnesses.pos:
            qs.append(Query(nid, row, "max", tau))
        if nid not in state.witnesses.neg:
            qs.append(Query(nid, row, "min", tau))
    return qs


def milp_layer(state: AnalysisState, layer: str, executor, *, early_stop: bool = True) -> None:
    """Run the MILP queries of one layer (split over the executor's workers)."""
    nids = state.open_neurons(layer)
    queries = milp_queries_for(state, nids)
    if not queries:
        return
    pre = state.graph.args(layer)[0]
    opts = state.options
    # one task per layer: the runner splits it over its workers and returns
    # the answers in query order (so the facts do not depend on the workers)
    task = LayerTask(state.graph, state.box, state.bounds, state.stable_fixed(), pre, queries,
                     backend=opts.solver, time_limit=_limit(state), threads=opts.threads,
                     early_stop=early_stop, deadline=_deadline(state))
    apply_outcomes(state, executor.run_task(task))


def _limit(state: AnalysisState):
    lim = state.options.query_time_limit
    left = state.time_left()
    if left is not None:
        lim = max(0.1, left) if lim is None else max(0.1, min(lim, left))
    return lim


def _deadline(state: AnalysisState):
    """The budget's end as wall-clock time (workers compare it with ``time.time()``)."""
    left = state.time_left()
    return None if left is None else time.time() + left


def _split(items, k):
    return [items[i::k] for i in range(k) if items[i::k]]


def apply_outcomes(state: AnalysisState, outcomes) -> None:
    """Turn solver answers into facts: proofs decide, solutions are replayed."""
    points = []
    for out in outcomes:
        state.counters["milp"] += 1
        state.counters["milp_time"] += out.stats.get("time", 0.0)
        fact = state.facts[out.nid]
        fact.stats.setdefault("queries", []).append(
            {"sense": out.sense, "verdict": out.verdict, "dual": out.dual, "primal": out.primal,
             **out.stats})
        if out.point is not None:
            points.append(out.point)
        if out.verdict == "proved" and fact.status == UNKNOWN:
            if out.sense == "max":
                state.prove(out.nid, STABLY_INACTIVE, "milp", bound=0.0, stats={})
            else:
                state.prove(out.nid, STABLY_ACTIVE, "milp", bound=0.0, stats={})
    if points:
        state.add_points(np.array(points))


def lp_layer(state: AnalysisState, layer: str, executor, *, last: bool) -> None:
    """Tighten the bounds of a layer's non-stable neurons with the LP relaxation.

    An LP optimum (a float solver's answer) is used like a MILP dual bound:
    widened by the margin tau it is a proven bound, beyond -tau / tau it
    proves stability (evidence "lp").  Unstable neurons are tightened too —
    their bounds build the relaxations and big-M of every deeper layer — but
    not in the last layer, where nothing deeper profits.
    """
    g = state.graph
    pre = g.args(layer)[0]
    if set(g.nx.predecessors(pre)) <= {g.input_name}:
        return  # an affine map of the box: interval bounds are already exact
    queries = []
    for nid in g.op(layer).neurons:
        f = state.facts[nid]
        if f.stable or (last and f.status != UNKNOWN):
            continue
        _, row, _ = state.index[nid]
        tau = tau_for(state, nid)
        queries += [Query(nid, row, "max", tau), Query(nid, row, "min", tau)]
    if not queries:
        return
    opts = state.options
    task = LayerTask(state.graph, state.box, state.bounds, state.stable_fixed(), pre, queries,
                     backend=opts.solver, time_limit=_limit(state), threads=opts.threads,
                     relax=True, deadline=_deadline(state))
    size = g.size_of(pre)
    lo, hi = state.known.get(pre, (np.full(size, -np.inf), np.full(size, np.inf)))
    lo, hi = lo.copy(), hi.copy()
    proofs = []
    for out in executor.run_task(task):
        state.counters["lp"] += 1
        if out.stats.get("status") != "optimal" or out.dual is None:
            continue
        _, row, _ = state.index[out.nid]
        tau = tau_for(state, out.nid)
        if out.sense == "max":
            hi[row] = min(hi[row], out.dual + tau)
        else:
            lo[row] = max(lo[row], out.dual - tau)
        if out.verdict == "proved":
            proofs.append(out)
    state.known[pre] = (lo, hi)
    for out in proofs:
        if state.facts[out.nid].status == UNKNOWN:
            status = STABLY_INACTIVE if out.sense == "max" else STABLY_ACTIVE
            state.prove(out.nid, status, "lp", bound=0.0, stats={})
    state.refresh_bounds()


#: with a budget, input splitting of one layer may use this share of the budget left divided by
#: the layers still to do (a deep layer must not eat the budget of every layer after it)
SPLIT_SHARE = 0.5


def run_fast(state: AnalysisState, executor, *, data=None, progress=None) -> None:
    state.refresh_bounds()
    witness_phase(state, data=data)
    layers = state.graph.relus()
    for k, (layer, _) in enumerate(layers):
        state.check_budget()
        lp_layer(state, layer, executor, last=k == len(layers) - 1)
        left = state.time_left()
        deadline = None if left is None else time.monotonic() + SPLIT_SHARE * left / (len(layers) - k)
        split_layer(state, layer, deadline=deadline)
        milp_layer(state, layer, executor)
        state.refresh_bounds()  # proofs of this layer tighten the next one's big-M
        if progress is not None:
            progress(state, layer)
