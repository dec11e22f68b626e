"""Run the rewrite passes to a fixpoint.

Order within a round: collapse (all-inactive layers), fold (all-stable
layers), drop (inactive units), merge (dependent active units), proportional
(positively scaled units, units nothing reads), cleanup.
Each pass gets the stability facts restricted to neurons still in the graph
(facts of removed neurons are consumed), and the graph is linted after each
pass so a broken invariant names the pass that broke it.

Soundness of re-using the facts across rounds: every pass keeps, on the
domain, the pre-activation of every unit it keeps (as a function of the
input), so a fact proven on the original network stays true.
"""
from __future__ import annotations

import json
from typing import Mapping

from ..graph import Graph
from ._rewrite import check_stable
from .cleanup import cleanup
from .collapse import collapse_dead
from .drop import drop_inactive
from .fold import fold_stable
from .merge import merge_active
from .proportional import merge_proportional

__all__ = ["compress_graph", "PASSES"]

#: (name, pass) in the order a round runs them.
PASSES = (
    ("collapse", collapse_dead),
    ("fold", fold_stable),
    ("drop", drop_inactive),
    ("merge", merge_active),
    ("proportional", merge_proportional),
    ("cleanup", cleanup),
)


def compress_graph(graph: Graph, stable: Mapping[str, str], *, exact: bool = True,
                   max_rounds: int = 20) -> tuple[Graph, list[dict]]:
    """Compress ``graph`` losslessly on the domain where ``stable`` was proven.

    Parameters
    ----------
    graph : the network (not modified).
    stable : neuron id -> ``"active"`` / ``"inactive"`` (e.g.
        ``Facts.stable_map()``); ids not in the graph are ignored.
    exact : rewrite in exact rationals (the result equals the original over
        the reals on the domain); ``False``: float64, equal up to rounding.
    max_rounds : bound on the rounds of passes (a round that changes nothing ends the run).

    Returns
    -------
    (graph, log)
        ``log`` is a list of JSON-ready dicts, one per action (``round`` added),
        skip notices (``skipped: true``) reported once.
    """
    check_stable(stable)
    g = graph.copy().lint(where="compress input")
    log: list[dict] = []
    seen: set[str] = set()
    for rnd in range(max_rounds):
        changed = False
        for name, run in PASSES:
            live = set(g.neurons())
            g, entries = run(g, {n: s for n, s in stable.items() if n in live}, exact=exact)
            g.lint(where=f"pass {name!r}")
            for e in entries:
                if e.get("skipped"):
                    key = json.dumps(e, sort_keys=True)
                    if key in seen:
                        continue
                    seen.add(key)
                else:
                    changed = True
                log.append({**e, "round": rnd})
        if not changed:
            break
    else:
        log.append({"pass": "runner", "action": "stopped at max_rounds", "skipped": True,
                    "max_rounds": max_rounds})
    return g, log
