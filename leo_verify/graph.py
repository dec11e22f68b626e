"""The network IR: a typed facade over :class:`networkx.DiGraph`.

A network is a dataflow graph whose nodes are operations on 1-D vectors (a
batch dimension is implicit):

``input``   the network input (exactly one),
``affine``  ``y = W x + b`` with a dense weight ``W`` (out x in) and bias ``b``,
``relu``    ``y = max(x, 0)`` element-wise; it owns the *neuron ids*,
``add``     ``y = x_0 + x_1 + ...`` (residual connections),
``output``  the network output (exactly one, identity on the logits; it may
            carry an output *head*, see :class:`Output` and :mod:`leo_verify.heads`).

Edges carry vectors; the edge attribute ``index`` is the argument position.

Payloads are frozen dataclasses with read-only arrays, so a pass that wants
to change a node builds a new op and a new graph (``Graph.copy`` then
``replace``): analyses can hold on to a graph without fearing mutation.

Neuron identity: each ReLU unit has an id ``"<node>[<i>]"`` fixed at load time
from the user's layer name and the unit's original index.  Rewrites keep the
ids of the units they keep, so reports always speak of the user's neurons.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Iterable, Iterator, Mapping, Union

import networkx as nx
import numpy as np

from .conv_layout import ConvLayout
from .errors import GraphError

__all__ = [
    "Input", "Affine", "Relu", "Add", "Output", "Op", "Graph", "neuron_id", "HEAD_NAMES",
]


def neuron_id(layer: str, index: int) -> str:
    """The stable id of unit ``index`` of the ReLU layer named ``layer``."""
    return f"{layer}[{index}]"


def _frozen_array(a, *, name: str, ndim: int) -> np.ndarray:
    arr = np.array(a, dtype=np.float64, copy=True)
    if arr.ndim != ndim:
        raise GraphError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Input:
    """The network input: a vector of ``size`` reals.

    ``shape`` is the tensor shape the source model declared (informational;
    the emitters take the source's input layout from ``Graph.metadata["io"]``,
    else a ``[batch, size]`` input).
    """

    size: int
    shape: tuple = ()
    kind: ClassVar[str] = "input"
    arity: ClassVar[int] = 0


@dataclass(frozen=True, eq=False)
class Affine:
    """``y = W x + b``.

    Parameters
    ----------
    weight : array (out, in), stored as read-only float64.
    bias : array (out,), stored as read-only float64.
    exact : optional pair ``(W, b)`` of object arrays of :class:`Fraction`.
        When present, these *are* the weights of the real-valued network (the
        float arrays are their rounding); when absent the exact weights are the
        rationals of the stored floats, ``Fraction(float(w))``.
    layout : optional :class:`~leo_verify.conv_layout.ConvLayout`: the convolution whose
        unrolled matrix ``W`` is (checked here, exactly; only without ``exact``).  Writers
        then emit a ``Conv``; the semantics is ``W`` either way.
    """

    weight: np.ndarray
    bias: np.ndarray
    exact: tuple | None = None
    layout: ConvLayout | None = None
    kind: ClassVar[str] = "affine"
    arity: ClassVar[int] = 1

    def __post_init__(self):
        w = _frozen_array(self.weight, name="affine weight", ndim=2)
        b = _frozen_array(self.bias, name="affine bias", ndim=1)
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias", b)
        if self.layout is not None:
            why = "it has exact weights" if self.exact is not None else self.layout.check(w, b)
            if why:
                raise GraphError(f"affine op with a convolution layout: {why}")
        if self.exact is not None:
            ew, eb = self.exact
            ew = np.array(ew, dtype=object)
            eb = np.array(eb, dtype=object)
            if ew.shape != w.shape or eb.shape != b.shape:
                raise GraphError(
                    f"exact weights have shapes {ew.shape}/{eb.shape}, float weights {w.shape}/{b.shape}")
            ew.setflags(write=False)
            eb.setflags(write=False)
            object.__setattr__(self, "exact", (ew, eb))

    @property
    def size(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_size(self) -> int:
        return int(self.weight.shape[1])

    @property
    def parameters(self) -> int:
        """Parameters as emitted: the kernel of a convolution, else the dense weight and bias."""
        if self.layout is not None:
            return self.layout.parameters
        return int(self.weight.size + self.bias.size)

    def rational(self) -> tuple[np.ndarray, np.ndarray]:
        """The exact weights as object arrays of :class:`Fraction`."""
        if self.exact is not None:
            return self.exact
        cached = self.__dict__.get("_rational")
        if cached is None:
            to_q = np.frompyfunc(lambda v: Fraction(float(v)), 1, 1)
            cached = (to_q(self.weight).astype(object), to_q(self.bias).astype(object))
            object.__setattr__(self, "_rational", cached)
        return cached

    @classmethod
    def from_rational(cls, weight, bias) -> "Affine":
        """An affine op whose exact weights are the given rationals."""
        ew = np.array(weight, dtype=object)
        eb = np.array(bias, dtype=object)
        to_f = np.frompyfunc(float, 1, 1)
        return cls(to_f(ew).astype(np.float64) if ew.size else np.zeros(ew.shape),
                   to_f(eb).astype(np.float64) if eb.size else np.zeros(eb.shape),
                   exact=(ew, eb))


@dataclass(frozen=True, eq=False)
class Relu:
    """Element-wise ``max(x, 0)``; ``neurons`` are the stable ids of its units."""

    neurons: tuple
    kind: ClassVar[str] = "relu"
    arity: ClassVar[int] = 1

    def __post_init__(self):
        object.__setattr__(self, "neurons", tuple(str(n) for n in self.neurons))

    @property
    def size(self) -> int:
        return len(self.neurons)


@dataclass(frozen=True, eq=False)
class Add:
    """Element-wise sum of ``arity`` vectors of equal size (residual add)."""

    size: int
    arity: int = 2
    kind: ClassVar[str] = "add"


#: output heads (see :mod:`leo_verify.heads`); ``"none"``: the outputs are the logits
HEAD_NAMES = ("none", "softmax", "logsoftmax", "sigmoid", "tanh", "argmax")


@dataclass(frozen=True, eq=False)
class Output:
    """The network output; ``shape`` is the source model's declared shape.

    ``size`` is the number of *logits*: the value of the output node is its
    argument (identity).  ``head`` is the operation the source model applies
    after the last affine layer (one of :data:`HEAD_NAMES`) and ``head_attrs``
    its attributes as ``(name, value)`` pairs, kept verbatim for the writers
    (ONNX attribute names: ``axis``, ``keepdims``, ``select_last_index``).
    Analyses, provers and certificates work on the logits; equal logits give
    equal head outputs (:mod:`leo_verify.heads`).
    """

    size: int
    shape: tuple = ()
    head: str = "none"
    head_attrs: tuple = ()
    kind: ClassVar[str] = "output"
    arity: ClassVar[int] = 1

    def __post_init__(self):
        if self.head not in HEAD_NAMES:
            raise GraphError(f"output head {self.head!r} is not one of {', '.join(HEAD_NAMES)}")
        attrs = []
        for pair in self.head_attrs:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
                    and isinstance(pair[1], (int, float, str)) and not isinstance(pair[1], bool)):
                raise GraphError(f"output head attribute {pair!r} is not a (name, number) pair")
            attrs.append((pair[0], int(pair[1]) if isinstance(pair[1], int) else pair[1]))
        if len({k for k, _ in attrs}) != len(attrs):
            raise GraphError(f"output head attributes {attrs} repeat a name")
        if self.head == "none" and attrs:
            raise GraphError(f"output without a head has head attributes {attrs}")
        object.__setattr__(self, "head_attrs", tuple(attrs))

    def head_key(self) -> tuple:
        """What determines the head's values given the logits: the head and, for
        ``argmax``, its tie rule (first or last index).  ``axis`` is always the
        logit axis and ``keepdims`` only shapes the result."""
        if self.head == "argmax":
            return ("argmax", "last" if int(dict(self.head_attrs).get("select_last_index", 0))
                    else "first")
        return (self.head,)

    def head_text(self) -> str:
        """E.g. ``softmax(axis=1)`` or ``none``."""
        if not self.head_attrs:
            return self.head
        return f"{self.head}({', '.join(f'{k}={v}' for k, v in self.head_attrs)})"


Op = Union[Input, Affine, Relu, Add, Output]
OP_TYPES = (Input, Affine, Relu, Add, Output)


class Graph:
    """A network: a DAG of named operations with ordered arguments.

    Build with :meth:`add`; passes work on a :meth:`copy` and :meth:`replace`
    ops, so the graph a caller holds never changes under them.
    """

    def __init__(self, *, name: str = "network", metadata: Mapping | None = None):
        self._g = nx.DiGraph()
        self.name = name
        self.metadata: dict = dict(metadata or {})
        # the topological order, cached: every interpreter, bound and encoder walks it, and
        # networkx recomputes it on each call; add / rewire / remove clear it (replace keeps
        # the structure, and the networkx graph is only handed out as a read-only view)
        self._order: tuple | None = None
        # node -> its arguments in order, cached for the same reason (a CROWN walk asks
        # hundreds of thousands of times); cleared with the order
        self._args: dict = {}

    # -- construction -------------------------------------------------
    def add(self, name: str, op: Op, inputs: Iterable[str] = ()) -> str:
        """Add node ``name`` computing ``op`` on ``inputs`` (in argument order)."""
        if not isinstance(op, OP_TYPES):
            raise GraphError(f"node {name!r}: {type(op).__name__} is not an op")
        if name in self._g:
            raise GraphError(f"node {name!r} already exists")
        inputs = list(inputs)
        for src in inputs:
            if src not in self._g:
                raise GraphError(f"node {name!r}: argument {src!r} does not exist")
        self._order = None
        self._args = {}
        self._g.add_node(name, op=op)
        for i, src in enumerate(inputs):
            if self._g.has_edge(src, name):
                # nx.DiGraph has no parallel edges: x + x must be written 2x.
                raise GraphError(f"node {name!r}: argument {src!r} given twice")
            self._g.add_edge(src, name, index=i)
        return name

    def fresh_name(self, base: str) -> str:
        """A node name not yet used, derived from ``base``."""
        if base not in self._g:
            return base
        k = 1
        while f"{base}_{k}" in self._g:
            k += 1
        return f"{base}_{k}"

    def replace(self, name: str, op: Op) -> None:
        """Replace the op of ``name`` (only on a graph you own, e.g. a copy)."""
        if name not in self._g:
            raise GraphError(f"node {name!r} does not exist")
        self._g.nodes[name]["op"] = op

    def rewire(self, name: str, inputs: Iterable[str]) -> None:
        """Replace the arguments of ``name``."""
        self._order = None
        self._args = {}
        for src in list(self._g.predecessors(name)):
            self._g.remove_edge(src, name)
        for i, src in enumerate(inputs):
            if self._g.has_edge(src, name):
                raise GraphError(f"node {name!r}: argument {src!r} given twice")
            self._g.add_edge(src, name, index=i)

    def remove(self, name: str) -> None:
        self._order = None
        self._args = {}
        self._g.remove_node(name)

    def copy(self) -> "Graph":
        g = Graph(name=self.name, metadata=dict(self.metadata))
        g._g = self._g.copy()  # ops are immutable: sharing them is safe
        g._order = self._order
        return g

    # -- queries ------------------------------------------------------
    def __contains__(self, name) -> bool:
        return name in self._g

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def op(self, name: str) -> Op:
        return self._g.nodes[name]["op"]

    def args(self, name: str) -> list[str]:
        """Arguments of ``name`` in argument order."""
        cached = self._args.get(name)
        if cached is None:
            preds = [(d["index"], s) for s, _, d in self._g.in_edges(name, data=True)]
            cached = self._args[name] = tuple(s for _, s in sorted(preds))
        return list(cached)

    def users(self, name: str) -> list[str]:
        return sorted(self._g.successors(name))

    def nodes(self) -> list[str]:
        """Node names in a deterministic topological order."""
        if self._order is not None:
            return list(self._order)
        try:
            self._order = tuple(nx.lexicographical_topological_sort(self._g))
            return list(self._order)
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(self._g)
            raise GraphError(f"graph {self.name!r} has a cycle through {cycle[0][0]!r}") from None

    def items(self) -> Iterator[tuple[str, Op]]:
        for n in self.nodes():
            yield n, self.op(n)

    def _only(self, kind: str) -> str:
        found = [n for n, d in self._g.nodes(data=True) if d["op"].kind == kind]
        if len(found) != 1:
            raise GraphError(f"graph {self.name!r} must have exactly one {kind} node, found {len(found)}")
        return found[0]

    @property
    def input_name(self) -> str:
        return self._only("input")

    @property
    def output_name(self) -> str:
        return self._only("output")

    @property
    def input_size(self) -> int:
        return self.op(self.input_name).size

    @property
    def output_size(self) -> int:
        return self.op(self.output_name).size

    def size_of(self, name: str) -> int:
        return self.op(name).size

    @property
    def nx(self) -> nx.DiGraph:
        """A read-only view of the underlying networkx graph."""
        return self._g.copy(as_view=True)

    def relus(self) -> list[tuple[str, Relu]]:
        return [(n, op) for n, op in self.items() if op.kind == "relu"]

    def neurons(self) -> list[str]:
        return [nid for _, op in self.relus() for nid in op.neurons]

    def num_parameters(self) -> int:
        return sum(op.parameters for _, op in self.items() if op.kind == "affine")

    def is_chain(self) -> bool:
        """True if every node has at most one argument and one user."""
        return all(self._g.in_degree(n) <= 1 and self._g.out_degree(n) <= 1 for n in self._g)

    def hidden_layers(self) -> list[tuple[str, int]]:
        """(ReLU node, width) in topological order."""
        return [(n, op.size) for n, op in self.relus()]

    def summary(self) -> dict:
        layers = self.hidden_layers()
        return {
            "name": self.name,
            "inputs": self.input_size,
            "outputs": self.output_size,
            "hidden_layers": len(layers),
            "widths": [w for _, w in layers],
            "layer_names": [n for n, _ in layers],
            "neurons": sum(w for _, w in layers),
            "parameters": self.num_parameters(),
            "nodes": {k: sum(1 for _, op in self.items() if op.kind == k)
                      for k in ("input", "affine", "relu", "add", "output")},
        }

    # -- validation ---------------------------------------------------
    def lint(self, *, where: str | None = None) -> "Graph":
        """Check the graph; raise :class:`GraphError` naming the bad node.

        ``where`` names the pass (or loader) that produced the graph, so a
        failure says who broke it.  Returns ``self`` for chaining.
        """
        prefix = f"after {where}: " if where else ""

        def fail(msg):
            raise GraphError(f"{prefix}graph {self.name!r}: {msg}")

        if not nx.is_directed_acyclic_graph(self._g):
            cycle = nx.find_cycle(self._g)
            fail(f"cycle through node {cycle[0][0]!r}")
        for kind in ("input", "output"):
            found = [n for n, d in self._g.nodes(data=True) if d["op"].kind == kind]
            if len(found) != 1:
                fail(f"must have exactly one {kind} node, found {len(found)}: {sorted(found)}")
        seen_ids: dict[str, str] = {}
        for name in self.nodes():
            op = self.op(name)
            args = self.args(name)
            idx = sorted(d["index"] for _, _, d in self._g.in_edges(name, data=True))
            if idx != list(range(len(idx))):
                fail(f"node {name!r}: argument positions {idx} are not 0..{len(idx) - 1}")
            if len(args) != op.arity:
                fail(f"node {name!r} ({op.kind}) takes {op.arity} argument(s), has {len(args)}")
            if op.kind == "add" and op.arity < 2:
                fail(f"node {name!r}: add needs at least 2 arguments, has arity {op.arity}")
            if op.kind == "output" and self._g.out_degree(name):
                fail(f"node {name!r}: the output node has users {self.users(name)}")
            sizes = [self.op(a).size for a in args]
            if op.kind == "affine":
                if sizes[0] != op.in_size:
                    fail(f"node {name!r}: weight expects {op.in_size} inputs, argument "
                         f"{args[0]!r} has size {sizes[0]}")
                if op.bias.shape[0] != op.size:
                    fail(f"node {name!r}: bias has {op.bias.shape[0]} entries, weight {op.size} rows")
                for label, arr in (("weight", op.weight), ("bias", op.bias)):
                    bad = np.argwhere(~np.isfinite(arr))
                    if bad.size:
                        at = tuple(int(i) for i in bad[0])
                        fail(f"node {name!r}: {label}{list(at)} = {arr[at]} is not finite")
            elif op.kind in ("relu", "add", "output"):
                for a, s in zip(args, sizes):
                    if s != op.size:
                        fail(f"node {name!r} ({op.kind}, size {op.size}): argument {a!r} has size {s}")
            if op.size <= 0 and op.kind in ("input", "output"):
                fail(f"node {name!r}: {op.kind} has size {op.size}")
            if op.kind == "relu":
                for nid in op.neurons:
                    if nid in seen_ids:
                        fail(f"neuron id {nid!r} appears in {seen_ids[nid]!r} and {name!r}")
                    seen_ids[nid] = name
        out = self.output_name
        live = nx.ancestors(self._g, out) | {out}
        dead = sorted(set(self._g) - live)
        if dead:
            fail(f"node {dead[0]!r} does not reach the output")
        inp = self.input_name
        reach = nx.descendants(self._g, inp) | {inp}
        # affine nodes may be constant (weight with zero columns is still fed
        # by the input); every node must depend on the input.
        orphan = sorted(set(self._g) - reach)
        if orphan:
            fail(f"node {orphan[0]!r} does not depend on the input")
        return self

    def __repr__(self) -> str:
        s = self.summary()
        return (f"Graph({self.name!r}: {s['inputs']} -> {s['widths']} -> {s['outputs']}, "
                f"{s['parameters']} parameters)")
