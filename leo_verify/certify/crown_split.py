"""Prove one layer's claims by splitting the input box, each piece bounded by exact CROWN.

The float analysis proves deep ACAS Xu claims this way (``analysis/split.py``);
here every piece is bounded *exactly* (:func:`~.crown.crown_bounds_many`, the
pieces of a round in one batch), so the proof is a tree of boxes and nothing
else: a re-checker follows the splits and recomputes the bound wherever the
tree says a claim is settled
(:func:`leo_verify.kernel.claims.check_crown_tree`).  The exact bound also
steers: a claim it shows false on a piece is dropped; floats only choose the
dimension to cut (ReluVal's smear).  Float CROWN used to filter the pieces
worth an exact bound; since exact bounds run in batches that filter cost more
than it saved (ACAS Xu 1_1/prop_1: 21.0 s with it, 20.2 s without).

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
from ..kernel.crown import crown_bounds_many
from ..kernel.exact import fraction_str

__all__ = ["prove_layer_by_pieces", "PiecePool", "ROUND"]


def _settled(bounds, rows: Mapping, pending) -> set:
    """Claims the exact bound ``(lo, hi)`` of the piece proves."""
    lo, hi = bounds
    return {nid for nid in pending if _holds(rows[nid][1], lo.fraction(rows[nid][0]), hi.fraction(rows[nid][0]))}


def _refuted(bounds, rows: Mapping, pending) -> set:
    """Claims the exact bound shows *false* everywhere on the piece (hence on the box)."""
    lo, hi = bounds
    return {nid for nid in pending if (lo.fraction(rows[nid][0]) > 0 if rows[nid][1] == "inactive"
                                       else hi.fraction(rows[nid][0]) < 0)}


#: pieces per round: a round's exact bounds run as one batch (split among the pool's workers
#: when there is one), then its splits.  Fixed, so the tree does not depend on the workers.
ROUND = 16


def exact_pieces(graph: Graph, boxes: list, lemmas: Mapping, phase: Mapping, pre: str, rows: list) -> list:
    """Exact CROWN bounds ``(lo, hi)`` of ``pre`` on each piece ``(lo, hi)`` of ``boxes``,
    for that piece's ``rows`` (a worker's task: one batch, :func:`crown_bounds_many`)."""
    b = crown_bounds_many(graph, [(list(map(Fraction, lo)), list(map(Fraction, hi))) for lo, hi in boxes],
                          lemmas=lemmas, phase=phase, upto=pre, target_rows=rows)
    lo, hi = b[pre]
    return [(lo[p], hi[p]) for p in range(len(boxes))]


#: exact pieces computed in-process before the pool starts
POOL_AFTER = 160


#: BLAS thread counts the workers start with: one each (two workers with two BLAS threads
#: each on 2 cores spin against each other: ACAS Xu 1_1/prop_1 pieces with 2 workers took
#: 28.7 s with the default threads, 11.7 s with one, against 15.6 s in one process)
_ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class PiecePool:
    """Exact piece bounds on ``workers`` ``spawn`` processes (fork after torch / solver threads
    start is unsafe), each with single-threaded BLAS; the graph is sent once per worker.
    Results are consumed in submission order, so the proof tree is the one the inline run
    builds."""

    def __init__(self, graph: Graph, workers: int):
        self.graph, self.workers, self.pool = graph, int(workers), None
        self.inline = 0

    def map(self, boxes: list, lemmas: Mapping, phase: Mapping, pre: str, rows: list) -> list:
        """:func:`exact_pieces` of a round, in one batch per worker."""
        if self.pool is None and self.inline < POOL_AFTER:
            # the first pieces run here: starting the processes costs ~1 s (measured: ACAS Xu
            # 1_1/prop_4, 99 exact pieces, 3.1 s inline vs 3.8 s with a pool from the start)
            self.inline += len(boxes)
            return exact_pieces(self.graph, boxes, lemmas, phase, pre, rows)
        if self.pool is None:
            self.pool = _start_pool(self.workers, self.graph)
        step = -(-len(boxes) // self.workers)
        jobs = [self.pool.apply_async(_worker_pieces, (boxes[i:i + step], lemmas, phase, pre, rows[i:i + step]))
                for i in range(0, len(boxes), step)]
        return [r for j in jobs for r in j.get()]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


def _start_pool(workers: int, graph: Graph):
    """A ``spawn`` pool whose processes start now, while the BLAS thread variables say 1
    (they are read when a process loads numpy); this process's variables are restored."""
    import multiprocessing as mp
    import os
    saved = {k: os.environ.get(k) for k in _ONE_THREAD}
    os.environ.update({k: "1" for k in _ONE_THREAD})
    try:
        return mp.get_context("spawn").Pool(processes=workers, initializer=_init_worker, initargs=(graph,))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_W: dict = {}


def _init_worker(graph: Graph) -> None:
    _W["graph"] = graph


def _worker_pieces(boxes, lemmas, phase, pre, rows):
    return exact_pieces(_W["graph"], boxes, lemmas, phase, pre, rows)


def prove_layer_by_pieces(graph: Graph, box: Box, pre: str, claims: Mapping[str, tuple[int, str]], *,
                          lemmas: Mapping, phase: Mapping, deadline: float,
                          max_pieces: int = 2000, interlude: Callable[[set], set] | None = None,
                          interlude_at: int = 128, pool: PiecePool | None = None) -> tuple[dict, set, dict]:
    """Prove ``claims`` (neuron id -> (row of ``pre``, claim)) on ``box`` piece by piece.

    Returns ``(tree, proven, stats)``.  Breadth first, so the budget is spread
    over all claims rather than spent on the hardest; a claim some piece shows
    to be *false* everywhere on it (exact bound of the other sign) is dropped at
    once.  After ``interlude_at`` pieces, ``interlude`` is called
    once with the claims still open and returns those it proved by other
    means; the pieces stop working on them (``stats["elsewhere"]``).  Pieces go
    in rounds of :data:`ROUND`; with a ``pool`` a round's exact bounds run in
    parallel (same tree).
    """
    root: dict = {}
    queue = deque([(root, box.lower.astype(np.float64), box.upper.astype(np.float64), set(claims))])
    refuted: set = set()
    elsewhere: set = set()
    unfinished: set = set()
    pieces = 0
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
            batch.append((node, lo, hi, pending))
        # each row's bound is the same whichever others are computed (the kernel recomputes
        # only the rows a node settles), so a piece computes the rows of its pending claims
        args = ([(lo.tolist(), hi.tolist()) for _, lo, hi, _ in batch], lemmas, phase, pre,
                [sorted({claims[n][0] for n in pending}) for *_, pending in batch])
        results = (pool.map(*args) if pool is not None and len(batch) > 1 else exact_pieces(graph, *args)) \
            if batch else []
        for (node, lo, hi, pending), bounds in zip(batch, results):
            got = _settled(bounds, claims, pending)
            if got:
                node["settles"] = sorted(got)
            pending = pending - got
            refuted |= _refuted(bounds, claims, pending)
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
    return root, proven, {"pieces": pieces, "refuted": sorted(refuted),
                          "elsewhere": sorted(elsewhere)}
