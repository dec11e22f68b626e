"""A certified bound on what the emitted float weights change, and their rounding.

The rewrite is exact over the rationals (``g_exact == f`` on the domain,
:mod:`.identity`).  The files hold floats: ``g_emit`` has the rounded weights.
Over the reals, with ``|a| <= A`` bounding ``g_exact``'s values on the domain
(exact intervals) and ``e`` bounding ``|a' - a|`` node by node::

    |z' - z| = |W'(a' - a) + (W' - W) a + (b' - b)| <= |W'| e + |W' - W| A + |b' - b|

ReLU is 1-Lipschitz and ``Add`` adds the bounds.  Everything is computed in
exact rationals, so ``eps = max |g_emit - g_exact|`` over the domain is a
proven bound (usually far from tight: it assumes every rounding error adds
up).  Emitted and exact networks are paired node by node in graph order; a
different structure leaves the obligation open.

:func:`check_rounding` proves each emitted weight is the nearest value of its
dtype to the exact weight (``|w' - w| <= ulp(w') / 2``): a weight changed after
the rewrite -- or by a bug -- fails it.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..errors import UnsupportedOp
from ..graph import Graph
from .exact import Q, to_float
from .intervals import affine_q, node_bounds

__all__ = ["pair_nodes", "deviation_bound", "check_rounding"]


def pair_nodes(exact: Graph, emitted: Graph) -> list[tuple[str, str]] | str:
    """Pairs (exact node, emitted node) in graph order, or a string saying why not."""
    a, b = exact.nodes(), emitted.nodes()
    if len(a) != len(b):
        return f"{len(a)} nodes in the certified network, {len(b)} in the emitted one"
    for x, y in zip(a, b):
        ox, oy = exact.op(x), emitted.op(y)
        if ox.kind != oy.kind or exact.size_of(x) != emitted.size_of(y):
            return f"node {x!r} ({ox.kind}, {exact.size_of(x)}) vs emitted {y!r} ({oy.kind}, {emitted.size_of(y)})"
        if ox.kind == "affine" and ox.weight.shape != oy.weight.shape:
            return f"node {x!r}: weight shape {ox.weight.shape} vs emitted {oy.weight.shape}"
        if [exact.nodes().index(p) for p in exact.args(x)] != [emitted.nodes().index(p) for p in emitted.args(y)]:
            return f"node {x!r}: its arguments differ from those of emitted {y!r}"
    return list(zip(a, b))


def deviation_bound(exact: Graph, emitted: Graph, box: tuple) -> tuple[Fraction | None, str]:
    """``(eps, detail)``: ``|emitted(x) - exact(x)| <= eps`` for all ``x`` in ``box`` (each output).

    ``box``: ``(lo, hi)`` lists of Fractions.

    ``eps`` is ``None`` (with the reason) when the networks cannot be paired.
    """
    pairs = pair_nodes(exact, emitted)
    if isinstance(pairs, str):
        return None, pairs
    bounds = node_bounds(exact, box)
    err: dict = {}
    for x, y in pairs:
        op, eop = exact.op(x), emitted.op(y)
        args = exact.args(x)
        if op.kind == "input":
            err[x] = Q.zeros(op.size)
        elif op.kind == "affine":
            wq, bq = affine_q(op)
            ewq, ebq = affine_q(eop)
            lo, hi = bounds[args[0]]
            amax = abs(lo).maximum(abs(hi))
            err[x] = (abs(ewq) @ err[args[0]] + abs(ewq - wq) @ amax + abs(ebq - bq)).reduce()
        elif op.kind in ("relu", "output"):
            err[x] = err[args[0]]
        elif op.kind == "add":
            acc = err[args[0]]
            for a in args[1:]:
                acc = acc + err[a]
            err[x] = acc
        else:
            raise UnsupportedOp(f"node {x!r}: op {op.kind!r} has no deviation rule")
    out = err[exact.output_name]
    eps = max(out.fractions()) if len(out) else Fraction(0)
    return eps, ""


def check_rounding(exact: Graph, emitted: Graph, *, dtype) -> tuple[bool, str]:
    """Every emitted weight/bias is a nearest ``dtype`` value of the exact one (exactly checked).

    ``|w' - w| <= ulp(w') / 2`` for all entries at once, in integers: ``w'`` and the
    half-ulps (powers of two, exact as floats) become :class:`Q` arrays.
    """
    pairs = pair_nodes(exact, emitted)
    if isinstance(pairs, str):
        return False, pairs
    for x, y in pairs:
        op, eop = exact.op(x), emitted.op(y)
        if op.kind != "affine":
            continue
        ew, eb = affine_q(op)
        for what, ex, em in (("weight", ew, eop.weight), ("bias", eb, eop.bias)):
            emf = np.asarray(em, dtype=np.float64)
            as_dtype = np.asarray(emf.astype(dtype), dtype=np.float64)
            if not np.all(as_dtype == emf):
                idx = np.argwhere(as_dtype != emf)[0]
                return False, f"node {y!r} {what}{list(idx)}: {emf[tuple(idx)]!r} is not a {np.dtype(dtype).name}"
            if not emf.size:
                continue
            ulp = Q.of_floats(np.spacing(np.abs(emf.astype(dtype))).astype(np.float64))
            half_ulp = Q(ulp.num, 2 * ulp.den)  # halved exactly (half the least subnormal is no float)
            err = abs(Q.of_floats(emf) - ex)
            a, b, _ = err._align(half_ulp)
            bad = np.argwhere(a > b)
            if bad.size:
                idx = tuple(int(i) for i in bad[0])
                return False, (f"node {y!r} {what}{list(idx)}: emitted {float(emf[idx])!r} is not the "
                               f"{np.dtype(dtype).name} rounding of the exact value {to_float(ex.fraction(idx))!r}")
    return True, ""
