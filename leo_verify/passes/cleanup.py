"""Structural clean-up after the stability passes.

In order:

1. *empty layers*: an affine reading a node of size 0 (a ReLU whose units
   were all dropped) is the constant ``b`` -- it becomes a constant node;
2. constant propagation (:mod:`.constants`);
3. identity affines (``W = I``, ``b = 0`` exactly) are bypassed, unless a
   user already reads their argument (no repeated arguments in the IR);
4. exact mode only: ``A -> B`` affine pairs where ``B`` is ``A``'s only user
   become one affine ``(W_B W_A, W_B b_A + b_B)`` in Fractions, when that
   does not grow the parameter count (through a bottleneck it would);
5. dead nodes (not reaching the output) are removed.

Float mode skips step 4: a float product would add rounding for no neuron
saved.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..graph import Graph
from ._linalg import as_matrix, mm, mv
from ._rewrite import build, is_constant, remove_dead, replace_by_constant, substitute, weights
from .constants import propagate_constants

__all__ = ["cleanup"]


def _is_identity(op) -> bool:
    if op.size != op.in_size or np.any(op.bias != 0) or np.any(op.weight != np.eye(op.size)):
        return False
    w, b = op.rational()  # floats can hide tiny exact deviations
    return all(v == 0 for v in b) and all(
        w[i, j] == (1 if i == j else 0) for i in range(op.size) for j in range(op.size))


def cleanup(graph: Graph, stable: Mapping[str, str] | None = None, *, exact: bool = True
            ) -> tuple[Graph, list[dict]]:
    """Empty layers, constants, identities, affine pairs (exact mode), dead code.

    ``stable`` is accepted for the uniform pass signature and not used.
    """
    g = graph.copy()
    log: list[dict] = []
    for name in g.nodes():
        op = g.op(name)
        if op.kind == "affine" and op.in_size == 0 and not is_constant(g, name):
            arg = g.args(name)[0]
            replace_by_constant(g, name, weights(op, exact=exact)[1], exact=exact)
            log.append({"pass": "cleanup", "layer": name, "action": "reads empty layer: constant",
                        "empty": arg})
    log += propagate_constants(g, exact=exact, pass_name="cleanup")
    for name in g.nodes():
        op = g.op(name) if name in g else None
        if op is not None and op.kind == "affine" and _is_identity(op) and substitute(g, name, g.args(name)[0]):
            g.remove(name)
            log.append({"pass": "cleanup", "layer": name, "action": "identity affine removed"})
    if exact:
        for name in g.nodes():
            if name not in g or g.op(name).kind != "affine":
                continue
            first = g.args(name)[0]
            a, b = g.op(first), g.op(name)
            if a.kind != "affine" or g.users(first) != [name] or is_constant(g, first):
                continue
            if b.size * (a.in_size + 1) > a.parameters + b.parameters:
                continue
            wa, ba = weights(a, exact=True)
            wb, bb = weights(b, exact=True)
            g.replace(name, build(mm(wb, wa, exact=True),
                                  mv(wb, ba, exact=True) + as_matrix(bb, exact=True), exact=True))
            g.rewire(name, g.args(first))
            g.remove(first)
            log.append({"pass": "cleanup", "layer": name, "action": "affine pair composed",
                        "absorbed": first})
    dead = remove_dead(g)
    if dead:
        log.append({"pass": "cleanup", "action": "dead nodes removed", "nodes": dead,
                    "count": len(dead)})
    return g, log
