"""Per-neuron MILP queries, runnable in worker processes.

A :class:`LayerTask` carries everything a worker needs (graph, box, proven
bounds, fixed neurons, the queries of one layer), so it can be shipped to a
``concurrent.futures`` executor — a local process pool or a Dask cluster's
executor.  The worker builds the MILP of the subnetwork below the layer once
and answers each query by changing the objective.

Reading a solver's answer (the only place a float solver decides anything):

* ``max z``: dual bound ``<= -tau`` proves ``z <= dual + tau' < 0`` within the
  solver's tolerances -> *inactive*; an incumbent with objective ``> 0`` is a
  candidate witness (its input point is replayed exactly by the caller);
* ``min z`` mirrors it for *active*;
* anything else (optimum in ``(-tau, tau)``, timeout, error) proves nothing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..domain import Box
from ..graph import Graph
from .backends import Session
from .milp import encode

__all__ = ["Query", "LayerTask", "QueryOutcome", "run_layer_task"]


@dataclass(frozen=True)
class Query:
    nid: str
    row: int
    sense: str  # "max" (try to show inactive / find z > 0) or "min"
    tau: float


@dataclass
class QueryOutcome:
    nid: str
    sense: str
    verdict: str  # "proved", "witness", "inside", "timeout", "error"
    dual: float | None
    primal: float | None
    point: list | None
    stats: dict = field(default_factory=dict)


@dataclass
class LayerTask:
    graph: Graph
    box: Box
    bounds: dict
    fixed: dict
    pre: str
    queries: list
    backend: str = "scip"
    time_limit: float | None = None
    threads: int = 1
    early_stop: bool = True
    relax: bool = False  # LP relaxation: the answers are bounds, not decisions
    #: wall-clock end (``time.time()``, comparable across worker processes) of the whole
    #: task: each query gets at most what is left, and a query not started by then
    #: answers "timeout" unsolved (a budget must bound a task of many queries)
    deadline: float | None = None


def _read(q: Query, res, enc) -> QueryOutcome:
    stats = {"solver": res.backend, "status": res.status, "time": round(float(res.time), 6),
             "nodes": int(res.nodes or 0)}
    if res.status == "error" and res.message:
        stats["message"] = str(res.message)[:300]
    point = None
    if res.x is not None and res.primal is not None and np.isfinite(res.primal):
        point = [float(v) for v in enc.input_point(res.x)]
    good = res.status not in ("error",)
    if q.sense == "max":
        if good and res.dual is not None and np.isfinite(res.dual) and res.dual <= -q.tau:
            return QueryOutcome(q.nid, q.sense, "proved", float(res.dual), res.primal, point, stats)
        if good and res.primal is not None and res.primal > 0:
            return QueryOutcome(q.nid, q.sense, "witness", res.dual, float(res.primal), point, stats)
    else:
        if good and res.dual is not None and np.isfinite(res.dual) and res.dual >= q.tau:
            return QueryOutcome(q.nid, q.sense, "proved", float(res.dual), res.primal, point, stats)
        if good and res.primal is not None and res.primal < 0:
            return QueryOutcome(q.nid, q.sense, "witness", res.dual, float(res.primal), point, stats)
    verdict = {"error": "error", "timeout": "timeout"}.get(res.status, "inside")
    if res.status == "feasible":
        verdict = "timeout"
    return QueryOutcome(q.nid, q.sense, verdict, res.dual, res.primal, point, stats)


def run_layer_task(task: LayerTask, on_outcome=None) -> list:
    """Answer the queries of one layer (in this process).

    One model per task, re-solved with a new objective per query.  The box
    centre, played through the network, is given as a start solution: SCIP
    (through pywraplp) reports a *wrong* dual bound when it stops without an
    incumbent, and the backend then withholds it; with a start solution every
    early stop on the dual side stays readable.

    ``on_outcome(i, outcome)`` (in-process use) is called as soon as query
    ``i`` is answered, e.g. to checkpoint it.
    """
    enc = encode(task.graph, task.box, task.bounds, upto=task.pre, fixed=task.fixed)
    centre = (task.box.lower + task.box.upper) / 2
    session = Session(enc.program, backend=task.backend, threads=task.threads, relax=task.relax,
                      hint=enc.assignment(centre))
    out = []
    for q in task.queries:
        z = enc.var(task.pre, q.row)
        if task.early_stop and not task.relax:
            # stop at the first witness (incumbent beyond 0) or at a proof
            # (dual bound beyond the margin): either answers the question.
            eps = q.tau
            stops = dict(primal_stop=eps, dual_stop=-q.tau) if q.sense == "max" \
                else dict(primal_stop=-eps, dual_stop=q.tau)
        else:
            stops = {}
        limit = task.time_limit
        left = None if task.deadline is None else task.deadline - time.time()
        if left is not None and left <= 0.05:
            outcome = QueryOutcome(q.nid, q.sense, "timeout", None, None, None,
                                   {"solver": task.backend, "status": "not started (deadline)",
                                    "time": 0.0, "nodes": 0})
        else:
            if left is not None:
                limit = left if limit is None else min(limit, left)
            res = session.solve({z: 1.0}, sense=q.sense, time_limit=limit, **stops)
            outcome = _read(q, res, enc)
        out.append(outcome)
        if on_outcome is not None:
            on_outcome(len(out) - 1, out[-1])
    return out
