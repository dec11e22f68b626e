"""Rewrite passes: compress a network losslessly on a domain given proven
ReLU stability facts.

Each pass is a pure function ``(graph, stable, *, exact=True) -> (graph, log)``
that works on a copy; :func:`compress_graph` runs them to a fixpoint.
"""
from .cleanup import cleanup
from .collapse import collapse_dead
from .drop import drop_inactive
from .fold import fold_stable
from .merge import merge_active
from .runner import PASSES, compress_graph

__all__ = ["drop_inactive", "merge_active", "fold_stable", "collapse_dead", "cleanup",
           "compress_graph", "PASSES"]
