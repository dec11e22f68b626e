"""Input splitting: prove stability by sound bounds on pieces of the box.

Symbolic bounds tighten quickly as the box shrinks, and for networks with few
inputs (ACAS Xu has 5) a few hundred pieces prove what a deep MILP struggles
with.  A neuron is proven stably inactive (active) when its sound upper
(lower) bound is <= 0 (>= 0) on every piece; the pieces are closed halves of
their parent, so they cover the box.  Piece centres are kept as witness
candidates: a piece on which a bound shows the other sign *everywhere*
refutes the target at once.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np

from ..domain import Box
from .bounds import compute_bounds
from .facts import STABLY_ACTIVE, STABLY_INACTIVE, UNKNOWN
from .witness import _input_gradients

__all__ = ["split_layer", "smear_dim", "MAX_SPLIT_INPUTS"]

#: input splitting is tried only for networks with at most this many inputs
MAX_SPLIT_INPUTS = 16


def _targets(state, layer):
    """Open neurons of ``layer`` -> the side a witness has not excluded."""
    out = {}
    for nid in state.open_neurons(layer):
        pos, neg = nid in state.witnesses.pos, nid in state.witnesses.neg
        if pos and not neg:
            out[nid] = "active"
        elif neg and not pos:
            out[nid] = "inactive"
        # with no witness at all the neuron is left to the MILP: the
        # sampling phase almost always finds one side
    return out


def smear_dim(graph, pre: str, rows, lower: np.ndarray, upper: np.ndarray) -> int:
    """ReluVal's "smear": the input whose width times |gradient| (at the
    piece's centre, summed over the pending neurons ``rows`` of ``pre``) is largest."""
    width = upper - lower
    x = np.repeat(((lower + upper) / 2)[None, :], len(rows), axis=0)
    _, grad = _input_gradients(graph, x, pre, np.array(rows))
    smear = np.abs(grad).sum(axis=0) * width
    if not np.any(smear > 0):
        smear = width
    return int(np.argmax(smear))


def split_layer(state, layer: str, *, max_pieces: int = 1500, deadline: float | None = None) -> None:
    """Try to prove the open neurons of ``layer`` stable by input splitting.

    ``deadline`` (:func:`time.monotonic`): no new piece is bounded after it; neurons with
    pieces left open stay unknown (sound: only fully closed neurons are proven)."""
    g = state.graph
    if g.input_size > MAX_SPLIT_INPUTS:
        return
    targets = _targets(state, layer)
    if not targets:
        return
    pre = g.args(layer)[0]
    rows = {nid: state.index[nid][1] for nid in targets}
    refuted: set = set()
    worst = {nid: -np.inf for nid in targets}  # max of the proven side's bound over pieces
    # breadth first: the budget is spread over all neurons instead of being
    # spent on the one whose maximum sits exactly at 0
    stack = deque([(state.box, set(targets))])
    pieces, centres = 0, []
    while stack and pieces < max_pieces and (deadline is None or time.monotonic() < deadline):
        box, pending = stack.popleft()
        pending -= refuted
        if not pending:
            continue
        pieces += 1
        b = compute_bounds(g, box, known=state.known, upto=pre)[pre]
        left = set()
        for nid in pending:
            lo, hi = b[0][rows[nid]], b[1][rows[nid]]
            if targets[nid] == "inactive":
                if hi <= 0.0:
                    worst[nid] = max(worst[nid], hi)
                elif lo > 0.0:
                    refuted.add(nid)
                else:
                    left.add(nid)
            else:
                if lo >= 0.0:
                    worst[nid] = max(worst[nid], -lo)
                elif hi < 0.0:
                    refuted.add(nid)
                else:
                    left.add(nid)
        if left:
            centre = (box.lower + box.upper) / 2
            centres.append(centre)
            d = smear_dim(g, pre, [rows[n] for n in sorted(left)], box.lower, box.upper)
            if box.upper[d] - box.lower[d] <= 0.0:
                continue  # a point cannot be split: leave those neurons open
            mid = (box.lower[d] + box.upper[d]) / 2
            hi1, lo2 = box.upper.copy(), box.lower.copy()
            hi1[d], lo2[d] = mid, mid
            stack.append((Box(box.lower, hi1), set(left)))
            stack.append((Box(lo2, box.upper), set(left)))
    unfinished = set()
    for _, pending in stack:
        unfinished |= pending
    for nid, side in targets.items():
        if nid in refuted or nid in unfinished or state.facts[nid].status != UNKNOWN:
            continue
        # every piece closed: proven on the whole box
        status = STABLY_INACTIVE if side == "inactive" else STABLY_ACTIVE
        bound = worst[nid] if side == "inactive" else -worst[nid]
        state.prove(nid, status, "symbolic", bound=bound, stats={"input_split_pieces": pieces})
    state.counters["split_pieces"] = state.counters.get("split_pieces", 0) + pieces
    if centres:
        state.add_points(np.array(centres))
