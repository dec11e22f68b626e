"""Drop stably inactive neurons.

A unit that is inactive on the whole domain outputs 0 there, so its column
in every user affine contributes nothing: deleting the unit (its row in the
feeding affine, its id in the ReLU, its column in each user) keeps the
function on the domain.  Deletion is exact in either mode.

Handled: ReLU layers whose users are all affine nodes, whatever feeds them
(a private affine loses rows; a shared affine or a residual add is narrowed
by :func:`restrict_feeder`).  Skipped (logged ``kept``): layers with an add
or the output among their users -- an add needs every coordinate, and
dropping there would need a scatter affine that costs more than the unit.
A layer may lose all its units; :mod:`.cleanup` then turns its users into
constants (in the runner, :mod:`.collapse` sees such layers first).
"""
from __future__ import annotations

from typing import Mapping

from ..graph import Graph, Relu
from ._rewrite import check_stable, remove_dead, restrict_feeder, select

__all__ = ["drop_inactive"]


def drop_inactive(graph: Graph, stable: Mapping[str, str], *, exact: bool = True
                  ) -> tuple[Graph, list[dict]]:
    """Remove every stably inactive unit whose layer feeds only affine nodes.

    Parameters
    ----------
    graph : the network (not modified).
    stable : neuron id -> ``"active"`` / ``"inactive"``, proven over the domain.
    exact : accepted for a uniform pass signature; deletion is exact anyway.

    Returns
    -------
    (graph, log)
    """
    check_stable(stable)
    g = graph.copy()
    log: list[dict] = []
    for relu, _ in graph.relus():
        op = g.op(relu)
        dead = [i for i, nid in enumerate(op.neurons) if stable.get(nid) == "inactive"]
        if not dead:
            continue
        ids = [op.neurons[i] for i in dead]
        users = g.users(relu)
        blockers = [u for u in users if g.op(u).kind != "affine"]
        if blockers:
            log.append({"pass": "drop", "layer": relu, "action": "kept", "skipped": True,
                        "reason": "feeds add/output", "users": blockers,
                        "neurons": ids, "count": len(ids)})
            continue
        gone = set(dead)
        keep = [i for i in range(op.size) if i not in gone]
        how = restrict_feeder(g, relu, keep)
        g.replace(relu, Relu([op.neurons[i] for i in keep]))
        for u in users:
            g.replace(u, select(g.op(u), cols=keep))
        log.append({"pass": "drop", "layer": relu, "action": "dropped", "neurons": ids,
                    "count": len(ids), "remaining": len(keep), "feeder": how})
    remove_dead(g)
    return g, log
