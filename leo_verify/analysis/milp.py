"""A backend-neutral MILP encoding of a ReLU network over an input box.

:class:`Program` is a plain list of bounded variables and sparse, two-sided
linear rows; :mod:`leo_verify.analysis.backends` hands it to a solver.
:func:`encode` builds it with one table ``op kind -> encoder`` (:data:`ENCODERS`),
like the interpreters of :mod:`leo_verify.semantics`.

The ReLU encoding uses *proven* bounds ``lo <= z <= hi`` on each
pre-activation ``z`` (the caller's responsibility: the encoding is only as
sound as these bounds):

* ``hi <= 0`` or fixed ``"inactive"``: ``y = 0``, no binary (and ``z <= 0``,
  a proven fact, becomes a bound of ``z``);
* ``lo >= 0`` or fixed ``"active"``: ``y = z``, no binary (``y`` *is* the
  variable of ``z``, with ``z >= 0``);
* otherwise the big-M formulation with binary ``a`` (``a = 1`` iff active)::

      y >= 0,  y >= z,  y <= z - lo (1 - a),  y <= hi a,  0 <= y <= hi

  which, for ``lo < 0 < hi``, is the tightest formulation of one ReLU over
  ``[lo, hi]`` (its LP relaxation is the triangle).  ``|lo|`` and ``hi`` are
  widened to at least 1e-7 so no solver drops a tiny coefficient.

:meth:`Encoding.assignment` turns an input point into a full solution vector
(a start solution / hint for the backends).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import networkx as nx
import numpy as np

from ..domain import Box
from ..errors import UnsupportedOp
from ..graph import Graph
from .bounds import interval_bounds as _sound_intervals
from ..semantics import evaluate_all

__all__ = ["Variable", "Row", "Program", "Encoding", "ENCODERS", "encode", "interval_bounds"]

#: coefficients below this are left out of rows (with a sound slack)
SMALL_COEF = 1e-9

#: A fixed neuron is one of these phases.
PHASES = ("active", "inactive")

#: Smallest big-M constant written into a row (see ``_relu_unit``).
_MIN_M = 1e-7


@dataclass(frozen=True)
class Variable:
    """A decision variable ``lb <= v <= ub`` (``integer``: takes integer values)."""

    name: str
    lb: float
    ub: float
    integer: bool = False


@dataclass(frozen=True)
class Row:
    """A linear constraint ``lb <= sum(coefs[v] * v) <= ub`` (a bound may be infinite)."""

    coefs: dict
    lb: float
    ub: float
    name: str = ""


@dataclass
class Program:
    """A mixed-integer linear program without objective (objectives are per query).

    Variables are indices ``0 .. num_vars - 1`` in creation order.
    """

    variables: list = field(default_factory=list)
    rows: list = field(default_factory=list)

    # -- construction -------------------------------------------------
    def add_var(self, name: str, lb: float, ub: float, *, integer: bool = False) -> int:
        """Add a variable and return its index."""
        lb, ub = float(lb), float(ub)
        if math.isnan(lb) or math.isnan(ub) or lb > ub:
            raise ValueError(f"variable {name!r}: invalid bounds [{lb}, {ub}]")
        self.variables.append(Variable(name, lb, ub, integer))
        return len(self.variables) - 1

    def add_row(self, coefs: Mapping[int, float], lb: float = -math.inf, ub: float = math.inf,
                *, name: str = "") -> int:
        """Add ``lb <= sum(coefs[v] * v) <= ub``; zero coefficients are dropped."""
        clean = {int(v): float(c) for v, c in coefs.items() if c != 0.0}
        for v, c in clean.items():
            if not (0 <= v < len(self.variables)) or not math.isfinite(c):
                raise ValueError(f"row {name!r}: bad term {c!r} * x{v}")
        self.rows.append(Row(clean, float(lb), float(ub), name))
        return len(self.rows) - 1

    def tighten(self, v: int, *, lb: float = -math.inf, ub: float = math.inf) -> None:
        """Intersect the bounds of variable ``v`` with ``[lb, ub]``."""
        old = self.variables[v]
        new_lb, new_ub = max(old.lb, float(lb)), min(old.ub, float(ub))
        if new_lb > new_ub:
            raise ValueError(f"variable {old.name!r}: bounds [{old.lb}, {old.ub}] and "
                             f"[{lb}, {ub}] do not meet")
        self.variables[v] = Variable(old.name, new_lb, new_ub, old.integer)

    # -- queries ------------------------------------------------------
    @property
    def num_vars(self) -> int:
        return len(self.variables)

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    @property
    def num_integer(self) -> int:
        return sum(v.integer for v in self.variables)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Variable lower and upper bounds as arrays."""
        return (np.array([v.lb for v in self.variables], dtype=np.float64),
                np.array([v.ub for v in self.variables], dtype=np.float64))

    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The rows in compressed-row form: ``(row_lb, row_ub, starts, index, value)``."""
        starts = np.zeros(self.num_rows + 1, dtype=np.int32)
        starts[1:] = np.cumsum([len(r.coefs) for r in self.rows])
        index = np.fromiter((v for r in self.rows for v in r.coefs), dtype=np.int32,
                            count=int(starts[-1]))
        value = np.fromiter((c for r in self.rows for c in r.coefs.values()), dtype=np.float64,
                            count=int(starts[-1]))
        row_lb = np.array([r.lb for r in self.rows], dtype=np.float64)
        row_ub = np.array([r.ub for r in self.rows], dtype=np.float64)
        return row_lb, row_ub, starts, index, value

    def violation(self, x) -> float:
        """Largest violation of a bound, row or integrality by the point ``x`` (0 if feasible)."""
        x = np.asarray(x, dtype=np.float64)
        lb, ub = self.bounds()
        worst = float(np.max(np.maximum(lb - x, x - ub), initial=0.0))
        for v, var in enumerate(self.variables):
            if var.integer:
                worst = max(worst, abs(x[v] - round(x[v])))
        for r in self.rows:
            act = sum(c * x[v] for v, c in r.coefs.items())
            worst = max(worst, r.lb - act, act - r.ub)
        return worst

    def objective_value(self, objective: Mapping[int, float], x) -> float:
        """``sum(objective[v] * x[v])``."""
        return float(sum(c * float(x[v]) for v, c in objective.items()))


@dataclass
class Encoding:
    """The MILP of (a part of) a network, with the map from node entries to variables.

    Attributes
    ----------
    program : the :class:`Program`.
    node_vars : node name -> int array, the variable of each entry.  Aliases
        are common: an ``output`` shares its argument's variables, a ReLU
        proven or fixed active shares its pre-activation's variables.
    inputs : variables of the input node (the witness coordinates).
    binaries : neuron id -> its phase variable (``1`` = active), only for the
        neurons left unstable.
    preact : neuron id -> variable of its pre-activation ``z``.
    phases : neuron id -> ``"active"``, ``"inactive"`` or ``"unstable"`` as encoded.
    nodes : the encoded node names, in topological order.
    graph : the encoded network.
    """

    program: Program
    graph: Graph
    node_vars: dict = field(default_factory=dict)
    inputs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    binaries: dict = field(default_factory=dict)
    preact: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)
    nodes: list = field(default_factory=list)

    def var(self, node: str, i: int) -> int:
        """The variable of entry ``i`` of ``node``."""
        return int(self.node_vars[node][i])

    def vars(self, node: str) -> np.ndarray:
        """The variables of all entries of ``node``."""
        return self.node_vars[node]

    def input_point(self, x) -> np.ndarray:
        """The input coordinates of a solution vector ``x`` of the program, clipped into the
        input variables' bounds (the box): solvers meet bounds only within their feasibility
        tolerance (HiGHS returned points up to ~1e-7 outside), and a point reported as an input
        must lie in the domain.  Every caller replays the point (exactly, for a witness), so
        the clipped point is what is judged."""
        var = self.program.variables
        lb = np.array([var[i].lb for i in self.inputs], dtype=np.float64)
        ub = np.array([var[i].ub for i in self.inputs], dtype=np.float64)
        return np.clip(np.asarray(x, dtype=np.float64)[self.inputs], lb, ub)

    def assignment(self, point) -> np.ndarray:
        """A solution vector of the program for the input ``point`` (a start solution).

        Every variable gets the network's float value at ``point`` and every
        binary the phase of its neuron there, so for a point of the box the
        vector is feasible up to rounding.
        """
        values = evaluate_all(self.graph, np.asarray(point, dtype=np.float64)[None, :])
        x = np.zeros(self.program.num_vars)
        for node in self.nodes:  # topological: a ReLU sharing z's variable writes last
            x[self.node_vars[node]] = values[node][0]
        for nid, a in self.binaries.items():
            x[a] = 1.0 if x[self.preact[nid]] > 0 else 0.0
        lb, ub = self.program.bounds()
        return np.clip(x, lb, ub)  # rounding may step a hair outside a proven bound


# -- bounds -----------------------------------------------------------------

def _given(name: str, size: int, pair) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = (np.asarray(v, dtype=np.float64).ravel() for v in pair)
    if lo.shape != (size,) or hi.shape != (size,):
        raise ValueError(f"bounds of node {name!r}: expected {size} values, "
                         f"got {lo.size}/{hi.size}")
    bad = np.flatnonzero(np.isnan(lo) | np.isnan(hi) | (lo > hi))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"bounds of node {name!r}[{i}]: [{lo[i]}, {hi[i]}] is not an interval")
    return lo, hi


def interval_bounds(graph: Graph, box: Box, *, given: Mapping | None = None,
                    nodes=None) -> dict:
    """Sound interval bounds on every node (or on ``nodes``), tightened by ``given``.

    ``given`` maps node -> (lo, hi) proven bounds (validated, then intersected
    with the propagated ones); the input node always gets the box.  The
    propagation is :func:`leo_verify.analysis.bounds.interval_bounds` (rigorous
    outward rounding): one interval rule set for the whole package.
    """
    inp = graph.input_name
    checked = {n: _given(n, graph.size_of(n), pair) for n, pair in (given or {}).items() if n != inp}
    out = _sound_intervals(graph, box, known=checked)
    return out if nodes is None else {n: v for n, v in out.items() if n in nodes}


# -- encoders ---------------------------------------------------------------

@dataclass
class _Ctx:
    """What the per-op encoders share."""

    enc: Encoding
    bounds: dict
    fixed: Mapping
    relu_arg: dict  # relu node -> the node of its pre-activations

    @property
    def prog(self) -> Program:
        return self.enc.program


def _new_vars(ctx: _Ctx, name: str, lo, hi) -> np.ndarray:
    return np.array([ctx.prog.add_var(f"{name}[{i}]", lo[i], hi[i]) for i in range(len(lo))],
                    dtype=np.int64)


def _enc_input(ctx: _Ctx, name, op, args):
    lo, hi = ctx.bounds[name]
    ids = _new_vars(ctx, name, lo, hi)
    ctx.enc.inputs = ids
    return ids


def _enc_affine(ctx: _Ctx, name, op, args):
    # z = W x + b as explicit variables with their proven bounds: the bounds
    # are what makes the big-M rows tight and the solver's propagation strong.
    #
    # Solvers treat tiny coefficients as zero (SCIP's epsilon and HiGHS'
    # small_matrix_value are ~1e-9; HiGHS drops them with a warning).  A
    # silently dropped term would change the model, so we drop terms below
    # SMALL_COEF ourselves and turn the equality into a range wide enough to
    # hold every value they can take: a sound relaxation (witnesses are
    # replayed exactly anyway).
    lo, hi = ctx.bounds[name]
    xs = args[0]
    arg_name = ctx.enc.graph.args(name)[0]
    alo, ahi = ctx.bounds[arg_name]
    amax = np.maximum(np.abs(alo), np.abs(ahi))
    ids = _new_vars(ctx, name, lo, hi)
    for i, z in enumerate(ids):
        row = op.weight[i]
        tiny = (np.abs(row) < SMALL_COEF) & (row != 0.0)
        coefs = {int(x): float(w) for x, w, t in zip(xs, row, tiny) if w != 0.0 and not t}
        coefs[int(z)] = coefs.get(int(z), 0.0) - 1.0
        b = -float(op.bias[i])
        slack = 0.0
        if np.any(tiny):
            slack = 2.0 * float(np.abs(row[tiny]) @ amax[tiny]) + 1e-300
        ctx.prog.add_row(coefs, b - slack, b + slack, name=f"{name}[{i}]")
    return ids


def _enc_add(ctx: _Ctx, name, op, args):
    lo, hi = ctx.bounds[name]
    ids = _new_vars(ctx, name, lo, hi)
    for i, s in enumerate(ids):
        coefs: dict = {}
        for a in args:  # two arguments may share a variable (an active ReLU and its input)
            coefs[int(a[i])] = coefs.get(int(a[i]), 0.0) + 1.0
        coefs[int(s)] = coefs.get(int(s), 0.0) - 1.0
        ctx.prog.add_row(coefs, 0.0, 0.0, name=f"{name}[{i}]")
    return ids


def _phase(ctx: _Ctx, nid: str, lo: float, hi: float) -> str:
    fixed = ctx.fixed.get(nid)
    if fixed is not None:
        if fixed not in PHASES:
            raise ValueError(f"neuron {nid!r}: fixed phase {fixed!r} is not one of {PHASES}")
        if (fixed == "active" and hi < 0) or (fixed == "inactive" and lo > 0):
            raise ValueError(f"neuron {nid!r} is fixed {fixed} but its bounds are [{lo}, {hi}]")
        return fixed
    if hi <= 0:
        return "inactive"
    if lo >= 0:
        return "active"
    return "unstable"


def _relu_unit(ctx: _Ctx, nid: str, z: int, lo: float, hi: float) -> int:
    prog = ctx.prog
    phase = _phase(ctx, nid, lo, hi)
    ctx.enc.phases[nid] = phase
    ctx.enc.preact[nid] = z
    if phase == "inactive":
        # A proven-inactive z is <= 0 on the whole box: saying so is sound
        # and lets the solver propagate it upwards.
        prog.tighten(z, ub=0.0)
        return prog.add_var(f"{nid}.y", 0.0, 0.0)
    if phase == "active":
        prog.tighten(z, lb=0.0)
        return z  # y = z: share the variable instead of adding a row
    # Solvers drop tiny matrix entries (HiGHS: below 1e-9), which would turn
    # the big-M rows into y <= z or y <= 0, cutting off real points; widening
    # the constants to at least _MIN_M only loosens (relaxes) the encoding.
    lo, hi = min(lo, -_MIN_M), max(hi, _MIN_M)
    y = prog.add_var(f"{nid}.y", 0.0, hi)
    a = prog.add_var(f"{nid}.a", 0.0, 1.0, integer=True)
    ctx.enc.binaries[nid] = a
    prog.add_row({y: 1.0, z: -1.0}, 0.0, math.inf, name=f"{nid}.ge")          # y >= z
    prog.add_row({y: 1.0, z: -1.0, a: -lo}, -math.inf, -lo, name=f"{nid}.le")  # y <= z - lo(1-a)
    prog.add_row({y: 1.0, a: -hi}, -math.inf, 0.0, name=f"{nid}.on")          # y <= hi a
    return y


def _enc_relu(ctx: _Ctx, name, op, args):
    lo, hi = ctx.bounds[ctx.relu_arg[name]]
    ys = [_relu_unit(ctx, nid, int(args[0][i]), float(lo[i]), float(hi[i]))
          for i, nid in enumerate(op.neurons)]
    return np.array(ys, dtype=np.int64)


def _enc_output(ctx: _Ctx, name, op, args):
    return args[0]


#: op kind -> encoder(ctx, node name, op, argument variable arrays) -> variable array.
ENCODERS: Mapping[str, Callable] = {
    "input": _enc_input,
    "affine": _enc_affine,
    "relu": _enc_relu,
    "add": _enc_add,
    "output": _enc_output,
}


def _ancestors(graph: Graph, upto: str | None) -> set | None:
    if upto is None:
        return None
    if upto not in graph:
        raise ValueError(f"encode: node {upto!r} is not in graph {graph.name!r}")
    return nx.ancestors(graph.nx, upto) | {upto}


def encode(graph: Graph, box: Box, bounds: Mapping | None = None, *, upto: str | None = None,
           fixed: Mapping[str, str] | None = None) -> Encoding:
    """The MILP of ``graph`` over ``box``.

    Parameters
    ----------
    graph, box : the network and the input box (sizes must agree).
    bounds : node -> (lo, hi) arrays of proven bounds.  Needed for sound,
        tight ReLU encodings on the nodes that feed a ReLU; any node missing
        gets interval bounds propagated from its arguments.
    upto : encode only this node and its ancestors (LEO's per-layer MILP).
    fixed : neuron id -> ``"active"`` | ``"inactive"`` for neurons already
        proven stable; they get no binary.

    Returns
    -------
    Encoding
    """
    box.check_size(graph.input_size)
    keep = _ancestors(graph, upto)
    order = [n for n in graph.nodes() if keep is None or n in keep]
    known = interval_bounds(graph, box, given=bounds, nodes=set(order))
    ctx = _Ctx(Encoding(Program(), graph), known,
               dict(fixed or {}),
               {n: graph.args(n)[0] for n in order if graph.op(n).kind == "relu"})
    for name in order:
        op = graph.op(name)
        fn = ENCODERS.get(op.kind)
        if fn is None:
            raise UnsupportedOp(f"node {name!r}: op {op.kind!r} has no MILP encoding")
        args = [ctx.enc.node_vars[a] for a in graph.args(name)]
        ctx.enc.node_vars[name] = fn(ctx, name, op, args)
        ctx.enc.nodes.append(name)
    return ctx.enc
