"""Equivalence of any two networks over a box: ``check_equivalence(f, g, box, ...)``.

Three questions (``mode``):

``"epsilon"``  is ``|f_i(x) - g_i(x)| <= epsilon`` for every output ``i`` and every ``x``
               in the box?
``"exact"``    is ``f(x) == g(x)`` exactly, over the reals (the networks' weights are the
               exact rationals of their stored floats, or their ``Affine.exact`` rationals)?
``"top1"``     is ``argmax f(x) == argmax g(x)`` for every ``x``?  Tie convention: the
               argmax is the *first* index attaining the maximum (``numpy.argmax``), in
               exact arithmetic.

Output heads: the provers below work on the logits (the outputs before any
head); :func:`check_equivalence` turns the question about the head outputs into
checks of the logits (``top1`` sees through order-preserving heads, ``epsilon``
divides by the head's Lipschitz constant, see :func:`_check_with_heads`).

The check is a sequence of provers tried in order; each answers
``"equivalent"``, ``"counterexample"`` or nothing (unknown):

1. ``fuzz``: the falsification campaign of :mod:`.fuzz` (finds counterexamples only);
2. the hook list ``provers`` (default :data:`STRUCTURAL_PROVERS`);
3. ``bounds``: rigorous float bounds (interval + CROWN with outward rounding) of
   ``f - g`` on a joint graph (mode ``"epsilon"`` only);
4. ``milp`` and ``z3`` in a mode-dependent order:

   * ``"epsilon"``: MILP first (a floating-point proof: every dual bound of
     ``max/min (f_i - g_i)`` within ``epsilon`` minus a safety margin), then z3 on small
     networks;
   * ``"exact"`` / ``"top1"``: z3 first (an exact proof), then the MILP, which in
     ``"exact"`` mode can only find counterexamples, and in ``"top1"`` proves only when
     every pairwise margin is clear of 0 (rare: net-vs-itself comparisons touch ties).

   The MILP is ONE program with a shared input for both nets: a joint graph
   ``x -> f, x -> g, f - g`` (:func:`joint_graph`) encoded by
   :func:`leo_verify.analysis.milp.encode` with sound bounds.  z3 works in exact
   rationals: affine entries and post-activations are named variables with explicit
   sound bounds (``0 <= y <= u``, ``y == If(z > 0, z, 0)``); ReLUs proven stable by
   sound bounds are substituted (``0`` or ``z``).  z3 runs when at most
   ``z3_max_neurons`` distinct unstable ReLUs are left, or when the outputs are shared.

Sharing (:class:`Canon`): values that ``f`` and ``g`` compute identically (same
exact weights on the same canonical arguments, ignoring arguments proven 0 on the
box and the order of units) are computed once, in the MILP and in z3.  A network
compared with itself, a copy with dead neurons removed or units permuted
collapses to (nearly) nothing: ``f - g`` then has zero coefficients on every
shared value and the sound bounds alone prove it.  Whatever is not shared costs
one binary (one z3 ``If``) per unstable ReLU, and the joint MILP of two
unrelated copies is hard: measured on ACAS Xu 1_1 over prop_1's box, 494
binaries, dual bounds ~1000 after 12 s per query.

Replay guard: no counterexample is reported unless it *replays*: the point
(clipped exactly into the box) is evaluated in float64 and in exact rationals
(:func:`leo_verify.semantics.evaluate_exact`), and the exact outputs must differ by
more than ``epsilon`` (``"exact"``: differ at all; ``"top1"``: exact argmaxes
differ).  A candidate that does not replay -- from the fuzzer, the MILP, z3 or a
hook -- is discarded (listed in ``CheckResult.discarded``) and the check goes on.

``time_limit`` is an overall deadline: the fuzzer gets at most a quarter of
it, hooks get the deadline, MILP queries a fair share each of what is left
(a second pass re-runs open queries if time remains), z3 all that is left
(60 % when the MILP still follows).  Running out gives ``"unknown"`` with the
reason.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np

from ..domain import Box
from ..errors import UsageError
from ..graph import Add, Affine, Graph, Input, Output, Relu
from ..semantics import evaluate, evaluate_exact
from .fuzz import FuzzResult, check_sizes, falsify

__all__ = ["check_equivalence", "CheckResult", "STRUCTURAL_PROVERS", "MODES", "replay",
           "joint_graph", "VERDICTS", "METHODS", "Canon", "widen_for_exact_weights"]

MODES = ("epsilon", "exact", "top1")
#: every stage :func:`check_equivalence` can run (``"structural"``: the hook provers)
METHODS = ("fuzz", "structural", "bounds", "milp", "z3")
VERDICTS = ("equivalent", "counterexample", "unknown")

#: Exact structural provers tried after the fuzzer, in order.  Each is a callable
#: ``prover(f, g, box, mode, epsilon, deadline) -> CheckResult | None`` where
#: ``deadline`` is a :func:`time.monotonic` timestamp it must respect.  It returns
#: ``None`` (or a result with verdict ``"unknown"``) when it cannot decide, a
#: result with verdict ``"equivalent"`` (set ``method`` and ``proof``) when it
#: proves equivalence, or one with verdict ``"counterexample"`` whose
#: ``counterexample`` dict has ``"point_exact"`` (``"p/q"`` strings) or
#: ``"point"`` (floats): the point is replayed and discarded if it does not replay.
STRUCTURAL_PROVERS: list = []

#: z3 is tried when the networks have at most this many distinct unstable
#: neurons (after sharing identical sub-computations).
Z3_MAX_NEURONS = 60


def _margin(epsilon: float) -> float:
    """Safety margin of a floating-point MILP proof of ``max |f - g| <= epsilon``."""
    return 1e-9 + 1e-6 * epsilon


@dataclass
class CheckResult:
    """The outcome of :func:`check_equivalence`.

    Attributes
    ----------
    verdict : ``"equivalent"``, ``"counterexample"`` or ``"unknown"``.
    mode, epsilon : the question asked.
    method : the prover that decided (``"fuzz"``, ``"structural"`` or a hook's own
        name, ``"bounds"``, ``"milp"``, ``"z3"``), or ``None`` when unknown.
    proof : for ``"equivalent"``: ``"exact"`` (exact rational reasoning: z3, an
        exact structural prover), ``"sound-float"`` (rigorous outward-rounded float
        bounds) or ``"milp-float"`` (a float MILP solver's dual bounds beyond a
        margin, not re-proved exactly); for a counterexample ``"replayed"``
        (exact re-evaluation); ``None`` when unknown.
    reason : why the verdict (what each stage said), one line.
    counterexample : the replayed counterexample (see :func:`replay`) or ``None``.
    max_diff_seen : the largest float quantity seen (``max_i |f_i - g_i|``; top1:
        the disagreement margin) at any evaluated point.
    best_bound : a proven bound on ``max_i |f_i - g_i|`` over the box (float;
        from sound bounds or MILP dual bounds, the proof level as in ``proof``),
        or ``None``.
    stages : per stage: name, outcome, seconds and details.
    discarded : candidates that did not replay (source and the exact check).
    time : seconds.
    """

    verdict: str
    mode: str = "epsilon"
    epsilon: float = 0.0
    method: str | None = None
    proof: str | None = None
    reason: str = ""
    counterexample: dict | None = None
    max_diff_seen: float = 0.0
    best_bound: float | None = None
    stages: list = field(default_factory=list)
    discarded: list = field(default_factory=list)
    time: float = 0.0
    solver: str = "scip"
    seed: int = 0
    fuzz: dict | None = None

    def to_json(self) -> dict:
        return {
            "verdict": self.verdict,
            "mode": self.mode,
            "epsilon": self.epsilon,
            "method": self.method,
            "proof": self.proof,
            "reason": self.reason,
            "counterexample": self.counterexample,
            "max_diff_seen": _num(self.max_diff_seen),
            "best_bound": _num(self.best_bound),
            "stages": self.stages,
            "discarded": self.discarded,
            "solver": self.solver,
            "seed": self.seed,
            "fuzz": self.fuzz,
            "timings": {s["stage"]: s["time"] for s in self.stages},
            "time": self.time,
        }


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _qtext(q: Fraction) -> str:
    q = Fraction(q)
    return f"{q.numerator}/{q.denominator}"


def _to_fraction(v) -> Fraction:
    if isinstance(v, Fraction):
        return v
    if isinstance(v, str):
        return Fraction(v)
    if isinstance(v, (int, np.integer)):
        return Fraction(int(v))
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"coordinate {v!r} is not finite")
    return Fraction(f)


def _first_argmax(vals: Sequence) -> int:
    best = 0
    for i, v in enumerate(vals):
        if v > vals[best]:
            best = i
    return best


# -- replay ------------------------------------------------------------------------

def replay(f: Graph, g: Graph, box: Box, point, *, mode: str = "epsilon",
           epsilon: float = 0.0) -> tuple[dict | None, dict]:
    """Re-evaluate a candidate counterexample exactly.

    ``point``: floats, Fractions or ``"p/q"`` strings; it is clipped into the
    box exactly first.  Returns ``(counterexample, check)``: the counterexample
    dict if the exact outputs confirm it (``None`` otherwise) and a small
    description of the exact check (for the discarded list).
    """
    lo, hi = box.exact_bounds()
    q = [_to_fraction(v) for v in np.asarray(point, dtype=object).ravel().tolist()]
    if len(q) != box.size:
        return None, {"replayed": False, "why": f"point has {len(q)} values, box {box.size}"}
    clipped = any(v < l or v > h for v, l, h in zip(q, lo, hi))
    q = [min(max(v, l), h) for v, l, h in zip(q, lo, hi)]
    ef, eg = evaluate_exact(f, q), evaluate_exact(g, q)
    fp = np.array([float(v) for v in q])
    yf, yg = evaluate(f, fp)[0], evaluate(g, fp)[0]
    diffs = [a - b for a, b in zip(ef, eg)]
    k = max(range(len(diffs)), key=lambda i: abs(diffs[i])) if diffs else 0
    dmax = abs(diffs[k]) if diffs else Fraction(0)
    af, ag = _first_argmax(ef), _first_argmax(eg)
    if mode == "epsilon":
        ok = dmax > _to_fraction(epsilon)
    elif mode == "exact":
        ok = dmax != 0
    else:
        ok = af != ag
    check = {"difference": float(dmax), "output": int(k), "argmax_f": af, "argmax_g": ag,
             "replayed": bool(ok), "clipped": clipped}
    if not ok:
        return None, check
    exact_point = all(float(v) == v for v in q)
    cex = {
        "point": [float(v) for v in q],
        "point_exact": [_qtext(v) for v in q],
        "point_is_float": exact_point,
        "f": [float(v) for v in yf],
        "g": [float(v) for v in yg],
        "f_exact": [_qtext(v) for v in ef],
        "g_exact": [_qtext(v) for v in eg],
        "f_exact_float": [float(v) for v in ef],
        "g_exact_float": [float(v) for v in eg],
        "difference": float(dmax),
        "difference_exact": _qtext(dmax),
        "output": int(k),
        "float_difference": float(np.max(np.abs(yf - yg))) if len(yf) else 0.0,
        "argmax_f": af,
        "argmax_g": ag,
        "clipped": clipped,
    }
    return cex, check


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
                from ..errors import UnsupportedOp
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
    from ..analysis.bounds import compute_bounds
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


# -- the check --------------------------------------------------------------------------

class _Decided(Exception):
    """Raised inside a stage to return a final result."""

    def __init__(self, result: CheckResult):
        self.result = result


class _Ctx:
    def __init__(self, f, g, box, mode, epsilon, time_limit, solver, seed):
        self.f, self.g, self.box = f, g, box
        self.mode, self.epsilon = mode, float(epsilon)
        self.solver, self.seed = solver, seed
        self.start = time.monotonic()
        self.deadline = self.start + float(time_limit)
        self.stages: list = []
        self.discarded: list = []
        self.max_seen = 0.0
        self.best_bound: float | None = None
        self.fuzz: FuzzResult | None = None
        self._joint = None
        self._canon = None
        self.share = True
        self._replayed: set = set()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def result(self, verdict, *, method=None, proof=None, reason="", cex=None) -> CheckResult:
        return CheckResult(verdict, mode=self.mode, epsilon=self.epsilon, method=method,
                           proof=proof, reason=reason, counterexample=cex,
                           max_diff_seen=self.max_seen, best_bound=self.best_bound,
                           stages=self.stages, discarded=self.discarded,
                           time=time.monotonic() - self.start, solver=self.solver,
                           seed=self.seed,
                           fuzz=None if self.fuzz is None else self.fuzz.to_json())

    def candidate(self, point, source: str) -> None:
        """Replay a candidate; raise :class:`_Decided` with the counterexample if it holds."""
        key = tuple(str(_to_fraction(v)) for v in np.asarray(point, dtype=object).ravel())
        if key in self._replayed:
            return
        self._replayed.add(key)
        cex, check = replay(self.f, self.g, self.box, point, mode=self.mode, epsilon=self.epsilon)
        if self.mode != "top1":
            self.max_seen = max(self.max_seen, check["difference"])
        if cex is None:
            self.discarded.append({"source": source, **check})
            return
        cex["found_by"] = source
        if self.mode != "top1":
            self.max_seen = max(self.max_seen, cex["float_difference"], cex["difference"])
        raise _Decided(self.result(
            "counterexample", method=source, proof="replayed",
            reason=f"{source} found a point where {_describe(cex, self.mode, self.epsilon)} "
                   f"(replayed exactly)", cex=cex))

    def rational_candidate(self, q: list, source: str) -> None:
        """A candidate with rational coordinates: try its float rounding first."""
        rounded = [Fraction(float(v)) for v in q]
        if rounded != q:
            self.candidate(rounded, source)
        self.candidate(q, source)


def _describe(cex: dict, mode: str, epsilon: float) -> str:
    if mode == "top1":
        return f"argmax f = {cex['argmax_f']} but argmax g = {cex['argmax_g']}"
    i = cex["output"]
    if mode == "exact":
        return f"output {i} differs by {cex['difference']:.6g}"
    return f"|f_{i} - g_{i}| = {cex['difference']:.6g} > epsilon = {epsilon:g}"


def _stage(ctx: _Ctx, name: str, fn: Callable) -> None:
    """Run one stage, log its outcome; a decision propagates as :class:`_Decided`."""
    t0 = time.monotonic()
    entry = {"stage": name, "outcome": "unknown", "time": 0.0}
    ctx.stages.append(entry)
    try:
        outcome = fn(ctx, entry)
        if outcome:
            entry["outcome"] = outcome
    except _Decided as d:
        entry["outcome"] = d.result.verdict
        entry["time"] = time.monotonic() - t0
        d.result.time = time.monotonic() - ctx.start
        raise
    entry["time"] = time.monotonic() - t0


# -- stage: fuzz --------------------------------------------------------------------

def _fuzz_stage(options: dict):
    def run(ctx: _Ctx, entry: dict):
        kw = dict(seed=ctx.seed, budget=max(0.05, min(ctx.left(), 0.25 * (ctx.deadline - ctx.start))))
        kw.update(options)
        fmode = "top1" if ctx.mode == "top1" else "max"
        res = falsify(ctx.f, ctx.g, ctx.box, mode=fmode, **kw)
        ctx.fuzz = res
        ctx.max_seen = max(ctx.max_seen, res.max_diff)
        entry.update(max_diff=res.max_diff, evaluated=res.evaluated, stopped=res.stopped)
        thr = ctx.epsilon if ctx.mode == "epsilon" else 0.0
        cands = []
        if res.point is not None and res.max_diff > thr:
            cands.append((res.max_diff, res.point))
        for key, v in res.best_values.items():
            if v > thr:
                cands.append((v, res.best_points[key]))
        cands.sort(key=lambda c: -c[0])
        for _, p in cands[:8]:
            ctx.candidate(p, "fuzz")
        if not cands:
            return f"no counterexample (max difference seen {res.max_diff:.3g})"
        return (f"no counterexample: the best {min(len(cands), 8)} of {len(cands)} float "
                f"candidate(s) did not replay exactly")
    return run


# -- stage: hook provers --------------------------------------------------------------------

def _hook_stage(prover):
    def run(ctx: _Ctx, entry: dict):
        if ctx.left() <= 0:
            return "skipped: out of time"
        res = prover(ctx.f, ctx.g, ctx.box, ctx.mode, ctx.epsilon, ctx.deadline)
        if res is None or res.verdict == "unknown":
            return "unknown" + (f": {res.reason}" if res is not None and res.reason else "")
        if res.verdict == "counterexample":
            cex = res.counterexample or {}
            point = cex.get("point_exact") or cex.get("point")
            if point is None:
                ctx.discarded.append({"source": entry["stage"], "replayed": False,
                                      "why": "no point given"})
                return "counterexample without a point (discarded)"
            ctx.candidate(point, entry["stage"])
            return "counterexample did not replay (discarded)"
        if res.verdict == "equivalent":
            raise _Decided(ctx.result("equivalent", method=res.method or entry["stage"],
                                      proof=res.proof or "exact",
                                      reason=res.reason or f"{entry['stage']} proved equivalence"))
        raise ValueError(f"prover {entry['stage']!r} returned verdict {res.verdict!r}; "
                         f"expected one of {VERDICTS}")
    return run


def _prover_name(p) -> str:
    return str(getattr(p, "name", None) or getattr(p, "__name__", None) or type(p).__name__)


# -- stages: sound bounds and the joint MILP ------------------------------------------------

def _canon(ctx: _Ctx) -> Canon:
    """The canonical ids of both networks (computed once per check)."""
    if ctx._canon is None:
        canon = Canon(ctx.box)
        canon.add_net(ctx.f, _sound_bounds(ctx.f, ctx.box), private=None if ctx.share else "f")
        canon.add_net(ctx.g, _sound_bounds(ctx.g, ctx.box), private=None if ctx.share else "g")
        ctx._canon = canon
    return ctx._canon


def _joint(ctx: _Ctx):
    """The joint graph, its sound bounds (with a CROWN bound on ``f - g``)."""
    if ctx._joint is None:
        from ..analysis.bounds import compute_bounds, symbolic_bounds
        jg, fo, go = joint_graph(ctx.f, ctx.g, ctx.box, canon=_canon(ctx))
        bounds = compute_bounds(jg, ctx.box, method="symbolic")
        slo, shi = symbolic_bounds(jg, ctx.box, bounds, "diff")
        lo, hi = bounds["diff"]
        bounds["diff"] = (np.maximum(lo, slo), np.minimum(hi, shi))
        bounds["y"] = bounds["diff"]
        bounds = widen_for_exact_weights(jg, bounds)
        ctx._joint = (jg, fo, go, bounds)
    return ctx._joint


def _bounds_stage(ctx: _Ctx, entry: dict):
    jg, fo, go, bounds = _joint(ctx)
    lo, hi = bounds["diff"]
    bound = float(max(np.max(hi, initial=0.0), np.max(-lo, initial=0.0)))
    entry["bound"] = bound
    ctx.best_bound = bound if ctx.best_bound is None else min(ctx.best_bound, bound)
    if ctx.mode == "epsilon" and bound <= ctx.epsilon:
        raise _Decided(ctx.result("equivalent", method="bounds", proof="sound-float",
                                  reason=f"sound bounds give max |f - g| <= {bound:.6g} <= "
                                         f"epsilon = {ctx.epsilon:g}"))
    return f"sound bound max |f - g| <= {bound:.3g}"


def _query_limit(ctx: _Ctx, remaining_queries: int) -> float | None:
    left = ctx.left()
    if left <= 0.05:
        return None
    return max(0.05, left / max(1, remaining_queries))


def _milp_diff_stage(ctx: _Ctx, entry: dict):
    """Maximise and minimise every output of ``f - g`` over the joint MILP.

    epsilon mode proves when every side's dual bound clears ``epsilon`` by the
    margin; exact mode searches for counterexamples only (a float solver
    cannot prove exact equality) with threshold ``thr``.
    """
    from ..analysis.backends import Session
    from ..analysis.milp import encode
    jg, fo, go, bounds = _joint(ctx)
    enc = encode(jg, ctx.box, bounds)
    m = ctx.f.output_size
    lo, hi = bounds["diff"]
    if ctx.mode == "epsilon":
        thr = ctx.epsilon
        proof_at = ctx.epsilon - _margin(ctx.epsilon)
    else:  # exact: look for differences the MILP can see at all
        thr = 1e-6
        proof_at = thr / 2
    centre = (ctx.box.lower + ctx.box.upper) / 2
    session = Session(enc.program, backend=ctx.solver, hint=enc.assignment(centre))
    upper = {}  # (i, sign) -> proven bound on sign * (f_i - g_i)
    queries = []
    fz = ctx.fuzz
    for i in range(m):
        for s in (1, -1):
            sound = float(hi[i]) if s == 1 else float(-lo[i])
            if sound <= proof_at:
                upper[(i, s)] = sound
                continue
            prio = fz.best_values.get((i, s), -math.inf) if fz is not None else -math.inf
            queries.append((prio, i, s))
    queries.sort(key=lambda q: (-q[0], q[1], -q[2]))
    stats = []
    entry.update(variables=enc.program.num_vars, binaries=enc.program.num_integer,
                 queries=stats)
    open_q = [(i, s) for _, i, s in queries]
    for attempt in range(2):
        still = []
        for k, (i, s) in enumerate(open_q):
            limit = _query_limit(ctx, len(open_q) - k)
            if limit is None:
                still.append((i, s))
                continue
            var = enc.var("diff", i)
            hint = None
            if fz is not None and (i, s) in fz.best_points:
                hint = enc.assignment(fz.best_points[(i, s)])
            sense = "max" if s == 1 else "min"
            # first pass: stop at a clear candidate; second pass (after a candidate
            # that did not replay): search on for the dual bound or a better point
            stops = dict(primal_stop=s * (thr + max(thr, 1e-6)) if attempt == 0 else None,
                         dual_stop=s * proof_at)
            res = session.solve({var: 1.0}, sense=sense, time_limit=limit, hint=hint, **stops)
            stats.append({"output": i, "sign": s, **{k2: res.to_json()[k2] for k2 in
                          ("status", "primal", "dual", "time", "stopped_by", "message")}})
            if res.primal is not None and res.x is not None and s * res.primal > thr:
                ctx.candidate(enc.input_point(res.x), "milp")
            if res.dual is not None and s * res.dual <= proof_at:
                upper[(i, s)] = s * res.dual
                continue
            if res.status == "optimal" and res.dual is not None:
                # solved: the maximum exceeds epsilon - margin in floats but no
                # point replays; running again would not change that
                upper[(i, s)] = s * res.dual
                continue
            still.append((i, s))
        open_q = still
        if not open_q or ctx.left() <= 0.1:
            break
    if len(upper) == 2 * m:
        b = max(max(upper.values()), 0.0)
        ctx.best_bound = b if ctx.best_bound is None else min(ctx.best_bound, b)
    proven = all((i, s) in upper and upper[(i, s)] <= proof_at for i in range(m) for s in (1, -1))
    if ctx.mode == "epsilon" and proven:
        bound = max(upper.values()) if upper else 0.0
        raise _Decided(ctx.result(
            "equivalent", method="milp", proof="milp-float",
            reason=f"joint MILP: every dual bound of +-(f_i - g_i) is <= {bound:.3g} "
                   f"(<= epsilon - margin = {proof_at:.6g}; float solver, not re-proved exactly)"))
    if ctx.mode == "exact" and proven:
        return (f"MILP bounds max |f - g| <= {max(upper.values()):.3g} in floating point; "
                f"exact mode needs an exact proof")
    above = sum(1 for v in upper.values() if v > proof_at)
    return (f"{len(open_q) + above} of {2 * m} output sides not proven: {len(open_q)} open at the "
            f"time limit, {above} with a float maximum above epsilon - margin and no point that "
            f"replays")


def _milp_top1_stage(ctx: _Ctx, entry: dict):
    """For each class ``i``: on ``{x : f_i(x) >= f_k(x) for all k}`` maximise ``g_j - g_i``.

    If every maximum is below ``-tau`` then wherever ``f``'s (first) argmax is
    ``i``, ``g_i > g_j`` strictly for all ``j``, so ``g``'s argmax is ``i`` too.
    An incumbent with ``g_j - g_i > 0`` is a candidate (replayed).
    """
    from ..analysis.backends import Session
    from ..analysis.milp import Program, encode
    jg, fo, go, bounds = _joint(ctx)
    enc = encode(jg, ctx.box, bounds)
    m = ctx.f.output_size
    glo, ghi = bounds[go]
    tau = 1e-6 * max(1.0, float(np.max(np.maximum(np.abs(glo), np.abs(ghi)), initial=0.0)))
    fv, gv = enc.vars(fo), enc.vars(go)
    fz = ctx.fuzz
    pairs = [(i, j) for i in range(m) for j in range(m) if i != j]
    prio = {p: (fz.best_values.get(p, -math.inf) if fz is not None else -math.inf) for p in pairs}
    classes = sorted(range(m), key=lambda i: -max([prio[(i, j)] for j in range(m) if j != i],
                                                  default=-math.inf))
    proved, stats = set(), []
    entry.update(queries=stats, tau=tau)
    rng = np.random.default_rng(ctx.seed)
    samples = np.vstack([((ctx.box.lower + ctx.box.upper) / 2)[None, :], ctx.box.sample(2000, rng)])
    for ci, i in enumerate(classes):
        prog = Program(variables=list(enc.program.variables), rows=list(enc.program.rows))
        for k in range(m):
            if k != i:
                prog.add_row({int(fv[i]): 1.0, int(fv[k]): -1.0}, 0.0, math.inf, name=f"top{i}>{k}")
        # a start solution in f's top-i region: without an incumbent SCIP's dual
        # bound is not readable (pywraplp), so a proof needs one
        start = None
        for j in range(m):
            if j != i and fz is not None and (i, j) in fz.best_points:
                start = fz.best_points[(i, j)]
                break
        if start is None:
            tops = np.argmax(evaluate(ctx.f, samples), axis=1)
            hit = np.flatnonzero(tops == i)
            start = samples[hit[0]] if hit.size else None
        hint = None if start is None else enc.assignment(start)
        session = Session(prog, backend=ctx.solver, hint=hint)
        js = sorted((j for j in range(m) if j != i), key=lambda j: -prio[(i, j)])
        for jk, j in enumerate(js):
            remaining = sum(m - 1 for _ in classes[ci + 1:]) + len(js) - jk
            limit = _query_limit(ctx, remaining)
            if limit is None:
                continue
            obj = {int(gv[j]): 1.0}
            obj[int(gv[i])] = obj.get(int(gv[i]), 0.0) - 1.0
            res = session.solve(obj, sense="max", time_limit=limit, primal_stop=tau,
                                dual_stop=-tau)
            stats.append({"top": i, "rival": j, **{k2: res.to_json()[k2] for k2 in
                          ("status", "primal", "dual", "time", "stopped_by")}})
            if res.primal is not None and res.x is not None and res.primal > 0:
                ctx.candidate(enc.input_point(res.x), "milp")
            if res.status == "infeasible" or (res.dual is not None and res.dual <= -tau):
                proved.add((i, j))
    if len(proved) == len(pairs):
        raise _Decided(ctx.result(
            "equivalent", method="milp", proof="milp-float",
            reason=f"joint MILP: wherever f's top class is i, g_j - g_i <= -{tau:.3g} for every "
                   f"j != i (float solver, not re-proved exactly)"))
    return f"{len(pairs) - len(proved)} of {len(pairs)} class pairs open (ties or time)"


# -- stage: z3 ------------------------------------------------------------------------------

def _z3_stage(ctx: _Ctx, entry: dict, max_neurons: int, share_of_time: float):
    """Exact: is there ``x`` in the box with ``f(x)`` and ``g(x)`` differing (per mode)?

    Built on the canonical ids (:class:`Canon`): every distinct value is one z3
    term, every affine entry a named variable with its sound bounds, every
    unstable ReLU a named variable ``0 <= y <= u``, ``y == If(z > 0, z, 0)``.
    """
    import z3
    canon = _canon(ctx)
    fids, gids = canon.nets
    f_out, g_out = fids[ctx.f.output_name], gids[ctx.g.output_name]
    # only what the outputs depend on
    need, stack = set(), list(f_out) + list(g_out)
    while stack:
        c = stack.pop()
        if c in need:
            continue
        need.add(c)
        kind, payload = canon.defs[c]
        if kind == "aff":
            stack.extend(a for a, _ in payload[1])
        elif kind == "relu":
            stack.append(payload)
        elif kind == "add":
            stack.extend(payload)
    unstable = sum(1 for c in need if canon.kind(c) == "relu")
    same = f_out == g_out
    entry.update(unstable_neurons=unstable, shared_outputs=sum(a == b for a, b in zip(f_out, g_out)))
    if unstable > max_neurons and not same:
        return f"skipped: {unstable} distinct unstable neurons > {max_neurons}"
    if ctx.left() <= 0.05:
        return "skipped: out of time"

    def rv(q: Fraction):
        q = Fraction(q)
        return z3.RealVal(q.numerator) if q.denominator == 1 else z3.Q(q.numerator, q.denominator)

    def fl(v: float):
        return rv(Fraction(float(v)))

    solver = z3.Solver()
    zero = z3.RealVal(0)
    terms: dict = {}
    xs = []
    for c in sorted(need | set(range(1, 1 + ctx.box.size))):  # ids are topological
        kind, payload = canon.defs[c]
        lo, hi = canon.bounds[c]
        if kind == "zero":
            terms[c] = zero
        elif kind == "in":
            x = z3.Real(f"x{payload}")
            solver.add(x >= fl(lo), x <= fl(hi))
            terms[c] = x
            xs.append(x)
        elif kind == "aff":
            bias, ws = payload
            parts = [rv(w) * terms[a] for a, w in ws]
            if bias != 0 or not parts:
                parts.append(rv(bias))
            z = z3.Real(f"z{c}")
            solver.add(z == (z3.Sum(parts) if len(parts) > 1 else parts[0]), z >= fl(lo), z <= fl(hi))
            terms[c] = z
        elif kind == "relu":
            y = z3.Real(f"y{c}")
            z = terms[payload]
            solver.add(y >= 0, y <= fl(hi), y == z3.If(z > 0, z, zero))
            terms[c] = y
        else:  # add
            ts = [terms[a] for a in payload]
            terms[c] = z3.Sum(ts) if len(ts) > 1 else (ts[0] if ts else zero)
    fo = [terms[c] for c in f_out]
    go = [terms[c] for c in g_out]
    m = len(fo)
    if ctx.mode == "exact":
        claim = [a != b for a, b, ca, cb in zip(fo, go, f_out, g_out) if ca != cb]
    elif ctx.mode == "epsilon":
        e = rv(Fraction(ctx.epsilon))
        claim = [z3.Or(a - b > e, b - a > e) for a, b, ca, cb in zip(fo, go, f_out, g_out)
                 if ca != cb]
    else:
        def top(v, i):  # the first argmax of v is i
            return z3.And([v[i] > v[k] for k in range(i)] + [v[i] >= v[k] for k in range(i + 1, m)])
        claim = [] if same else \
            [z3.And(top(fo, i), top(go, j)) for i in range(m) for j in range(m) if i != j]
    solver.add(z3.Or(claim) if claim else z3.BoolVal(False))
    left = ctx.left() * share_of_time
    if left <= 0.05:
        return "skipped: out of time"
    solver.set("timeout", max(1, int(left * 1000)))
    entry["timeout"] = left
    ans = solver.check()
    entry["z3"] = str(ans)
    if ans == z3.unsat:
        what = {"exact": "f(x) == g(x) exactly",
                "epsilon": f"|f_i(x) - g_i(x)| <= {ctx.epsilon:g} exactly",
                "top1": "argmax f(x) == argmax g(x) (first index) exactly"}[ctx.mode]
        raise _Decided(ctx.result("equivalent", method="z3", proof="exact",
                                  reason=f"z3 (exact rationals): {what} for every x in the box"))
    if ans == z3.sat:
        model = solver.model()
        q = []
        for x in xs:
            v = model.eval(x, model_completion=True)
            q.append(Fraction(v.as_fraction()) if z3.is_rational_value(v) else Fraction(0))
        ctx.rational_candidate(q, "z3")
        return "sat model did not replay (discarded)"
    why = solver.reason_unknown()
    if "cancel" in why:  # z3 turns Ctrl-C into "unknown (canceled)"
        raise KeyboardInterrupt
    return f"z3 unknown ({why})"


# -- the entry point ---------------------------------------------------------------------------------

#: a float64 head output is within this much (times 1 + |value|) of the real one
#: (numpy's exp/log/tanh are accurate to a few ulps; this is ~10^7 ulps)
HEAD_FLOAT_MARGIN = 1e-9


_KEEP = object()


def _head_result(r: CheckResult, *, mode: str, epsilon: float, verdict: str | None = None,
                 reason: str = "", best_bound=_KEEP) -> CheckResult:
    """``r`` (a check of the logits) restated as the answer about the head outputs.
    ``best_bound``: a proven bound on the head outputs' difference (default: None unless
    ``r`` is a top-1 check, whose bound field is not printed)."""
    r.mode, r.epsilon = mode, float(epsilon)
    if best_bound is _KEEP:
        best_bound = r.best_bound if mode == "top1" else None
    if verdict is not None and verdict != r.verdict:
        r.verdict = verdict
        if verdict == "unknown":
            r.method = r.proof = None
            r.counterexample = None
    r.best_bound = best_bound
    r.reason = reason + ("; " if reason and r.reason else "") + r.reason
    return r


def _check_with_heads(f: Graph, g: Graph, box: Box, mode: str, epsilon: float, run) -> CheckResult:
    """The question about the *head outputs*, answered from checks of the logits.

    ``run(mode, epsilon)`` checks the logits.  What transfers (the proofs are in
    :mod:`leo_verify.heads`):

    * ``top1``: softmax, log-softmax, sigmoid, tanh (order-preserving) and argmax
      with first-index ties have the argmax of the logits, ties included:
      the logits' top-1 check is the answer.
    * different heads (``head_key``): not decided (equal logits do not give
      equal outputs): ``unknown`` with the reason.
    * ``exact``: equal logits give equal outputs; a logit counterexample is one
      for sigmoid / tanh (injective), for softmax / log-softmax when the logit
      difference is not the same at every output (they are invariant to a
      common shift, and only to it), for argmax as a top-1 check.
    * ``epsilon`` with a head of Lipschitz constant ``L``: the logits are checked
      with ``epsilon / L``; proven -> the head outputs are within ``epsilon``; a
      logit counterexample counts only when the head outputs, computed in
      float64 from the exact logits, differ by more than ``epsilon`` plus a
      float margin.  argmax: the indices are equal where the top-1 check proves it.
    """
    from ..heads import HEADS, apply_head
    fo, go = f.op(f.output_name), g.op(g.output_name)
    t0 = time.monotonic()

    def undecided(reason: str) -> CheckResult:
        return CheckResult("unknown", mode=mode, epsilon=epsilon, reason=reason,
                           time=time.monotonic() - t0)

    def transparent(o) -> bool:
        return o.head_key() != ("argmax", "last")

    heads = f"heads: A {fo.head_text()}, B {go.head_text()}"
    if mode == "top1":
        if not (transparent(fo) and transparent(go)):
            return undecided(f"{heads}: an ArgMax with select_last_index=1 resolves ties to the "
                             "last index; --top1 compares first-index argmaxes of the logits")
        r = run("top1", epsilon)
        return _head_result(r, mode=mode, epsilon=epsilon, reason=(
            f"{heads}: each preserves the argmax of the logits (ties included), so the logits "
            "were compared"))
    if fo.head_key() != go.head_key():
        return undecided(f"the networks end with different output heads (A {fo.head_text()}, B "
                         f"{go.head_text()}): equal logits do not give equal outputs, and "
                         "outputs of different heads are not compared; not proven equivalent")
    head = fo.head
    attrs = dict(fo.head_attrs)
    if head == "argmax":
        if not transparent(fo):
            if mode == "exact":
                r = run("exact", epsilon)
                if r.verdict == "equivalent":
                    return _head_result(r, mode=mode, epsilon=epsilon,
                                        reason="argmax heads: the logits are equal")
                return _head_result(r, mode=mode, epsilon=epsilon, verdict="unknown", reason=(
                    "argmax heads with select_last_index=1: the logits are not proven equal, and "
                    "--top1 compares first-index argmaxes"))
            return undecided("argmax heads with select_last_index=1: --top1 compares first-index "
                             "argmaxes of the logits; not decided")
        r = run("top1", epsilon)
        note = "argmax heads (first index on ties): compared the argmax of the logits"
        if r.verdict == "counterexample" and mode == "epsilon":
            cex = r.counterexample
            if abs(cex["argmax_f"] - cex["argmax_g"]) <= epsilon:
                return _head_result(r, mode=mode, epsilon=epsilon, verdict="unknown", reason=(
                    note + f"; the argmaxes differ ({cex['argmax_f']} vs {cex['argmax_g']}) but by "
                    f"no more than epsilon"))
        return _head_result(r, mode=mode, epsilon=epsilon, reason=note)
    if mode == "exact":
        r = run("exact", epsilon)
        note = f"{head} heads: equal logits give equal outputs"
        if r.verdict == "counterexample" and head in ("softmax", "logsoftmax"):
            cex = r.counterexample
            diffs = {Fraction(a) - Fraction(b) for a, b in zip(cex["f_exact"], cex["g_exact"])}
            if len(diffs) <= 1:
                return _head_result(r, mode=mode, epsilon=epsilon, verdict="unknown", reason=(
                    note + f"; the logits differ at x by the same constant at every output, where "
                    f"the {head} outputs are equal: not decided"))
            note += f"; {head} outputs are equal only where the logits differ by a common constant"
        elif r.verdict == "counterexample":
            note += f"; {head} is injective, so the outputs differ where the logits do"
        return _head_result(r, mode=mode, epsilon=epsilon, reason=note)
    L = HEADS[head].lipschitz
    inner = float(Fraction(epsilon) / L)
    if Fraction(inner) > Fraction(epsilon) / L:  # round down: a proof must be of <= epsilon / L
        inner = float(np.nextafter(inner, 0.0))
    r = run("epsilon", inner)
    note = (f"{head} heads (Lipschitz {L} in the infinity norm, leo_verify/heads.py): checked "
            f"|logits A - logits B| <= epsilon / {L} = {inner:.6g}")
    bound = None if r.best_bound is None else float(r.best_bound) * float(L)
    if r.verdict == "counterexample":
        cex = r.counterexample
        ef = np.array([float(Fraction(v)) for v in cex["f_exact"]])[None, :]
        eg = np.array([float(Fraction(v)) for v in cex["g_exact"]])[None, :]
        hf, hg = apply_head(head, attrs, ef)[0], apply_head(head, attrs, eg)[0]
        d = np.abs(hf - hg)
        k = int(np.argmax(d))
        margin = HEAD_FLOAT_MARGIN * (1 + max(abs(hf[k]), abs(hg[k])))
        cex.update(head=head, head_f=hf.tolist(), head_g=hg.tolist(), head_difference=float(d[k]),
                   head_output=k)
        if d[k] - margin > epsilon:
            return _head_result(r, mode=mode, epsilon=epsilon, best_bound=bound, reason=(
                note + f"; at the counterexample the {head} outputs differ by {d[k]:.6g} > epsilon "
                f"(output {k}, float64 from the exact logits, margin {margin:.1e})"))
        return _head_result(r, mode=mode, epsilon=epsilon, verdict="unknown", best_bound=bound,
                            reason=note + f"; the logits differ by more than epsilon / {L} at a "
                            f"point where the {head} outputs differ by only {d[k]:.6g}: not decided")
    return _head_result(r, mode=mode, epsilon=epsilon, best_bound=bound, reason=(
        note + (f", so |{head} A - {head} B| <= {L} * that = epsilon" if r.verdict == "equivalent"
                else "")))


def check_equivalence(f: Graph, g: Graph, box: Box, *, mode: str = "epsilon",
                      epsilon: float = 1e-6, time_limit: float = 60.0, solver: str = "scip",
                      seed: int = 0, provers: Sequence | None = None,
                      methods: Sequence[str] | None = None, fuzz_options: dict | None = None,
                      z3_max_neurons: int = Z3_MAX_NEURONS, share: bool = True) -> CheckResult:
    """Decide whether ``f`` and ``g`` agree on ``box`` (see the module docstring).

    Networks with output heads (:mod:`leo_verify.heads`) are compared on their
    head outputs, through checks of their logits: see :func:`_check_with_heads`.

    Parameters
    ----------
    f, g : networks with equal input and output sizes (else :class:`DataError`).
    box : the input box (:class:`DomainError` if its size is not the input size).
    mode : ``"epsilon"``, ``"exact"`` or ``"top1"``.
    epsilon : tolerance of mode ``"epsilon"`` (``>= 0``).
    time_limit : overall seconds; what is left goes to each stage in turn.
    solver : MILP backend, ``"scip"`` or ``"highs"``.
    seed : seeds the falsification campaign.
    provers : hook provers tried after the fuzzer (default :data:`STRUCTURAL_PROVERS`).
    methods : the stages to run, a subset of :data:`METHODS` (default: all);
        their order is fixed by the mode.  ``"structural"`` stands for the hook
        provers.  Leaving ``"fuzz"`` out lets the other provers find the
        counterexamples.
    fuzz_options : keyword arguments for :func:`.fuzz.falsify`.
    z3_max_neurons : z3 runs when there are at most this many distinct
        unstable neurons (or when ``f`` and ``g`` share all their terms).
    share : compute values ``f`` and ``g`` share once (see :class:`Canon`);
        ``False`` encodes two independent copies (for measurements).

    Returns
    -------
    CheckResult
    """
    from ..analysis.backends import BACKENDS
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if solver not in BACKENDS:
        raise UsageError(f"solver must be one of {', '.join(BACKENDS)}, got {solver!r}")
    epsilon = float(epsilon)
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise UsageError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    time_limit = float(time_limit)
    if not (math.isfinite(time_limit) and time_limit > 0):
        raise UsageError(f"time limit must be > 0 seconds, got {time_limit!r}")
    check_sizes(f, g)
    box.check_size(f.input_size)
    methods = METHODS if methods is None else tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UsageError(f"unknown method {bad[0]!r}; choose from {', '.join(METHODS)}")
    if f.op(f.output_name).head != "none" or g.op(g.output_name).head != "none":
        def run(m: str, eps: float) -> CheckResult:
            return _check_logits(f, g, box, m, eps, time_limit, solver, seed, provers, methods,
                                 fuzz_options, z3_max_neurons, share)
        return _check_with_heads(f, g, box, mode, epsilon, run)
    return _check_logits(f, g, box, mode, epsilon, time_limit, solver, seed, provers, methods,
                         fuzz_options, z3_max_neurons, share)


def _check_logits(f, g, box, mode, epsilon, time_limit, solver, seed, provers, methods,
                  fuzz_options, z3_max_neurons, share) -> CheckResult:
    """:func:`check_equivalence` on the logits (the networks' outputs before any head)."""
    ctx = _Ctx(f, g, box, mode, epsilon, time_limit, solver, seed)
    ctx.share = bool(share)
    # (stage name, method it belongs to, function)
    plan: list = [("fuzz", "fuzz", _fuzz_stage(dict(fuzz_options or {})))]
    hooks = STRUCTURAL_PROVERS if provers is None else list(provers)
    for p in hooks:
        plan.append((_prover_name(p), "structural", _hook_stage(p)))
    if mode == "epsilon":
        plan += [("bounds", "bounds", _bounds_stage),
                 ("milp", "milp", _milp_diff_stage),
                 ("z3", "z3", lambda c, e: _z3_stage(c, e, z3_max_neurons, 1.0))]
    else:
        # z3 (the exact prover) first, leaving a share of the time to the
        # MILP, which can still find counterexamples
        plan += [("z3", "z3", lambda c, e: _z3_stage(c, e, z3_max_neurons, 0.6)),
                 ("milp", "milp", _milp_diff_stage if mode == "exact" else _milp_top1_stage)]
    plan = [(name, fn) for name, method, fn in plan if method in methods]
    try:
        for name, fn in plan:
            if ctx.left() <= 0:
                ctx.stages.append({"stage": name, "outcome": "skipped: out of time", "time": 0.0})
                continue
            _stage(ctx, name, fn)
    except _Decided as d:
        return d.result
    reasons = "; ".join(f"{s['stage']}: {s['outcome']}" for s in ctx.stages)
    timed_out = ctx.left() <= 0
    return ctx.result("unknown", reason=("time limit reached; " if timed_out else "") + reasons)
