"""Collapse a ReLU layer whose units are all stably inactive.

Such a layer outputs 0 on the domain.  It is replaced by the constant 0 (an
affine with zero weight on the graph input) and constants are propagated
(:mod:`.constants`): everything downstream that depends on the input only
through this layer becomes a constant, computed exactly in exact mode.

* Chain: the whole network becomes ``Input -> Affine(0, c) -> Output`` where
  ``c`` is the original's (constant) output on the domain.
* Residual: a bypassing path survives; an add that receives the zero simply
  loses that argument (and becomes its other argument when only one is left).
"""
from __future__ import annotations

from typing import Mapping

from ..graph import Graph
from ._linalg import zeros
from ._rewrite import check_stable, is_constant, remove_dead, replace_by_constant
from .constants import propagate_constants

__all__ = ["collapse_dead"]


def collapse_dead(graph: Graph, stable: Mapping[str, str], *, exact: bool = True
                  ) -> tuple[Graph, list[dict]]:
    """Replace all-inactive ReLU layers by zero and propagate the constants."""
    check_stable(stable)
    g = graph.copy()
    log: list[dict] = []
    for relu, op in graph.relus():
        if relu not in g or not op.size:
            continue  # already constant, or empty (cleanup's job)
        if any(stable.get(nid) != "inactive" for nid in op.neurons):
            continue
        replace_by_constant(g, relu, zeros(op.size, exact=exact), exact=exact)
        log.append({"pass": "collapse", "layer": relu, "action": "collapsed to zero",
                    "neurons": list(op.neurons), "count": op.size})
    if log:
        log += propagate_constants(g, exact=exact, pass_name="collapse")
        remove_dead(g)
        out = g.args(g.output_name)[0]
        if is_constant(g, out) and len(g) == 3:
            log.append({"pass": "collapse", "action": "network is constant on the domain",
                        "layer": out})
    return g, log
