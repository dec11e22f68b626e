"""Shared computations of two networks (:class:`Canon`) and the joint graph
``x -> f, x -> g, f - g`` (:func:`joint_graph`) with sound bounds.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from ...domain import Box
from ...graph import Add, Affine, Graph, Input, Output, Relu
from ..fuzz import check_sizes


# -- shared computations and the joint graph ------------------------------------------------

class Canon:
    """Neuron-level hash-consing of the values two networks compute.

    Every entry of every node gets a *canonical id*; two entries (of ``f`` or
    ``g``) with the same id compute the same function of ``x`` on the box:

    * input ``i``: ``("in", i)``;
    * an affine row: its exact bias and the exact weights per argument id, where
      arguments proven to be exactly 0 on the box (a ReLU whose sound upper bound
      is <= 0) are left out and weights on equal argument ids are summed --
      so dropping dead neurons, permuting neurons or duplicating them does not
      change the ids of the rows that read them;
    * a ReLU unit: the constant 0 if its sound pre-activation bound is ``<= 0``,
      its pre-activation's id if the bound is ``>= 0`` (identity), else
      ``("relu", pre-activation id)``;
    * an add entry: the sorted ids of its summands.

    Bounds are each network's own sound bounds (the same function may get
    different but equally sound bounds in two networks; the first is kept).
    """

    ZERO = 0

    def __init__(self, box: Box):
        self.box = box
        self.ids: dict = {}
        self.defs: list = []   # id -> (kind, payload)
        self.bounds: list = []  # id -> (lo, hi) floats, sound
        self._new(("zero",), ("zero", None), 0.0, 0.0)
        for i in range(box.size):
            self._new(("in", i), ("in", i), float(box.lower[i]), float(box.upper[i]))
        self.nets: list = []  # per added net: node -> list of ids

    def _new(self, key, d, lo, hi) -> int:
        k = self.ids.get(key)
        if k is not None:
            return k
        self.ids[key] = len(self.defs)
        self.defs.append(d)
        self.bounds.append((float(lo), float(hi)))
        return len(self.defs) - 1

    def kind(self, cid: int) -> str:
        return self.defs[cid][0]

    def add_net(self, net: Graph, bounds: dict, *, private: str | None = None) -> dict:
        """Canonical ids of every node of ``net`` (``bounds``: its sound bounds).

        ``private``: a tag put into every key, so nothing of ``net`` is shared
        with another network (used to measure what sharing buys).
        """
        ids: dict = {}
        tag = () if private is None else (private,)
        for name in net.nodes():
            op = net.op(name)
            args = net.args(name)
            if op.kind == "input":
                ids[name] = list(range(1, 1 + op.size))
            elif op.kind == "output":
                ids[name] = ids[args[0]]
            elif op.kind == "affine":
                w, b = op.rational()
                a_ids = ids[args[0]]
                lo, hi = bounds[name]
                out = []
                for r in range(op.size):
                    terms: dict = {}
                    for j, c in enumerate(w[r]):
                        if c != 0 and a_ids[j] != self.ZERO:
                            terms[a_ids[j]] = terms.get(a_ids[j], Fraction(0)) + c
                    key = (Fraction(b[r]), tuple(sorted((a, c) for a, c in terms.items() if c != 0)))
                    out.append(self._new(("aff",) + key + tag, ("aff", key), lo[r], hi[r]))
                ids[name] = out
            elif op.kind == "relu":
                lo, hi = bounds[args[0]]
                out = []
                for r, p in enumerate(ids[args[0]]):
                    if hi[r] <= 0 or p == self.ZERO:
                        out.append(self.ZERO)
                    elif lo[r] >= 0:
                        out.append(p)
                    else:
                        out.append(self._new(("relu", p) + tag, ("relu", p), 0.0, max(hi[r], 0.0)))
                ids[name] = out
            elif op.kind == "add":
                lo, hi = bounds[name]
                cols = list(zip(*(ids[a] for a in args)))
                out = []
                for r, col in enumerate(cols):
                    key = tuple(sorted(c for c in col if c != self.ZERO))
                    out.append(self._new(("add", key) + tag, ("add", key), lo[r], hi[r]))
                ids[name] = out
            else:
                from ...errors import UnsupportedOp
                raise UnsupportedOp(f"node {name!r}: op {op.kind!r} is not supported here")
        self.nets.append(ids)
        return ids


class _JointBuilder:
    """Builds the joint graph, creating each canonical value once."""

    def __init__(self, canon: Canon, n: int):
        self.canon = canon
        self.j = Graph(name="joint")
        self.j.add("x", Input(n))
        self.where = {1 + i: ("x", i) for i in range(n)}  # canonical id -> (node, index)
        self._gathers: dict = {}

    def gather(self, ids: list) -> str:
        """A node whose value is the entries ``ids`` (created if needed)."""
        key = tuple(ids)
        if key in self._gathers:
            return self._gathers[key]
        srcs = [self.where[i] if i != Canon.ZERO else None for i in ids]
        first = srcs[0][0] if srcs and srcs[0] is not None else None
        if first is not None and all(s is not None and s[0] == first for s in srcs) \
                and [s[1] for s in srcs] == list(range(len(ids))) \
                and self.j.size_of(first) == len(ids):
            self._gathers[key] = first
            return first
        by_node: dict = {}
        for k, s in enumerate(srcs):
            if s is not None:
                by_node.setdefault(s[0], []).append((k, s[1]))
        if not by_node:
            by_node = {"x": []}  # all zero: a zero map of the input
        parts = []
        for node, items in sorted(by_node.items()):
            p = np.zeros((len(ids), self.j.size_of(node)))
            for k, pos in items:
                p[k, pos] = 1.0
            parts.append(self.j.add(self.j.fresh_name(f"sel/{node}"),
                                    Affine(p, np.zeros(len(ids))), [node]))
        out = parts[0] if len(parts) == 1 else \
            self.j.add(self.j.fresh_name("gather"), Add(len(ids), arity=len(parts)), parts)
        self._gathers[key] = out
        return out

    def add_net(self, tag: str, net: Graph, ids: dict) -> str:
        """Add what is new in ``net``; returns the node of its output value."""
        real: dict = {net.input_name: "x"}
        for name in net.nodes():
            op = net.op(name)
            args = net.args(name)
            if op.kind == "input":
                continue
            if op.kind == "output":
                return real[args[0]]
            mine = ids[name]
            if op.kind in ("affine", "add"):
                new = [r for r, c in enumerate(mine) if c not in self.where and c != Canon.ZERO]
                if new:
                    node = self.j.add(self.j.fresh_name(f"{tag}/{name}"), op,
                                      [real[a] for a in args])
                    for r in new:
                        self.where.setdefault(mine[r], (node, r))
            elif op.kind == "relu":
                pre = ids[args[0]]
                rows = [r for r, c in enumerate(mine)
                        if c != Canon.ZERO and c not in self.where and self.canon.kind(c) == "relu"]
                seen: set = set()
                rows = [r for r in rows if not (mine[r] in seen or seen.add(mine[r]))]
                if rows:
                    p = self.gather([pre[r] for r in rows])
                    node = self.j.add(self.j.fresh_name(f"{tag}/{name}"),
                                      Relu([f"{tag}:{op.neurons[r]}" for r in rows]), [p])
                    for k, r in enumerate(rows):
                        self.where[mine[r]] = (node, k)
            real[name] = self.gather(mine)
        raise ValueError(f"network {net.name!r} has no output node")  # lint forbids this


def _round_up(v: np.ndarray) -> np.ndarray:
    return np.nextafter(v * (1 + 2.0 ** -50), np.inf)


def widen_for_exact_weights(net: Graph, bounds: dict) -> dict:
    """Bounds valid for the *exact* network when some affine ops carry exact weights.

    :func:`leo_verify.analysis.bounds.compute_bounds` bounds the network of the
    stored float weights.  Where an op's exact rationals differ from its floats,
    each node's bounds are widened by a rigorous bound ``e`` on ``|exact value -
    float-weight value|``: for ``y = W x + b``,
    ``|W_q x_q - W_f x_f| <= |W_q| e_x + |W_q - W_f| |x_f|`` (``|x_f|`` from the
    float network's sound bounds), ReLU is 1-Lipschitz and sums add errors.  Every
    float step is rounded up.  Networks without exact weights are returned as is.
    """
    if not any(op.kind == "affine" and op.exact is not None for _, op in net.items()):
        return bounds
    err: dict = {}
    out = dict(bounds)
    to_float = np.frompyfunc(lambda q: float(abs(q)), 1, 1)
    for name in net.nodes():
        op = net.op(name)
        args = net.args(name)
        if op.kind == "input":
            e = np.zeros(op.size)
        elif op.kind == "affine":
            ein = err[args[0]]
            lo, hi = bounds[args[0]]
            amax = np.maximum(np.abs(lo), np.abs(hi))
            w = np.abs(op.weight)
            e = w @ ein if np.any(ein) else np.zeros(op.size)
            if op.exact is not None:
                wq, bq = op.exact
                fw = np.frompyfunc(lambda v: Fraction(float(v)), 1, 1)
                dw = _round_up(to_float(wq - fw(op.weight)).astype(np.float64))
                db = _round_up(to_float(bq - fw(op.bias)).astype(np.float64))
                w = w + dw
                e = (w @ ein if np.any(ein) else 0.0) + dw @ amax + db
            k = op.in_size + 2
            e = _round_up(np.asarray(e, dtype=np.float64) * (1 + 4 * k * 2.0 ** -53)) + k * 2.0 ** -1070
        elif op.kind == "add":
            e = _round_up(np.sum([err[a] for a in args], axis=0) * (1 + 4 * len(args) * 2.0 ** -53))
        else:  # relu (1-Lipschitz), output
            e = err[args[0]]
        err[name] = e
        if np.any(e) and name in out:
            lo, hi = out[name]
            lo, hi = np.nextafter(lo - e, -np.inf), np.nextafter(hi + e, np.inf)
            if op.kind == "relu":
                lo = np.maximum(lo, 0.0)
            out[name] = (lo, hi)
    return out


def _sound_bounds(net: Graph, box: Box) -> dict:
    """Sound bounds of the real-valued network (exact weights where given)."""
    from ...analysis.bounds import compute_bounds
    return widen_for_exact_weights(net, compute_bounds(net, box, method="symbolic"))


def joint_graph(f: Graph, g: Graph, box: Box, *, canon: Canon | None = None) -> tuple[Graph, str, str]:
    """One graph computing ``f(x) - g(x)`` from a shared input ``x``.

    Values ``f`` and ``g`` share (same canonical id, see :class:`Canon`) are
    computed once, so the MILP of the joint graph has one binary per distinct
    unstable ReLU.  ``g``'s nodes gather shared entries through exact 0/1
    selection maps.  The graph ends with ``neg_g = -I g``, ``diff = f + neg_g``
    and the output ``diff``.  Returns ``(graph, node of f's output value, node
    of g's output value)`` (the same node when the outputs are shared).
    """
    check_sizes(f, g)
    box.check_size(f.input_size)
    if canon is None:
        canon = Canon(box)
        canon.add_net(f, _sound_bounds(f, box))
        canon.add_net(g, _sound_bounds(g, box))
    fids, gids = canon.nets[0], canon.nets[1]
    jb = _JointBuilder(canon, f.input_size)
    fo = jb.add_net("f", f, fids)
    go = jb.add_net("g", g, gids)
    m = f.output_size
    j = jb.j
    j.add("neg_g", Affine(-np.eye(m), np.zeros(m)), [go])
    j.add("diff", Add(m), [fo, "neg_g"])
    j.add("y", Output(m), ["diff"])
    out = "y"
    live = set(nx_ancestors(j, out)) | {out}
    for name in list(j.nodes()):
        if name not in live:
            j.remove(name)
    j.name = f"{f.name} - {g.name}"
    return j.lint(where="joint_graph"), fo, go


def nx_ancestors(graph: Graph, node: str) -> set:
    import networkx as nx
    return nx.ancestors(graph.nx, node)
