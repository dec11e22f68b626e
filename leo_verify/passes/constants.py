"""Constant propagation (used by :mod:`.collapse` and :mod:`.cleanup`).

A *constant* is an affine node on the graph input with an exactly zero
weight (:func:`is_constant`); its bias is its value.  Propagation, in
topological order, rewrites

* an affine of a constant ``c`` into the constant ``W c + b``;
* a ReLU of a constant into the constant ``max(c, 0)`` (its units disappear:
  they are constant everywhere, not only on the domain);
* an add: constant arguments are summed; all-constant adds become constants;
  a nonzero sum moves into the bias of an affine argument private to the add;
  zero contributions are dropped, and a single remaining argument replaces
  the add (or an exact identity affine, if a user already reads it).

Values are exact Fractions in exact mode, float64 in float mode.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..graph import Add, Graph
from ._linalg import as_matrix, mv
from ._rewrite import (build, identity_affine, is_constant, make_constant,
                       replace_by_constant, substitute, weights)

__all__ = ["propagate_constants"]


def _value(g: Graph, name: str, *, exact: bool) -> np.ndarray:
    return as_matrix(weights(g.op(name), exact=exact)[1], exact=exact)


def _fold_add(g: Graph, name: str, consts: list[str], *, exact: bool) -> str | None:
    args = g.args(name)
    others = [a for a in args if a not in consts]
    total = sum((_value(g, c, exact=exact) for c in consts[1:]), _value(g, consts[0], exact=exact))
    if not others:
        replace_by_constant(g, name, total, exact=exact)
        return "add of constants became constant"
    how = "zero arguments dropped"
    if any(v != 0 for v in total):
        host = next((a for a in others if g.op(a).kind == "affine" and g.users(a) == [name]), None)
        if host is not None:
            w, b = weights(g.op(host), exact=exact)
            g.replace(host, build(w, as_matrix(b, exact=exact) + total, exact=exact))
            how = f"constant moved into the bias of {host!r}"
        elif len(consts) == 1:
            return None
        else:
            const = g.add(g.fresh_name(f"{name}_const"), make_constant(g, total, exact=exact),
                          [g.input_name])
            others.append(const)
            how = "constant arguments summed"
    if len(others) == 1:
        if substitute(g, name, others[0]):
            g.remove(name)
        else:
            g.replace(name, identity_affine(g.size_of(name)))
            g.rewire(name, others)
    else:
        g.replace(name, Add(g.size_of(name), arity=len(others)))
        g.rewire(name, others)
    return how


def propagate_constants(g: Graph, *, exact: bool, pass_name: str) -> list[dict]:
    """Propagate constants through ``g`` in place (a graph the caller owns)."""
    log: list[dict] = []
    for name in g.nodes():
        if name not in g:
            continue
        op = g.op(name)
        if op.kind in ("input", "output") or is_constant(g, name):
            continue
        consts = [a for a in g.args(name) if is_constant(g, a)]
        if not consts:
            continue
        entry = {"pass": pass_name, "layer": name}
        if op.kind == "affine":
            w, b = weights(op, exact=exact)
            replace_by_constant(g, name, mv(w, _value(g, consts[0], exact=exact), exact=exact) + b,
                                exact=exact)
            entry["action"] = "affine became constant"
        elif op.kind == "relu":
            zero = Fraction(0) if exact else 0.0
            value = [v if v > 0 else zero for v in _value(g, consts[0], exact=exact)]
            replace_by_constant(g, name, value, exact=exact)
            entry.update(action="relu of a constant became constant", neurons=list(op.neurons),
                         count=op.size)
        elif op.kind == "add":
            how = _fold_add(g, name, consts, exact=exact)
            if how is None:
                continue
            entry["action"] = how
        else:  # pragma: no cover - every op kind is listed above
            continue
        log.append(entry)
    return log
