"""Drop stably inactive neurons.

A unit that is inactive on the whole domain outputs 0 there, so its column
in every user affine contributes nothing: deleting the unit (its row in the
feeding affine, its id in the ReLU, its column in each user) keeps the
function on the domain.  Deletion is exact in either mode.

Handled: ReLU layers whose users are all affine nodes, whatever feeds them
(a private affine loses rows; a shared affine or a residual add is narrowed
by :func:`restrict_feeder`).  A layer read by a convolution loses whole input channels only
(units of a channel that is only partly inactive stay, logged), so the convolution keeps its
form.  Skipped (logged ``kept``): layers with an add or the output among their users -- an add needs every coordinate, and
dropping there would need a scatter affine that costs more than the unit.
A layer may lose all its units; :mod:`.cleanup` then turns its users into
constants (in the runner, :mod:`.collapse` sees such layers first).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..graph import Graph, Relu
from ._rewrite import check_stable, remove_dead, restrict_feeder, select

__all__ = ["drop_inactive"]


def _whole_channels(g: Graph, users: list, dead: list) -> tuple[list, list]:
    """``(droppable, held)``: a convolution reading the layer keeps its form only if it loses
    whole input channels (and, with ``group > 1``, none), so a dead unit goes only when every
    unit of its channel, in every convolution user, is dead too."""
    dead_set = set(dead)
    droppable = set(dead)
    for u in users:
        lay = g.op(u).layout
        if lay is None:
            continue
        if lay.groups != 1:
            return [], list(dead)
        hw = lay.in_shape[1] * lay.in_shape[2]
        chan = np.where(lay.cols >= 0, lay.cols // hw, -1)
        for c in np.unique(chan[dead]):
            if c < 0:
                continue
            members = {int(m) for m in np.nonzero(chan == c)[0]}
            if not members <= dead_set:
                droppable -= members
    return sorted(droppable), sorted(dead_set - droppable)


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
        dead, held = _whole_channels(g, users, dead)
        if held:
            log.append({"pass": "drop", "layer": relu, "action": "kept", "skipped": True,
                        "reason": "read by a convolution: only whole input channels go",
                        "neurons": [op.neurons[i] for i in held], "count": len(held)})
            ids = [op.neurons[i] for i in dead]
            if not dead:
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
