"""Prove one layer's claims by splitting the input box, each piece bounded by exact CROWN.

The float analysis proves deep ACAS Xu claims this way (``analysis/split.py``);
here every piece that settles a claim is bounded *exactly*
(:func:`~.crown.crown_bounds`), so the proof is a tree of boxes and nothing
else: a re-checker follows the splits and recomputes the bound wherever the
tree says a claim is settled
(:func:`leo_verify.kernel.claims.check_crown_tree`).  Float CROWN (rigorous, but float) only steers:
it says where exact bounds are worth computing and which pieces are hopeless.

Semantics of a tree: a node is a box; ``settles`` lists the claims the exact
bound proves on that box; ``split`` halves the box at ``at`` (a float, so the
halves are exact) along ``dim`` into two ``children``.  A claim is proven on
the root box when on every root-to-leaf path some node settles it.  The
halves are closed and share the cut, so they cover their parent.

Every piece may use facts proven on the *whole* box (``lemmas``, ``phase``):
they hold on every part of it.
"""
from __future__ import annotations

import time
from collections import deque
from fractions import Fraction
from typing import Callable, Mapping

import numpy as np

from ..domain import Box
from ..graph import Graph
from ..analysis.split import smear_dim
from ..kernel.claims import holds as _holds
from ..kernel.crown import crown_bounds
from ..kernel.exact import fraction_str

__all__ = ["prove_layer_by_pieces", "PiecePool", "ROUND"]


def _settled(bounds, pre: str, rows: Mapping, pending) -> set:
    lo, hi = bounds[pre]
    return {nid for nid in pending if _holds(rows[nid][1], lo.fraction(rows[nid][0]), hi.fraction(rows[nid][0]))}


def _float_known(graph: Graph, lemmas: Mapping, phase: Mapping) -> dict:
    """Whole-box facts as float bounds for the steering analysis (not a proof)."""
    known = {}
    for name, (lo, hi) in lemmas.items():
        known[name] = (lo.floats() - 1e-12, hi.floats() + 1e-12)
    for relu, op in graph.relus():
        pre = graph.args(relu)[0]
        n = graph.size_of(pre)
        lo, hi = known.get(pre, (np.full(n, -np.inf), np.full(n, np.inf)))
        lo, hi = lo.copy(), hi.copy()
        for i, nid in enumerate(op.neurons):
            if phase.get(nid) == "active":
                lo[i] = max(lo[i], 0.0)
            elif phase.get(nid) == "inactive":
                hi[i] = min(hi[i], 0.0)
        known[pre] = (lo, hi)
    return known


#: pieces per round: the float steering of a round runs first, then its exact bounds (on the
#: pool when there is one), then its splits.  Fixed, so the tree does not depend on the workers.
ROUND = 16


def exact_piece(graph: Graph, lo, hi, lemmas: Mapping, phase: Mapping, pre: str, rows) -> tuple:
    """Exact CROWN bounds of ``pre`` on the piece ``[lo, hi]`` for ``rows`` (a worker's task)."""
    b = crown_bounds(graph, (list(map(Fraction, lo)), list(map(Fraction, hi))), lemmas=lemmas, phase=phase,
                     upto=pre, target_rows=rows)
    return b[pre]


#: exact pieces computed in-process before the pool starts
POOL_AFTER = 160


class PiecePool:
    """Exact piece bounds on ``workers`` ``spawn`` processes (fork after torch / solver threads
    start is unsafe); the graph is sent once per worker.  Results are consumed in submission
    order, so the proof tree is the one the inline run builds."""

    def __init__(self, graph: Graph, workers: int):
        self.graph, self.workers, self.pool = graph, int(workers), None
        self.inline = 0

    def map(self, tasks: list) -> list:
        if self.pool is None and self.inline < POOL_AFTER:
            # the first pieces run here: starting the processes costs ~1 s (measured: ACAS Xu
            # 1_1/prop_4, 99 exact pieces, 3.1 s inline vs 3.8 s with a pool from the start)
            self.inline += len(tasks)
            return [exact_piece(self.graph, *t) for t in tasks]
        if self.pool is None:
            import concurrent.futures as cf
            import multiprocessing as mp
            self.pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                               initializer=_init_worker, initargs=(self.graph,))
        futures = [self.pool.submit(_worker_piece, *t) for t in tasks]
        return [f.result() for f in futures]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


_W: dict = {}


def _init_worker(graph: Graph) -> None:
    _W["graph"] = graph


def _worker_piece(lo, hi, lemmas, phase, pre, rows):
    return exact_piece(_W["graph"], lo, hi, lemmas, phase, pre, rows)


def prove_layer_by_pieces(graph: Graph, box: Box, pre: str, claims: Mapping[str, tuple[int, str]], *,
                          lemmas: Mapping, phase: Mapping, deadline: float,
                          max_pieces: int = 2000, interlude: Callable[[set], set] | None = None,
                          interlude_at: int = 128, pool: PiecePool | None = None) -> tuple[dict, set, dict]:
    """Prove ``claims`` (neuron id -> (row of ``pre``, claim)) on ``box`` piece by piece.

    Returns ``(tree, proven, stats)``.  Breadth first, so the budget is spread
    over all claims rather than spent on the hardest; a claim some piece shows
    to be *false* everywhere on it (rigorous float bound of the other sign) is
    dropped at once.  After ``interlude_at`` pieces, ``interlude`` is called
    once with the claims still open and returns those it proved by other
    means; the pieces stop working on them (``stats["elsewhere"]``).  Pieces go
    in rounds of :data:`ROUND`; with a ``pool`` a round's exact bounds run in
    parallel (same tree).
    """
    from ..analysis.bounds import compute_bounds
    known = _float_known(graph, lemmas, phase)
    root: dict = {}
    queue = deque([(root, box.lower.astype(np.float64), box.upper.astype(np.float64), set(claims))])
    refuted: set = set()
    elsewhere: set = set()
    unfinished: set = set()
    pieces = exact_calls = 0
    while queue:
        if interlude is not None and pieces >= interlude_at:
            still = set().union(*(p for *_, p in queue)) - refuted - elsewhere
            elsewhere |= interlude(still) & still
            interlude = None
        batch = []
        while queue and len(batch) < ROUND:
            node, lo, hi, pending = queue.popleft()
            pending -= refuted | elsewhere
            if not pending:
                continue
            if pieces >= max_pieces or time.monotonic() > deadline:
                unfinished |= pending
                continue
            pieces += 1
            fb = compute_bounds(graph, Box(lo, hi, source="piece"), known=known, upto=pre)[pre]
            hopeful = set()
            for nid in pending:
                row, claim = claims[nid]
                flo, fhi = fb[0][row], fb[1][row]
                if (flo > 0.0) if claim == "inactive" else (fhi < 0.0):
                    refuted.add(nid)
                elif (fhi <= 1e-9) if claim == "inactive" else (flo >= -1e-9):
                    hopeful.add(nid)
            batch.append((node, lo, hi, pending, hopeful))
        # the kernel recomputes only the rows a node settles: each row's bound is the same
        # whichever others are computed, so the hopeful rows are all we need here
        tasks = [(lo.tolist(), hi.tolist(), lemmas, phase, pre, sorted({claims[n][0] for n in hopeful}))
                 for _, lo, hi, _, hopeful in batch if hopeful]
        exact_calls += len(tasks)
        results = iter(pool.map(tasks) if pool is not None and len(tasks) > 1
                       else [exact_piece(graph, *t) for t in tasks])
        for node, lo, hi, pending, hopeful in batch:
            if hopeful:
                got = _settled({pre: next(results)}, pre, claims, hopeful)
                if got:
                    node["settles"] = sorted(got)
                pending = pending - got
            pending -= refuted | elsewhere
            if not pending:
                continue
            d = smear_dim(graph, pre, [claims[n][0] for n in sorted(pending)], lo, hi)
            mid = float((Fraction(lo[d]) + Fraction(hi[d])) / 2)
            if not (lo[d] < mid < hi[d]):
                unfinished |= pending
                continue
            hi1, lo2 = hi.copy(), lo.copy()
            hi1[d] = lo2[d] = mid
            left, right = {}, {}
            node["split"] = {"dim": d, "at": fraction_str(Fraction(mid))}
            node["children"] = [left, right]
            queue.append((left, lo, hi1, set(pending)))
            queue.append((right, lo2, hi, set(pending)))
    proven = set(claims) - refuted - unfinished - elsewhere
    return root, proven, {"pieces": pieces, "exact": exact_calls, "refuted": sorted(refuted),
                          "elsewhere": sorted(elsewhere)}
