"""z3 encoding of a ReLU network prefix in exact rationals, and SMT-LIB output.

One table ``op kind -> encoder`` (:data:`Z3_ENCODERS`).  Weights enter as the
exact rationals of the network (``Affine.rational()``: the stored floats, or
a rewrite's exact rationals) through numerator/denominator -- never through
``z3.RealVal(float)``, which would read a float as its shortest decimal.

What makes z3 scale here (measured, see ``shared/notes/solvers.md``):

* every pre-activation and post-activation is a *named* variable with its
  proven bounds asserted (z3's bound propagation then closes most queries);
* units already proven stable are substituted (identity or 0), no case split;
* each remaining unit gets its triangle ``y >= 0, y >= z,
  (u - l) y <= u (z - l)`` as redundant valid constraints, and -- unless
  ``relax`` -- the exact ``y == If(z > 0, z, 0)``.  With ``relax`` the query
  is a pure LP: if *it* is unsat, the claim is proven without any case split.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Mapping

import networkx as nx

from ..errors import UnsupportedOp
from ..graph import Graph

__all__ = ["Z3_ENCODERS", "encode_prefix", "claim_query", "to_smt2"]


def _q(z3, v) -> object:
    # RealVal of the text "p/q" is exact and ~10x faster than z3.Q (which simplifies)
    v = Fraction(v)
    return z3.RealVal(f"{v.numerator}/{v.denominator}" if v.denominator != 1 else str(v.numerator))


class _Ctx:
    def __init__(self, z3, solver, box, bounds, phase, relax, tag):
        self.z3, self.s, self.box, self.bounds = z3, solver, box, bounds
        self.phase, self.relax, self.tag = phase, relax, tag
        self.vals: dict = {}

    def var(self, name: str, lo=None, hi=None):
        v = self.z3.Real(f"{self.tag}{name}")
        if lo is not None:
            self.s.add(v >= _q(self.z3, lo))
        if hi is not None:
            self.s.add(v <= _q(self.z3, hi))
        return v


def _z_input(ctx, name, op, graph):
    lo, hi = ctx.box
    return [ctx.var(f"{name}[{i}]", lo[i], hi[i]) for i in range(op.size)]


def _z_affine(ctx, name, op, graph):
    z3 = ctx.z3
    src = ctx.vals[graph.args(name)[0]]
    w, b = op.rational()
    lo, hi = ctx.bounds.get(name, (None, None))
    out = []
    for i in range(op.size):
        terms = [_q(z3, w[i, j]) * v for j, v in enumerate(src) if v is not None and w[i, j] != 0]
        expr = z3.Sum(terms) + _q(z3, b[i]) if terms else _q(z3, b[i])
        z = ctx.var(f"{name}[{i}]", None if lo is None else lo[i], None if hi is None else hi[i])
        ctx.s.add(z == expr)
        out.append(z)
    return out


def _z_relu(ctx, name, op, graph):
    z3 = ctx.z3
    pre = graph.args(name)[0]
    src = ctx.vals[pre]
    lo, hi = ctx.bounds.get(pre, (None, None))
    out = []
    for i, nid in enumerate(op.neurons):
        z = src[i]
        l = None if lo is None else Fraction(lo[i])
        u = None if hi is None else Fraction(hi[i])
        p = ctx.phase.get(nid)
        if z is None:
            out.append(None)
        elif p == "active" or (p is None and l is not None and l >= 0):
            ctx.s.add(z >= 0)
            out.append(z)
        elif p == "inactive" or (p is None and u is not None and u <= 0):
            ctx.s.add(z <= 0)
            out.append(None)
        else:
            y = ctx.var(f"{name}[{i}]", Fraction(0), None if u is None else max(u, Fraction(0)))
            ctx.s.add(y >= z)
            if l is not None and u is not None and l < 0 < u:
                ctx.s.add((_q(z3, u - l)) * y <= _q(z3, u) * (z - _q(z3, l)))
            if not ctx.relax:
                ctx.s.add(y == z3.If(z > 0, z, z3.RealVal(0)))
            out.append(y)
    return out


def _z_add(ctx, name, op, graph):
    z3 = ctx.z3
    srcs = [ctx.vals[a] for a in graph.args(name)]
    out = []
    for i in range(op.size):
        terms = [s[i] for s in srcs if s[i] is not None]
        s = ctx.var(f"{name}[{i}]")
        ctx.s.add(s == (z3.Sum(terms) if terms else z3.RealVal(0)))
        out.append(s)
    return out


def _z_output(ctx, name, op, graph):
    return list(ctx.vals[graph.args(name)[0]])


#: op kind -> z3 encoder ``(ctx, node name, op, graph) -> list of z3 terms | None (constant 0)``
Z3_ENCODERS = {"input": _z_input, "affine": _z_affine, "relu": _z_relu, "add": _z_add,
               "output": _z_output}


def encode_prefix(graph: Graph, box: tuple, solver, *, bounds: Mapping | None = None,
                  phase: Mapping | None = None, upto: str | None = None, relax: bool = False,
                  tag: str = "") -> dict:
    """Add the constraints of ``graph`` (up to node ``upto``) to ``solver``.

    ``box``: (lo, hi) lists of rationals; ``bounds``: node -> (lo, hi) lists of
    *proven* rationals (asserted as facts); ``phase``: proven phases.
    Returns node -> list of z3 terms (None for a constant 0).
    """
    import z3
    keep = nx.ancestors(graph.nx, upto) | {upto} if upto is not None else None
    ctx = _Ctx(z3, solver, box, dict(bounds or {}), dict(phase or {}), relax, tag)
    for name in graph.nodes():
        if keep is not None and name not in keep:
            continue
        op = graph.op(name)
        fn = Z3_ENCODERS.get(op.kind)
        if fn is None:
            raise UnsupportedOp(f"node {name!r}: op {op.kind!r} has no z3 encoding")
        ctx.vals[name] = fn(ctx, name, op, graph)
    return ctx.vals


def claim_query(graph: Graph, box: tuple, *, bounds: Mapping, phase: Mapping, pre: str, row: int,
                claim: str, relax: bool = False):
    """A z3 solver whose ``unsat`` proves the claim on unit ``row`` of node ``pre``.

    The negated claim is asserted: ``z > 0`` for ``"inactive"``, ``z < 0`` for ``"active"``.
    """
    import z3
    s = z3.Solver()
    vals = encode_prefix(graph, box, s, bounds=bounds, phase=phase, upto=pre, relax=relax)
    z = vals[pre][row]
    s.add(z > 0 if claim == "inactive" else z < 0)
    return s


def to_smt2(solver, *, comment: str = "", expect: str = "unsat") -> str:
    """SMT-LIB 2 text of a solver's assertions, with ``(check-sat)`` and the expected answer."""
    head = "".join(f"; {line}\n" for line in comment.splitlines())
    body = solver.to_smt2()
    if "(check-sat)" not in body:
        body += "(check-sat)\n"
    return f"{head}; expected: {expect}\n(set-logic {'QF_LRA'})\n" + body.replace("(set-logic ALL)\n", "")
