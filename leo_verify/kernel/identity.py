"""The rewrite identity: the compressed network equals the original on the domain.

Both networks are run *symbolically* over exact affine forms in the inputs
``x`` and one variable ``Y_u`` per ReLU unit ``u`` of the original that is not
proven stable.  One table ``op kind -> symbolic rule`` (:data:`FORM_OPS`).

Original ``f``: a proven-active unit passes its pre-activation form, a
proven-inactive one gives 0, any other unit gives its own variable ``Y_u``.

Compressed ``g``: each ReLU unit's pre-activation form ``E`` must be *exactly*
the pre-activation form of some unit ``u`` of ``f`` (looked up by value, so
the check does not depend on names or on how the rewrite went); the unit then
outputs what ``u`` outputs in ``f`` (``E``, 0 or ``Y_u``).  Finally the output
forms must be equal.

Why this proves ``g(x) = f(x)`` for every ``x`` in the domain: by induction
over ``g``'s units, each pre-activation of ``g`` equals, at every such ``x``,
the pre-activation of its matched ``u`` in ``f`` (same form, same values of
``x`` and of the ``Y`` -- which are ``f``'s own post-activations).  So the
ReLU gives the same value, and where ``u`` is proven active/inactive on the
domain that value is ``E`` or 0.  Equal output forms then give equal outputs.
A unit of ``g`` with no matching form, or unequal outputs, leaves the
obligation open (with the first differing coefficient).

Output heads (:mod:`leo_verify.heads`): the forms are those of the logits.
Both networks must end with the same head (the same function of the logits:
:meth:`~leo_verify.graph.Output.head_key`), else the output obligation is
open ("heads differ: ..."); equal logits then give equal head outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Mapping

import numpy as np

from ..errors import UnsupportedOp
from ..graph import Graph
from .exact import Q
from .intervals import affine_q

__all__ = ["FORM_OPS", "forms", "check_identity", "IdentityResult", "key_row"]


def _row_key(m: Q, i: int) -> tuple:
    """A hashable exact key of row ``i``: ``(D, n_1, ..., n_k)`` with ``D`` the row's least
    common denominator, so equal rational rows give equal keys.  Dividing by
    ``g = gcd(den, n_1, ..., n_k)`` gives it: a prime dividing the reduced ``D`` and every
    ``n_j`` would make ``D / p`` a common denominator."""
    nums = [int(n) for n in m.num[i]]
    g = math.gcd(m.den, *nums)
    return (m.den // g, *(n // g for n in nums))


def key_row(key: tuple) -> Q:
    """The row (a 1-D :class:`Q`) a :func:`_row_key` key stands for."""
    return Q(np.array(key[1:], dtype=object), key[0])


class _Forms:
    """Symbolic evaluation state: columns ``[x..., Y..., 1]``."""

    def __init__(self, n_in: int, relaxed: list):
        self.n_in = n_in
        self.col = {nid: n_in + k for k, nid in enumerate(relaxed)}
        self.width = n_in + len(relaxed) + 1

    def unit(self, c: int) -> np.ndarray:
        row = np.zeros(self.width, dtype=object)
        row[c] = 1
        return row


def _f_input(st, op, name, args, ctx):
    num = np.zeros((op.size, st.width), dtype=object)
    for i in range(op.size):
        num[i, i] = 1
    return Q(num, 1)


def _f_affine(st, op, name, args, ctx):
    wq, bq = affine_q(op)
    src = args[0]
    if ctx.get("identity_input") is src:  # layer 1: W [I | 0 | 0] needs no product
        num = np.zeros((op.size, st.width), dtype=object)
        num[:, :st.n_in] = wq.num
        out = Q(num, wq.den)
    else:
        out = wq @ src
    const = np.zeros((op.size, st.width), dtype=object)
    const[:, -1] = bq.num
    return (out + Q(const, bq.den)).reduce()


def _f_add(st, op, name, args, ctx):
    out = args[0]
    for a in args[1:]:
        out = out + a
    return out.reduce()


def _f_output(st, op, name, args, ctx):
    return args[0]


def _f_relu(st, op, name, args, ctx):
    return ctx["relu"](st, op, name, args[0])


#: op kind -> symbolic rule ``(state, op, name, [forms of args], ctx) -> Q (size x width)``
FORM_OPS = {"input": _f_input, "affine": _f_affine, "add": _f_add, "output": _f_output,
            "relu": _f_relu}


def _run(graph: Graph, st: _Forms, relu_rule) -> dict:
    ctx = {"relu": relu_rule}
    vals: dict = {}
    for name in graph.nodes():
        op = graph.op(name)
        fn = FORM_OPS.get(op.kind)
        if fn is None:
            raise UnsupportedOp(f"node {name!r}: op {op.kind!r} has no symbolic (affine form) rule")
        vals[name] = fn(st, op, name, [vals[a] for a in graph.args(name)], ctx)
        if op.kind == "input":
            ctx["identity_input"] = vals[name]
    return vals


def _ray(m: Q, i: int) -> tuple | None:
    """Row ``i`` scaled by a positive factor to a canonical representative (first non-zero
    entry +-1) and that factor: rows that are positive multiples of each other share the
    key.  ``None`` for a zero row."""
    nums = [int(n) for n in m.num[i]]
    lead = next((v for v in nums if v != 0), None)
    if lead is None:
        return None
    # row / |lead| has the numerators n_j over the common denominator |lead|: reduce as in _row_key
    g = math.gcd(abs(lead), *nums)
    return (abs(lead) // g, *(n // g for n in nums)), Fraction(abs(lead), m.den)


def forms(graph: Graph, phase: Mapping[str, str]) -> tuple[_Forms, dict, dict]:
    """Affine forms of ``graph`` (the original) given proven phases.

    Returns ``(state, node -> form, unit key -> (neuron id, post-activation row))``.

    A unit whose pre-activation form is a *positive* multiple ``c z`` of an
    earlier unstable unit's form ``z`` shares that unit's variable:
    ``relu(c z) = c relu(z)`` for every ``c > 0`` (exact; ``proofs/merge_proportional.py``),
    so its output is ``c Y``.  A negative multiple is a different function and
    gets its own variable.
    """
    relaxed = [n for n in graph.neurons() if phase.get(n) not in ("active", "inactive")]
    st = _Forms(graph.input_size, relaxed)
    table: dict = {}
    rays: dict = {}  # canonical direction -> (column of the first unit, its scale)

    def relu(st, op, name, pre: Q) -> Q:
        rows = []
        for i, nid in enumerate(op.neurons):
            p = phase.get(nid)
            if p == "active":
                post = (pre.num[i], pre.den)
            elif p == "inactive":
                post = (np.zeros(st.width, dtype=object), 1)
            else:
                ray = _ray(pre, i)
                hit = rays.get(ray[0]) if ray is not None else None
                if hit is None:
                    if ray is not None:
                        rays[ray[0]] = (st.col[nid], ray[1])
                    post = (st.unit(st.col[nid]), 1)
                else:  # Y_nid = (s / s0) Y_first
                    c = ray[1] / hit[1]
                    post = (st.unit(hit[0]) * c.numerator, c.denominator)
            rows.append(post)
            table.setdefault(_row_key(pre, i), (nid, post))
        return _stack(rows, st.width)

    return st, _run(graph, st, relu), table


def _stack(rows: list, width: int) -> Q:
    """One :class:`Q` from rows given as (integer numerators, denominator)."""
    den = 1
    for _, d in rows:
        den = den * d // math.gcd(den, d)
    out = np.zeros((len(rows), width), dtype=object)
    for i, (num, d) in enumerate(rows):
        out[i] = num * (den // d)
    return Q(out, den)


@dataclass
class IdentityResult:
    """Per ReLU layer of the compressed network and for the output: proven or not."""

    layers: dict = field(default_factory=dict)  # layer -> {"status", "units", "matched", "detail"}
    output: dict = field(default_factory=dict)
    proven: bool = False

    def to_json(self) -> dict:
        return {"layers": self.layers, "output": self.output, "proven": self.proven}


def check_identity(original: Graph, compressed: Graph, phase: Mapping[str, str]) -> IdentityResult:
    """Check ``compressed == original`` on the domain where ``phase`` was proven.

    ``phase``: neuron id of ``original`` -> ``"active"``/``"inactive"`` --
    only *proven* facts may be passed.  Input and output sizes must agree.
    """
    res = IdentityResult()
    fh, gh = original.op(original.output_name), compressed.op(compressed.output_name)
    if fh.head_key() != gh.head_key():
        res.output = {"status": "open", "detail": f"heads differ: the original ends with "
                      f"{fh.head_text()}, the compressed network with {gh.head_text()}"}
        return res
    if original.input_size != compressed.input_size or original.output_size != compressed.output_size:
        res.output = {"status": "open", "detail": f"sizes differ: {original.input_size}->"
                      f"{original.output_size} vs {compressed.input_size}->{compressed.output_size}"}
        return res
    st, fvals, table = forms(original, phase)
    all_ok = True

    def relu(st_, op, name, pre: Q) -> Q:
        nonlocal all_ok
        rows = []
        matched, missing = 0, []
        for i, nid in enumerate(op.neurons):
            hit = table.get(_row_key(pre, i))
            if hit is None:
                missing.append(nid)
                rows.append((np.zeros(st_.width, dtype=object), 1))
                continue
            matched += 1
            rows.append(hit[1])
        ok = not missing
        all_ok = all_ok and ok
        res.layers[name] = {"status": "proven" if ok else "open", "units": op.size, "matched": matched,
                            "detail": "" if ok else f"no unit of the original has the pre-activation "
                                                    f"of {missing[0]!r} ({len(missing)} such units)"}
        return _stack(rows, st_.width)

    gvals = _run(compressed, st, relu)
    fo, go = fvals[original.output_name], gvals[compressed.output_name]
    if fo == go:
        res.output = {"status": "proven", "detail": ""}
    else:
        a, b, den = fo._align(go)
        i, j = map(int, np.argwhere(a != b)[0])
        what = f"x[{j}]" if j < st.n_in else ("constant" if j == st.width - 1 else
                                               f"Y[{[k for k, c in st.col.items() if c == j][0]}]")
        res.output = {"status": "open",
                      "detail": f"output {i}: coefficient of {what} is {Fraction(int(a[i, j]), den)} in the "
                                f"original, {Fraction(int(b[i, j]), den)} in the compressed network"}
    res.proven = all_ok and res.output["status"] == "proven"
    return res
