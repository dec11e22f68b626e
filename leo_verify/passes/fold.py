"""Fold a ReLU layer whose units are all stable (at least one active).

On the domain such a layer is linear: ``relu(z) = D z`` with ``D`` the 0/1
diagonal of its active units (all ones: the identity).  For ``A -> R -> U``
with ``A`` private to ``R`` and every user ``U`` affine, each user becomes

    U' = (U D W_A,  U D b_A + b_U)  reading A's argument,

and ``R``, ``A`` disappear: one ReLU layer fewer.  The product is exact in
exact mode (float64 in float mode: equal up to rounding).  When composing
would *grow* the parameter count (a bottleneck ``A``), or a user is an add or
the output (residual), ``R`` is only removed: its users read ``D A``
(inactive rows of ``A`` zeroed, exact) or, for a non-private or non-affine
feeder, an exact ``D`` affine (none when ``D`` is the identity).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Mapping

import numpy as np

from ..graph import Affine, Graph
from ._linalg import as_matrix, mm, mv, zeros
from ._rewrite import build, check_stable, remove_dead, substitute, weights

__all__ = ["fold_stable"]


def _zero_rows(op: Affine, rows) -> Affine:
    """``op`` with ``rows`` set to zero (exact weights carried along)."""
    rows = list(rows)
    if not rows:
        return op
    w, b = np.array(op.weight), np.array(op.bias)
    w[rows], b[rows] = 0.0, 0.0
    exact = None
    if op.exact is not None:
        ew, eb = (as_matrix(a, exact=True) for a in op.exact)
        ew[rows], eb[rows] = zeros((len(rows), op.in_size), exact=True), zeros(len(rows), exact=True)
        exact = (ew, eb)
    return Affine(w, b, exact=exact)


def _compose(g: Graph, feeder: str, users: list[str], act: list[int], *, exact: bool):
    """``U[:, act] A[act]`` for each user, or None if that grows the parameter count."""
    wa, ba = weights(g.op(feeder), exact=exact)
    wa, ba = as_matrix(wa[act], exact=exact), as_matrix(ba[act], exact=exact)
    before = g.op(feeder).parameters  # a convolution counts its kernel, not its unrolled matrix
    after = 0
    for u in users:
        before += g.op(u).parameters
        after += g.op(u).size * (g.op(feeder).in_size + 1)
    if after > before:
        return None
    out = {}
    for u in users:
        wu, bu = weights(g.op(u), exact=exact)
        wu = as_matrix(wu, exact=exact)[:, act]
        out[u] = build(mm(wu, wa, exact=exact), mv(wu, ba, exact=exact) + bu, exact=exact)
    return out


def fold_stable(graph: Graph, stable: Mapping[str, str], *, exact: bool = True
                ) -> tuple[Graph, list[dict]]:
    """Remove every ReLU layer whose units are all proven stable and not all inactive."""
    check_stable(stable)
    g = graph.copy()
    log: list[dict] = []
    for relu, _ in graph.relus():
        op = g.op(relu)
        states = [stable.get(nid) for nid in op.neurons]
        if not op.size or None in states or "active" not in states:
            continue  # unstable units, or all inactive (collapse's job)
        act = [i for i, s in enumerate(states) if s == "active"]
        dead = [i for i, s in enumerate(states) if s == "inactive"]
        feeder, users = g.args(relu)[0], g.users(relu)
        private = g.op(feeder).kind == "affine" and g.users(feeder) == [relu]
        composed = None
        if private and all(g.op(u).kind == "affine" for u in users):
            composed = _compose(g, feeder, users, act, exact=exact)
        if composed is None and private and dead and g.op(feeder).layout is not None:
            # zeroing rows would turn the convolution into a dense matrix: drop's job instead
            log.append({"pass": "fold", "layer": relu, "action": "kept", "skipped": True,
                        "reason": "convolution with inactive units", "count": op.size})
            continue
        if composed is not None:
            source = g.args(feeder)[0]
            for u, new in composed.items():
                g.replace(u, new)
                g.rewire(u, [source])
            how = "composed into users"
        elif private:
            g.replace(feeder, _zero_rows(g.op(feeder), dead))
            substitute(g, relu, feeder)  # cannot fail: the feeder had no other user
            how = "relu removed" + (", inactive rows zeroed" if dead else "")
        elif not dead and substitute(g, relu, feeder):
            how = "relu removed"
        else:
            diag = zeros((op.size, op.size), exact=True)
            for i in act:
                diag[i, i] = Fraction(1)
            lin = g.add(g.fresh_name(f"{relu}_linear"),
                        Affine.from_rational(diag, zeros(op.size, exact=True)), [feeder])
            substitute(g, relu, lin)  # cannot fail: `lin` is new
            how = "relu replaced by exact 0/1 diagonal affine"
        g.remove(relu)
        log.append({"pass": "fold", "layer": relu, "action": "folded", "neurons": list(op.neurons),
                    "count": op.size, "active": len(act), "inactive": len(dead), "how": how})
    remove_dead(g)
    return g, log
