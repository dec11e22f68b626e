"""Exact interval bounds over a box (or a piece of it), phase-aware, with lemmas.

One table ``op kind -> interval function`` (:data:`INTERVAL_OPS`).  Values are
:class:`~leo_verify.kernel.exact.Q` vectors: no rounding at all, except the
deliberate *outward* rounding of pre-activation bounds to the grid
``2^-GRID_BITS``, which keeps later exact
arithmetic fast and the bounds valid.

``lemmas`` are proven bounds (node -> (lo, hi) Q vectors, possibly tighter
than intervals); they are intersected in.  ``phase`` maps neuron ids to
``"active"``/``"inactive"`` (proven facts, or a branch's hypothesis): an
active unit passes ``[max(l, 0), u]``, an inactive one ``[0, 0]`` -- and the
pre-activation itself is clipped to ``[0, u]`` / ``[l, 0]``.

The prover and ``recheck`` both call :func:`node_bounds`, so a certificate
is re-checked against exactly the bounds it was built with.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from ..errors import UnsupportedOp
from ..graph import Graph
from .exact import Q, int_matmul, limbs_of

__all__ = ["INTERVAL_OPS", "node_bounds", "weights_q", "affine_q"]

#: pre-activation bounds are rounded outwards to multiples of 2^-GRID_BITS
#: (~3.6e-15): keeps every later exact computation on short integers
GRID_BITS = 48


def affine_q(op) -> tuple[Q, Q]:
    """``(W, b)`` of an affine op as exact :class:`Q` arrays (cached on the op): its exact
    rationals when it has them, else those of its stored floats (converted without a
    Fraction per weight)."""
    cached = op.__dict__.get("_affine_q")
    if cached is None:
        w, b = op.exact if op.exact is not None else (op.weight, op.bias)
        cached = (Q.of(w), Q.of(b))  # float arrays go through Q.of_floats
        object.__setattr__(op, "_affine_q", cached)
    return cached


def weights_q(op) -> tuple[Q, Q, Q]:
    """``(W+, W-, b)`` of an affine op as exact :class:`Q` arrays (cached on the op)."""
    cached = op.__dict__.get("_certify_q")
    if cached is None:
        wq, bq = affine_q(op)
        cached = (wq.pos(), wq.neg_part(), bq)
        object.__setattr__(op, "_certify_q", cached)
    return cached


def _round(lo: Q, hi: Q) -> tuple[Q, Q]:
    """Round ``lo`` down and ``hi`` up to the grid ``2^-GRID_BITS`` (exact integer arithmetic)."""
    return _to_grid(lo, up=False), _to_grid(hi, up=True)


def _to_grid(q: Q, *, up: bool) -> Q:
    if q.den == 1 << GRID_BITS:
        return q
    scaled = q.num * (1 << GRID_BITS)
    num = -((-scaled) // q.den) if up else scaled // q.den  # ceil / floor, on Python ints
    return Q(num, 1 << GRID_BITS)


def _transposed(op) -> tuple:
    """``(W+^T, W-^T)`` numerators with their limbs, for a batch of bounds (cached on the op)."""
    cached = op.__dict__.get("_iv_t")
    if cached is None:
        wp, wn, _ = weights_q(op)
        cached = tuple((w.num.T.copy(), w.den, limbs_of(w.num.T, w.shape[1])) for w in (wp, wn))
        object.__setattr__(op, "_iv_t", cached)
    return cached


def _iv_affine(op, name, args, ctx):
    lo, hi = args[0]
    wp, wn, b = weights_q(op)
    if lo.num.ndim == 1:
        return _round(wp @ lo + wn @ hi + b, wp @ hi + wn @ lo + b)
    # a batch of pieces, one per row: the same exact products, transposed
    (pt, pden, plimbs), (nt, nden, nlimbs) = _transposed(op)

    def mul(x, w, den, lim):
        return Q(int_matmul(x.num, w, b_limbs=lim), x.den * den)
    return _round(mul(lo, pt, pden, plimbs) + mul(hi, nt, nden, nlimbs) + b,
                  mul(hi, pt, pden, plimbs) + mul(lo, nt, nden, nlimbs) + b)


def _iv_relu(op, name, args, ctx):
    lo, hi = args[0]
    zero = Q.zeros(lo.shape)
    olo, ohi = lo.maximum(zero), hi.maximum(zero)
    phase = ctx["phase"]
    if any(nid in phase for nid in op.neurons):
        lonum, hinum = olo.num.copy(), ohi.num.copy()
        for i, nid in enumerate(op.neurons):
            if phase.get(nid) == "inactive":
                lonum[..., i] = hinum[..., i] = 0
        olo, ohi = Q(lonum, olo.den), Q(hinum, ohi.den)
    return olo, ohi


def _iv_add(op, name, args, ctx):
    lo, hi = args[0]
    for alo, ahi in args[1:]:
        lo, hi = lo + alo, hi + ahi
    return lo, hi


def _iv_output(op, name, args, ctx):
    return args[0]


#: op kind -> ``(op, name, [(lo, hi) of each argument], ctx) -> (lo, hi)``
INTERVAL_OPS = {"affine": _iv_affine, "relu": _iv_relu, "add": _iv_add, "output": _iv_output}


def _clip_phase(graph: Graph, name: str, lo: Q, hi: Q, phase: Mapping) -> tuple[Q, Q]:
    """Clip a pre-activation by the phases of the ReLU units it feeds."""
    users = [u for u in graph.users(name) if graph.op(u).kind == "relu"]
    if not users or not phase:
        return lo, hi
    lonum, hinum = lo.num.copy(), hi.num.copy()
    for u in users:
        for i, nid in enumerate(graph.op(u).neurons):
            p = phase.get(nid)
            # ``[..., i]``: unit i of one bound vector, or of every piece of a batch (rows)
            if p == "active":
                lonum[..., i] = np.where(lonum[..., i] < 0, 0, lonum[..., i])
            elif p == "inactive":
                hinum[..., i] = np.where(hinum[..., i] > 0, 0, hinum[..., i])
    return Q(lonum, lo.den), Q(hinum, hi.den)


def node_bounds(graph: Graph, box: tuple, *, lemmas: Mapping | None = None,
                phase: Mapping | None = None, upto: str | None = None,
                refine: Callable | None = None, start: Mapping | None = None) -> dict:
    """Exact bounds ``{node: (lo Q, hi Q)}`` of every node (in graph order, up to ``upto``).

    Parameters
    ----------
    box : ``(lo, hi)`` sequences of rationals (floats are taken exactly); or a batch of
        boxes, ``(lo, hi)`` lists of rows, one per box: every bound is then a matrix
        with one row per box (each row exactly what that box alone gives).
    lemmas : node -> (lo Q, hi Q) proven bounds, intersected in.
    phase : neuron id -> ``"active"`` | ``"inactive"``.
    upto : stop after this node.
    refine : ``(name, lo, hi, bounds so far) -> (lo, hi)``, called for every
        node after intervals, lemmas and phases (:func:`~.crown.crown_bounds`
        tightens pre-activations with it); must return valid bounds.
    start : bounds of the first nodes (a prefix in graph order) from an earlier call,
        taken as they are: layer-by-layer callers pass the nodes before the layer
        whose lemmas and phases they just added, so the depth-``d`` loop costs ``O(d)``
        node steps, not ``O(d^2)``.  Bounds computed under fewer facts stay valid.

    A bound may come out empty (``lo > hi``) under a branch's phase
    hypotheses: that branch is vacuous, which callers detect.
    """
    lemmas = lemmas or {}
    ctx = {"phase": dict(phase or {})}
    out: dict = {}
    start = start or {}
    for name in graph.nodes():
        if name in start:
            out[name] = start[name]
            if name == upto:
                break
            continue
        op = graph.op(name)
        if op.kind == "input":
            lo, hi = Q.of(list(box[0])), Q.of(list(box[1]))
        else:
            fn = INTERVAL_OPS.get(op.kind)
            if fn is None:
                raise UnsupportedOp(f"node {name!r}: op {op.kind!r} has no exact interval rule")
            lo, hi = fn(op, name, [out[a] for a in graph.args(name)], ctx)
        if name in lemmas:
            llo, lhi = lemmas[name]
            lo, hi = lo.maximum(llo), hi.minimum(lhi)
        if op.kind in ("affine", "add"):
            lo, hi = _clip_phase(graph, name, lo, hi, ctx["phase"])
        if refine is not None:
            lo, hi = refine(name, lo, hi, out)
        out[name] = (lo, hi)
        if name == upto:
            break
    return out


def fraction_lists(bounds: Mapping) -> dict:
    """``{node: (list[Fraction], list[Fraction])}`` for the LP builder."""
    return {n: (list(lo.fractions()), list(hi.fractions())) for n, (lo, hi) in bounds.items()}


def empty(bounds: Mapping) -> bool:
    """True if some node's bound is empty (``lo > hi``): the branch is vacuous."""
    for lo, hi in bounds.values():
        a, b, _ = lo._align(hi)
        if a.size and bool(np.any(a > b)):
            return True
    return False
