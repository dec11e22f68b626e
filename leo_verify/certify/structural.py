"""An exact structural prover for ``check``: stability facts + affine forms.

For two networks of which one is (close to) a rewrite of the other -- a
compression and its original, a copy with dead units removed, the same net
re-exported with rounded weights -- a joint MILP is hard (every unstable unit
of both nets gets its own binary) but the structure answers at once:

1. sample the first network ``f`` to *guess* which units are stable;
2. prove those guesses exactly (:func:`~.claims.prove_claims`; a wrong guess
   simply stays unproven);
3. bound ``max |g - f|`` over the box exactly by matching every ReLU unit of
   ``g`` to the unit of ``f`` with the nearest pre-activation form
   (:func:`~.difference.bound_difference`).

A bound within ``epsilon`` (``0`` for exact mode; ``0`` also settles top-1)
proves equivalence in exact rational arithmetic.  Then the roles are
swapped.  Anything else is "unknown" and the check goes on to the MILP.
"""
from __future__ import annotations

import time

import numpy as np

from ..domain import Box
from ..graph import Graph
from ..semantics import evaluate_all
from .claims import prove_claims
from .difference import bound_difference

__all__ = ["structural_prover", "guess_claims"]


def guess_claims(graph: Graph, box: Box, *, points: int = 4000, seed: int = 0) -> dict:
    """Units whose pre-activation keeps one sign on sampled points (guesses, not facts)."""
    rng = np.random.default_rng(seed)
    n = graph.input_size
    corners = np.where(rng.random((min(points, 1024), n)) < 0.5, box.lower, box.upper)
    x = np.vstack([box.sample(points, rng), corners, (box.lower + box.upper)[None, :] / 2])
    vals = evaluate_all(graph, x)
    out = {}
    for relu, op in graph.relus():
        z = vals[graph.args(relu)[0]]
        hi, lo = z.max(axis=0), z.min(axis=0)
        for i, nid in enumerate(op.neurons):
            if hi[i] <= 0:
                out[nid] = "inactive"
            elif lo[i] >= 0:
                out[nid] = "active"
    return out


def _one_way(f: Graph, g: Graph, box: Box, deadline: float):
    claims = guess_claims(f, box)
    left = deadline - time.monotonic()
    res = prove_claims(f, box, claims, time_limit=max(0.2, min(10.0, left / 4)), max_nodes=2000,
                       deadline=deadline)
    if time.monotonic() >= deadline:
        # the exact bound below does not look at the clock: do not start it late
        return None, "out of time before the exact bound", len(res.proven), len(claims)
    eps, why = bound_difference(f, g, res.proven, res.bounds, box)
    return eps, why, len(res.proven), len(claims)


def structural_prover(f: Graph, g: Graph, box: Box, mode: str, epsilon: float, deadline: float):
    """A :data:`~.equivalence.STRUCTURAL_PROVERS` hook (see the module docstring)."""
    from .equivalence import CheckResult
    target = epsilon if mode == "epsilon" else 0
    notes = []
    for a, b, name in ((f, g, "f"), (g, f, "g")):
        if time.monotonic() >= deadline:
            break
        eps, why, proven, guessed = _one_way(a, b, box, deadline)
        if eps is not None and eps <= target:
            return CheckResult("equivalent", mode=mode, epsilon=epsilon, method="structural", proof="exact",
                               reason=f"exact affine forms of {name}'s units under {proven} proven stability "
                                      f"facts: max |f - g| <= {float(eps):.3g} over the box")
        notes.append(f"from {name}: " + (f"bound {float(eps):.3g}" if eps is not None else why)
                     + f" ({proven}/{guessed} guessed facts proven)")
    return CheckResult("unknown", mode=mode, epsilon=epsilon, reason="; ".join(notes) or "out of time")


structural_prover.name = "structural"
#: it never returns a counterexample, and its proofs leave no kernel certificate
structural_prover.proves_only = True
