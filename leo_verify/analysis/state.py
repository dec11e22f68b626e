"""Shared state of a stability analysis: facts being decided, bounds, witnesses.

All three methods (fast, leo, isa) fill the same :class:`AnalysisState`;
it turns sound bounds and verified witnesses into :class:`NeuronFact` s with
one rule set, so every method classifies in exactly the same way.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..domain import Box
from ..graph import Graph
from .bounds import compute_bounds, exact_interval_bounds, interval_bounds
from .facts import (STABLY_ACTIVE, STABLY_INACTIVE, UNKNOWN, UNSTABLE, Facts, NeuronFact)
from .witness import WitnessSet, neuron_index, search_witnesses

__all__ = ["AnalysisOptions", "AnalysisState", "TAU_REL", "BudgetExceeded"]

#: relative MILP/LP margin: a solver's dual bound proves stability only when it
#: is beyond tau = TAU_REL * max(1, |w|.max|x| + |b|) of zero, i.e. scaled to the
#: magnitude of the terms of that pre-activation (SCIP's default feasibility
#: tolerance is 1e-6; tolerances are absolute on the same scale).
TAU_REL = 1e-6


class BudgetExceeded(Exception):
    """Raised inside a method when the wall-clock budget is used up."""


@dataclass(frozen=True)
class AnalysisOptions:
    """Options of an analysis (keyword-only construction)."""

    method: str = "fast"
    solver: str = "scip"
    query_time_limit: float | None = 60.0
    budget: float | None = None
    workers: int = 1
    threads: int = 1
    seed: int = 0
    n_random: int = 2000
    n_corners: int = 2000
    gradient_steps: int = 30
    use_symbolic: bool = True
    progress: bool = False


class AnalysisState:
    """Facts under construction for one graph and box."""

    def __init__(self, graph: Graph, box: Box, options: AnalysisOptions):
        self.graph = graph
        self.box = box.check_size(graph.input_size)
        self.options = options
        self.rng = np.random.default_rng(options.seed)
        self.index = neuron_index(graph)
        self.facts: dict = {nid: NeuronFact(neuron=nid, layer=relu)
                            for nid, (_, _, relu) in self.index.items()}
        self.witnesses = WitnessSet()
        self.known: dict = {}  # node -> (lo, hi) proven by solvers, fed into bounds
        self.bounds: dict = {}
        self.interval: dict = {}
        self.counters = {"milp": 0, "lp": 0, "milp_time": 0.0, "witness_points": 0}
        self.started = time.monotonic()
        self.journal = None  # a checkpoint Journal (set by analyze), see .checkpoint
        self._journaled: set = set()

    # -- checkpoint ---------------------------------------------------
    def flush_facts(self) -> None:
        """Append the facts decided since the last call to the checkpoint journal."""
        j = self.journal
        if j is None:
            return
        new = [f for n, f in self.facts.items() if f.status != UNKNOWN and n not in self._journaled]
        if new:
            j.record_facts(new)
            self._journaled.update(f.neuron for f in new)

    # -- budget -------------------------------------------------------
    def time_left(self) -> float | None:
        if self.options.budget is None:
            return None
        return self.options.budget - (time.monotonic() - self.started)

    def check_budget(self) -> None:
        left = self.time_left()
        if left is not None and left <= 0:
            raise BudgetExceeded()

    # -- bounds -------------------------------------------------------
    def refresh_bounds(self) -> None:
        """Recompute sound bounds, using every proven fact so far."""
        g, box = self.graph, self.box
        self.interval = interval_bounds(g, box, known=self.known)
        method = "symbolic" if self.options.use_symbolic else "interval"
        self.bounds = compute_bounds(g, box, method=method, known=self.known) \
            if method == "symbolic" else self.interval
        for nid, fact in self.facts.items():
            pre, row, _ = self.index[nid]
            lo, hi = float(self.bounds[pre][0][row]), float(self.bounds[pre][1][row])
            if fact.lower is None or lo > fact.lower:
                fact.lower = lo
            if fact.upper is None or hi < fact.upper:
                fact.upper = hi
            if fact.stable:
                continue
            ilo, ihi = self.interval[pre][0][row], self.interval[pre][1][row]
            if hi <= 0.0:  # z <= 0 everywhere: relu(z) == 0 (also when z == 0)
                evidence = "interval" if ihi <= 0.0 else "symbolic"
                self._decide(nid, STABLY_INACTIVE, evidence)
            elif lo >= 0.0:
                evidence = "interval" if ilo >= 0.0 else "symbolic"
                self._decide(nid, STABLY_ACTIVE, evidence)
        self._exact_borderline()
        self.flush_facts()

    def _exact_borderline(self) -> None:
        """Decide in exact arithmetic the neurons whose float bound misses 0 only
        by its rounding margin (e.g. a maximum that is exactly 0)."""
        border = []
        for nid, fact in self.facts.items():
            if fact.stable:
                continue
            scale = max(1.0, abs(fact.lower), abs(fact.upper))
            if 0.0 < fact.upper <= 1e-9 * scale or -1e-9 * scale <= fact.lower < 0.0:
                border.append(nid)
        if not border:
            return
        exact = exact_interval_bounds(self.graph, self.box, known=self.known)
        for nid in border:
            pre, row, _ = self.index[nid]
            lo, hi = exact[pre][0][row], exact[pre][1][row]
            if hi <= 0:
                self.facts[nid].upper = min(self.facts[nid].upper, 0.0)
                self._decide(nid, STABLY_INACTIVE, "interval")
            elif lo >= 0:
                self.facts[nid].lower = max(self.facts[nid].lower, 0.0)
                self._decide(nid, STABLY_ACTIVE, "interval")

    def prove(self, nid: str, status: str, evidence: str, *, bound: float, stats: dict) -> None:
        """Record a solver proof: ``bound`` is the proven (already margin-adjusted)
        upper bound (inactive) or lower bound (active) of the pre-activation."""
        pre, row, _ = self.index[nid]
        size = self.graph.size_of(pre)
        lo, hi = self.known.get(pre, (np.full(size, -np.inf), np.full(size, np.inf)))
        lo, hi = lo.copy(), hi.copy()
        fact = self.facts[nid]
        if status == STABLY_INACTIVE:
            hi[row] = min(hi[row], bound)
            fact.upper = min(fact.upper, bound) if fact.upper is not None else bound
        else:
            lo[row] = max(lo[row], bound)
            fact.lower = max(fact.lower, bound) if fact.lower is not None else bound
        self.known[pre] = (lo, hi)
        fact.stats.update(stats)
        self._decide(nid, status, evidence)

    def _decide(self, nid: str, status: str, evidence: str) -> None:
        fact = self.facts[nid]
        if status in (STABLY_ACTIVE, STABLY_INACTIVE):
            # a verified witness on the forbidden side would contradict the proof
            side = self.witnesses.pos if status == STABLY_INACTIVE else self.witnesses.neg
            if nid in side:
                raise AssertionError(
                    f"neuron {nid}: proof of {status} by {evidence} contradicts an exact witness "
                    f"{side[nid]} (soundness bug)")
        fact.status = status
        fact.evidence = evidence

    def stable_fixed(self) -> dict:
        """neuron id -> "active" | "inactive" for neurons proven so far."""
        return {n: ("active" if f.status == STABLY_ACTIVE else "inactive")
                for n, f in self.facts.items() if f.stable}

    # -- witnesses ----------------------------------------------------
    def open_neurons(self, layer: str | None = None) -> list[str]:
        return [n for n, f in self.facts.items()
                if f.status in (UNKNOWN,) and (layer is None or f.layer == layer)]

    def add_points(self, points) -> None:
        """Replay points through the whole network; settle what they witness."""
        # solver solutions may sit a tolerance outside the box: clip them in
        # (the exact re-check then decides whether the clipped point witnesses)
        pts = self.box.clip(np.atleast_2d(np.asarray(points, dtype=np.float64)))
        pts = pts[np.all(np.isfinite(pts), axis=1)]
        if not len(pts):
            return
        todo = [n for n, f in self.facts.items() if f.status == UNKNOWN]
        if not todo:
            return
        self.counters["witness_points"] += len(pts)
        search_witnesses(self.graph, pts, todo, found=self.witnesses)
        for nid in todo:
            fact = self.facts[nid]
            fact.witness_pos = self.witnesses.pos.get(nid)
            fact.witness_neg = self.witnesses.neg.get(nid)
            if self.witnesses.settled(nid):
                fact.status, fact.evidence = UNSTABLE, "witness"
        self.flush_facts()

    # -- result -------------------------------------------------------
    def to_facts(self, *, complete: bool, meta: dict) -> Facts:
        for nid, fact in self.facts.items():
            if fact.witness_pos is None:
                fact.witness_pos = self.witnesses.pos.get(nid)
            if fact.witness_neg is None:
                fact.witness_neg = self.witnesses.neg.get(nid)
        return Facts(dict(self.facts), complete=complete, meta=meta)
