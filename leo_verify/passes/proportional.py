"""Merge positively scaled units, and remove units nothing reads.

``relu(c z) = c relu(z)`` for every ``c > 0``.  Two units of one layer whose
incoming weights and bias are positive multiples of each other, ``(w_v, b_v) =
c (w_u, b_u)`` with ``c > 0``, output ``relu(z_v) = c relu(z_u)`` *everywhere*
(stable or not), so unit ``v`` can go and every user's column ``u`` becomes
``V[:, u] + c V[:, v]``.  A negative multiple is a different function
(``relu(-z) != -relu(z)``) and is never merged.  A unit whose every outgoing
weight is exactly 0 contributes nothing and is removed.  Proven over symbolic
weights in ``proofs/merge_proportional.py``; the certificate's identity check
proves each instance itself (:func:`leo_verify.kernel.identity.forms` gives a
positively scaled unit the variable of the first one, times ``c``).

Handled: ReLU layers fed by a private affine node whose users are all affine
nodes (the same layers :mod:`.drop` handles), units with no stability fact
(stable units are the other passes' business).  Exact mode compares the exact
rational rows; float mode merges only exact duplicates (``c = 1``), so no
weight is rounded.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Mapping

import numpy as np

from ..graph import Graph, Relu
from ._rewrite import build, check_stable, remove_dead, restrict_feeder, select, weights

__all__ = ["merge_proportional"]


def _ray(w_row, b) -> tuple | None:
    row = [Fraction(v) for v in w_row] + [Fraction(b)]
    lead = next((v for v in row if v != 0), None)
    if lead is None:
        return None
    s = abs(lead)
    return tuple(v / s for v in row), s


def merge_proportional(graph: Graph, stable: Mapping[str, str], *, exact: bool = True
                       ) -> tuple[Graph, list[dict]]:
    """Merge units whose (weights, bias) are positive multiples; remove units no user reads.

    Parameters
    ----------
    graph : the network (not modified).
    stable : neuron id -> ``"active"`` / ``"inactive"``; units with a fact are left alone.
    exact : exact rationals (any ``c > 0``); ``False``: only exact duplicates.

    Returns
    -------
    (graph, log)
    """
    check_stable(stable)
    g = graph.copy()
    log: list[dict] = []
    for relu, _ in graph.relus():
        op = g.op(relu)
        pre = g.args(relu)[0]
        users = g.users(relu)
        if g.op(pre).kind != "affine" or not users or any(g.op(u).kind != "affine" for u in users) \
                or len(g.users(pre)) != 1:
            continue
        if g.op(pre).layout is not None or any(g.op(u).layout is not None for u in users):
            continue  # rows of a convolution are shifted copies, not multiples; users stay convs
        w, b = g.op(pre).rational()
        free = [i for i, nid in enumerate(op.neurons) if nid not in stable]
        # units no user reads (every outgoing weight exactly 0): remove
        silent = [i for i in free if all(all(Fraction(v) == 0 for v in g.op(u).rational()[0][:, i])
                                         for u in users)]
        groups: dict = {}
        scale: dict = {}
        for i in free:
            if i in silent:
                continue
            ray = _ray(w[i], b[i])
            if ray is None:
                continue
            groups.setdefault(ray[0], []).append(i)
            scale[i] = ray[1]
        merged = {}  # removed unit -> (kept unit, c)
        for members in groups.values():
            keep = members[0]
            for v in members[1:]:
                c = scale[v] / scale[keep]
                if exact or c == 1:
                    merged[v] = (keep, c)
        if not merged and not silent:
            continue
        gone = set(merged) | set(silent)
        keep_idx = [i for i in range(op.size) if i not in gone]
        for u in users:
            uw, ub = weights(g.op(u), exact=exact)
            uw = np.array(uw, dtype=object if exact else np.float64, copy=True)
            for v, (k, c) in merged.items():
                uw[:, k] = uw[:, k] + (uw[:, v] * c if exact else uw[:, v] * float(c))
            g.replace(u, select(build(uw, ub, exact=exact), cols=keep_idx))
        how = restrict_feeder(g, relu, keep_idx)
        g.replace(relu, Relu([op.neurons[i] for i in keep_idx]))
        if merged:
            log.append({"pass": "proportional", "layer": relu, "action": "merged",
                        "neurons": [op.neurons[v] for v in sorted(merged)],
                        "into": {op.neurons[v]: [op.neurons[k], str(c)] for v, (k, c) in sorted(merged.items())},
                        "count": len(merged), "remaining": len(keep_idx), "feeder": how})
        if silent:
            log.append({"pass": "proportional", "layer": relu, "action": "removed (no outgoing weight)",
                        "neurons": [op.neurons[i] for i in silent], "count": len(silent),
                        "remaining": len(keep_idx), "feeder": how})
    remove_dead(g)
    return g, log
