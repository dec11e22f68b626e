"""Claims proven piece by piece: split the input box, re-run the layered proof in each piece.

On a small box every bound is tighter: more units are decided, the LP lemmas
of each layer are tighter, so the deeper claims follow.  This is what the
float analysis does with CROWN bounds on up to 1,500 pieces; here every piece
runs the whole exact layered proof (:func:`~.claims.prove_claims`) for the
claims still needed there, and a piece whose claims are not all proven is
halved again (along the input with the largest width x sensitivity).

A claim is proven on the box when, on every root-to-leaf path of the piece
tree, some piece proves it.  The tree is JSON: each node holds its box (exact
strings), the claims it proves, and that piece's full proof data (claims and
lemmas), which the checker kernel (:func:`leo_verify.kernel.claims.check_piece_tree`)
re-verifies on that piece alone, in the direction of the claim it stands for.
"""
from __future__ import annotations

import time
from fractions import Fraction
from typing import Mapping

import numpy as np

from ..domain import Box
from ..graph import Graph
from .claims import _sensitivity, prove_claims
from ..kernel.exact import fraction_str

__all__ = ["prove_by_pieces", "prove_claims_with_pieces"]


def _split(graph: Graph, box: Box, needed: Mapping[str, str]) -> tuple[int, float]:
    """The input to halve: largest width x summed sensitivity of the needed claims."""
    where = {nid: (graph.args(relu)[0], i) for relu, op in graph.relus() for i, nid in enumerate(op.neurons)}
    score = np.zeros(graph.input_size)
    for nid in needed:
        pre, row = where[nid]
        score += _sensitivity(graph, pre, row, {})
    score *= box.upper - box.lower
    d = int(np.argmax(score))
    mid = float((Fraction(float(box.lower[d])) + Fraction(float(box.upper[d]))) / 2)
    return d, mid


def prove_by_pieces(graph: Graph, box: Box, claims: Mapping[str, str], needed: Mapping[str, str], *,
                    deadline: float, time_limit: float = 1.0, max_nodes: int = 300,
                    max_pieces: int = 64) -> tuple[dict | None, set]:
    """Prove ``needed`` (a subset of ``claims``) on ``box`` by splitting it.

    ``claims`` are all the stability claims (each piece re-proves what it can of
    them, so deeper layers see the earlier phases).  Returns ``(tree, proven)``:
    the piece tree and the set of needed claims proven on the whole box.
    """
    count = [0]

    def node(piece: Box, want: dict, depth: int):
        count[0] += 1
        res = prove_claims(graph, piece, claims, time_limit=time_limit, max_nodes=max_nodes,
                           deadline=deadline, input_split=False)
        here = {n for n in want if res.proofs[n].status == "proven"}
        rec = {"lower": [fraction_str(Fraction(float(v))) for v in piece.lower],
               "upper": [fraction_str(Fraction(float(v))) for v in piece.upper],
               "proves": sorted(here),
               "claims": [p.to_json() for p in res.proofs.values() if p.status == "proven"],
               "lemmas": res.lemmas}
        rest = {n: c for n, c in want.items() if n not in here}
        covered = set(here)
        if rest and count[0] + 2 <= max_pieces and time.monotonic() < deadline and depth < 30:
            d, mid = _split(graph, piece, rest)
            lo, hi = piece.lower.copy(), piece.upper.copy()
            if not (lo[d] < mid < hi[d]):
                return rec, covered
            left_hi, right_lo = hi.copy(), lo.copy()
            left_hi[d] = mid
            right_lo[d] = mid
            kids = []
            got = []
            for child in (Box(lo, left_hi, source="piece"), Box(right_lo, hi, source="piece")):
                sub, ok = node(child, rest, depth + 1)
                kids.append(sub)
                got.append(ok)
            rec["split"] = {"dim": d, "at": fraction_str(Fraction(mid))}
            rec["children"] = kids
            covered |= got[0] & got[1]
        return rec, covered

    tree, proven = node(box, dict(needed), 0)
    return tree, proven


def prove_claims_with_pieces(graph: Graph, box: Box, claims: Mapping[str, str], *, time_limit: float = 5.0,
                             max_nodes: int = 2000, pieces_budget: float = 300.0, max_pieces: int = 64,
                             crown_pieces: int = 4000, progress=None, deadline: float | None = None,
                             workers: int = 1):
    """:func:`~.claims.prove_claims` with pieces of the box, for networks with few inputs.

    Networks with at most :data:`~.claims.INPUT_SPLIT_MAX` inputs: each
    layer's claims that the whole-box relaxation leaves open are first proven
    on pieces bounded by exact CROWN (method ``"crown-split"``, trees in
    ``result.trees``, up to ``crown_pieces`` pieces per layer) before branch
    and bound; what is still open at the end gets the layered proof re-run
    piece by piece (method ``"pieces"``, tree ``result.pieces``) in what is
    left of ``pieces_budget`` seconds.  ``deadline`` (a ``time.monotonic()``
    value) bounds everything: claims not reached by then stay open (their
    neurons are kept).  ``workers > 1``: the pieces' exact bounds run on that many
    processes (:class:`~.crown_split.PiecePool`; the proofs are the same).
    """
    from .claims import INPUT_SPLIT_MAX, ClaimProof
    t_start = time.monotonic()
    if deadline is not None:
        pieces_budget = max(0.0, min(pieces_budget, deadline - t_start))
    few = graph.input_size <= INPUT_SPLIT_MAX and pieces_budget > 0
    # the per-claim box split is subsumed by the piece-wise proofs
    pool = None
    if few and workers > 1:
        from .crown_split import PiecePool
        pool = PiecePool(graph, workers)
    try:
        res = prove_claims(graph, box, claims, time_limit=time_limit, max_nodes=max_nodes,
                           input_split=not few, crown_budget=pieces_budget if few else 0.0,
                           crown_pieces=crown_pieces, progress=progress, deadline=deadline, crown_pool=pool)
    finally:
        if pool is not None:
            pool.close()
    res.pieces = None
    failing = {n: p.claim for n, p in res.proofs.items() if p.status != "proven" and n in claims}
    if failing and few and time.monotonic() < t_start + pieces_budget:
        t0 = time.monotonic()
        tree, got = prove_by_pieces(graph, box, claims, failing, deadline=t_start + pieces_budget,
                                    time_limit=min(time_limit, 2.0), max_nodes=min(max_nodes, 500),
                                    max_pieces=max_pieces)
        res.pieces = tree
        for n in got:
            res.proofs[n] = ClaimProof(n, failing[n], "proven", "pieces", "0", time=time.monotonic() - t0,
                                       reason="")
        for n in set(failing) - got:
            res.proofs[n].reason += "; pieces: not proven on every piece within the budget"
    return res
