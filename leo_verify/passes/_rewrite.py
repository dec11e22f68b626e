"""Graph surgery shared by the passes.

Every helper works on a graph the pass owns (a copy of its input).  Weights
are read with :func:`weights` and written with :func:`build`: in exact mode
they are object arrays of :class:`Fraction` taken from
:meth:`Affine.rational` and stored with :meth:`Affine.from_rational`, so a
rewrite is an identity over the reals; in float mode they are float64.
Pure row/column deletion (:func:`select`) is exact in both modes.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Mapping

import networkx as nx
import numpy as np

from ..errors import DataError
from ..graph import Affine, Graph
from ._linalg import eye, zeros

__all__ = ["weights", "build", "select", "restrict_feeder", "substitute", "is_constant",
           "make_constant", "replace_by_constant", "check_stable", "identity_affine",
           "remove_dead"]

STATES = ("active", "inactive")


def check_stable(stable: Mapping[str, str]) -> None:
    bad = {n: s for n, s in stable.items() if s not in STATES}
    if bad:
        nid, s = next(iter(bad.items()))
        raise DataError(f"stability of neuron {nid!r} is {s!r}; expected 'active' or 'inactive'")


def weights(op: Affine, *, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` of ``op``: Fractions in exact mode, float64 otherwise."""
    return op.rational() if exact else (op.weight, op.bias)


def build(w, b, *, exact: bool) -> Affine:
    """An :class:`Affine` from weights computed by :func:`weights` arithmetic."""
    if exact:
        return Affine.from_rational(w, b)
    return Affine(np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64))


def select(op: Affine, *, rows=None, cols=None) -> Affine:
    """The sub-matrix of ``op``; exact weights, if any, are carried along."""
    r = slice(None) if rows is None else np.asarray(rows, dtype=np.intp)
    c = slice(None) if cols is None else np.asarray(cols, dtype=np.intp)
    w = op.weight[r][:, c]
    exact = None
    if op.exact is not None:
        exact = (op.exact[0][r][:, c], op.exact[1][r])
    layout = None
    if op.layout is not None:  # a sub-matrix of a convolution is that convolution, restricted
        layout = op.layout.restrict(rows=rows, cols=cols)
    return Affine(w, op.bias[r], exact=exact, layout=layout)


def identity_affine(n: int) -> Affine:
    return Affine.from_rational(eye(n, exact=True), zeros(n, exact=True))


def restrict_feeder(g: Graph, relu: str, rows) -> str:
    """Make the argument of ``relu`` compute only coordinates ``rows``.

    A private affine feeder loses the other rows; a shared one gets a private
    copy of the kept rows; any other feeder (e.g. a residual add) gets an
    exact 0/1 selection affine.  Returns how it was done (for the log).
    """
    rows = list(rows)
    arg = g.args(relu)[0]
    op = g.op(arg)
    if op.kind == "affine" and g.users(arg) == [relu]:
        g.replace(arg, select(op, rows=rows))
        return "rows removed"
    if op.kind == "affine":
        new = g.add(g.fresh_name(f"{arg}_{relu}"), select(op, rows=rows), g.args(arg))
        how = "private copy of shared affine"
    else:
        sel = zeros((len(rows), op.size), exact=True)
        for i, j in enumerate(rows):
            sel[i, j] = Fraction(1)
        new = g.add(g.fresh_name(f"{relu}_select"),
                    Affine.from_rational(sel, zeros(len(rows), exact=True)), [arg])
        how = f"selection affine after {op.kind}"
    g.rewire(relu, [new])
    return how


def substitute(g: Graph, old: str, new: str) -> bool:
    """Point every user of ``old`` at ``new``.

    Returns False, leaving the graph unchanged, if a user already takes
    ``new`` (the IR has no repeated arguments).
    """
    users = g.users(old)
    if any(new in g.args(u) for u in users):
        return False
    for u in users:
        g.rewire(u, [new if a == old else a for a in g.args(u)])
    return True


def is_constant(g: Graph, name: str) -> bool:
    """True for an affine node on the graph input whose weight is exactly zero."""
    op = g.op(name)
    if op.kind != "affine" or g.args(name) != [g.input_name]:
        return False
    if np.any(op.weight != 0):
        return False
    # a tiny exact weight may round to 0.0: the exact weights decide
    return op.exact is None or all(w == 0 for w in op.exact[0].flat)


def make_constant(g: Graph, value, *, exact: bool) -> Affine:
    """An affine op with zero weight (size x n_in) and bias ``value``."""
    value = np.asarray(value, dtype=object if exact else np.float64)
    return build(zeros((value.shape[0], g.input_size), exact=exact), value, exact=exact)


def replace_by_constant(g: Graph, name: str, value, *, exact: bool) -> str:
    """Replace node ``name`` by the constant ``value``; returns the constant node.

    An affine node keeps its name (reports keep speaking of the user's
    layer); other nodes give way to a fresh ``<name>_const`` node.
    """
    const = make_constant(g, value, exact=exact)
    if g.op(name).kind == "affine":
        g.replace(name, const)
        g.rewire(name, [g.input_name])
        return name
    new = g.add(g.fresh_name(f"{name}_const"), const, [g.input_name])
    substitute(g, name, new)  # cannot fail: `new` has no users yet
    g.remove(name)
    return new


def remove_dead(g: Graph) -> list[str]:
    """Remove nodes that no longer reach the output (the input always stays)."""
    out = g.output_name
    live = nx.ancestors(g.nx, out) | {out, g.input_name}
    dead = [n for n in g.nodes() if n not in live]
    for n in dead:
        g.remove(n)
    return dead
