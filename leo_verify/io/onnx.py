"""ONNX reader and writer.

Reader
------
The reader traces the ONNX graph symbolically.  Every tensor is either

* a **constant** numpy array (initializers, ``Constant`` nodes, shape ops
  applied to constants), or
* a **pending affine value** :class:`_Pending` ``(src, W, b, shape)``:
  ``flat(tensor) = W @ value(src) + b`` where ``src`` is a node of the
  :class:`~leo_verify.graph.Graph` being built.

Linear ONNX ops (MatMul, Gemm, Add/Sub/Mul/Div by a constant, shape ops,
BatchNormalization) are composed into the pending value; a ``Relu`` (or the
graph output, or a residual ``Add``) *materializes* it as an ``Affine`` node.

Exactness rule.  This is a verification tool: the loaded graph must compute
exactly the network the file describes.  Composing two affine maps in
float64 rounds, so a linear op ``(M, c)`` is composed into ``(W, b)`` only
when the result is exact:

* ``M @ W`` is exact when ``W`` is a partial permutation (each row and column
  holds at most one non-zero, equal to 1.0) or ``M`` is a row selection;
* ``M @ b + c`` is exact when ``b == 0`` (it is ``c``) or when ``M`` is a row
  selection and ``c == 0`` (it is a selection of ``b``).

Otherwise the pending value is first materialized as its own ``Affine`` node.
For example ``Sub(mean) -> MatMul -> Add`` becomes two affine nodes when the
mean is non-zero, one when it is zero; ``Gemm(transB=1)`` with a bias is one.

Two ops cannot be represented exactly by float64 weights: ``Div`` by a
constant that is not a power of two (its weight ``1/d`` becomes an ``Affine``
with exact rational weights, see :meth:`Affine.from_rational`), and
``BatchNormalization``, whose ``gamma / sqrt(var + eps)`` is irrational in
general: it is folded in float64 and *that* affine map is, by definition, the
network we verify.

Hostile and malformed files
---------------------------
Every problem is one :class:`ModelFormatError` (exit 5), :class:`UnsupportedOp`
(6) or :class:`GraphError` (7) naming the file and, where it applies, the
node, tensor or value; nothing else escapes (``tests/test_fuzz_readers.py``
fuzzes this).  In order:

1. files over :data:`leo_verify.io.limits.MAX_FILE_BYTES` are refused before
   they are read; undecodable / truncated bytes are refused;
2. *before* ``onnx.checker`` or numpy sees a tensor (:func:`_prevalidate`):
   tensors stored as **external data** are refused, anywhere in the model
   (initializers, Constant attributes, subgraphs, functions).  External data
   is not supported at all, wherever it points (``../secret``, an absolute
   path, a symlink leaving the folder, or a file next to the model): the
   model is parsed from bytes (``onnx.load_model_from_string``, which never
   loads external data) and no external file is ever opened.  Declared
   tensor shapes with negative dims or more than
   :data:`~leo_verify.io.limits.MAX_ELEMENTS` elements (computed with Python
   integers, so overflowing int64 products are caught) are refused without
   allocating; names that are not UTF-8, dangling inputs, cycles and nodes out
   of topological order are named;
3. ``onnx.checker.check_model`` (schema, attribute and arity checks);
4. while tracing: network values larger than
   :data:`~leo_verify.io.limits.MAX_VALUE_SIZE`, dense matrices larger than
   ``MAX_ELEMENTS`` and exact-rational matrices larger than
   :data:`~leo_verify.io.limits.MAX_RATIONAL_ENTRIES` are refused before they
   are built, and so is a model whose matrices, rational entries or ReLU units
   add up to more than ``MAX_TOTAL_ELEMENTS``, ``MAX_TOTAL_RATIONAL_ENTRIES``
   or ``MAX_NEURONS`` (a tiny file repeating ``Mul`` by a scalar and ``Relu``
   would otherwise build n x n matrices without end); numpy's arithmetic
   warnings are silenced (non-finite weights are reported by
   :meth:`Graph.lint`).

Writer
------
:func:`to_onnx_model` emits ``input [batch, n] -> Gemm(transB=1) / Relu / Add
-> Identity -> output [batch, m]`` at opset 13 by default; with the source's
input/output names and shapes (``graph.metadata["io"]``) it keeps them, with a
leading ``Flatten``/``Reshape`` and a trailing ``Reshape`` where the layout
needs them, and ends with the output head instead of the ``Identity`` when the
network has one (see :func:`to_onnx_model`).

Output heads: ``Softmax``, ``LogSoftmax``, ``Sigmoid``, ``Tanh`` and ``ArgMax``
are read only as the last operation (followed by nothing but ``Identity``),
over the last axis of a tensor whose other dims are 1 (the logits of one
sample); they become the ``head`` of the :class:`~leo_verify.graph.Output`
op.  A head anywhere else is an :class:`UnsupportedOp` naming its node.
"""
from __future__ import annotations

import contextvars
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

from ..errors import GraphError, InputFileError, LeoError, ModelFormatError, UnsupportedOp
from ..graph import Add, Affine, Graph, Input, Output, Relu, neuron_id
from ..util import atomic_write_bytes, read_model_bytes
from . import limits

__all__ = ["load_onnx", "graph_from_onnx_model", "save_onnx", "to_onnx_model", "SUPPORTED_OPS"]

_FLOAT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64"}
_DTYPES = {"float32": (np.float32, TensorProto.FLOAT), "float64": (np.float64, TensorProto.DOUBLE)}


# ---------------------------------------------------------------------------
# symbolic values
# ---------------------------------------------------------------------------
class _Pending:
    """``flat(tensor) = W @ value(src) + b``, a tensor of shape ``shape``.

    ``perm`` is set when ``W`` is a partial permutation: ``perm[i]`` is the
    column of the single 1.0 in row i (-1 for a zero row), the columns being
    distinct.  ``bzero`` says ``b == 0``.  These flags make the exactness
    checks O(1) instead of scanning matrices.  When ``perm`` is set, the
    dense ``W`` is only built on demand (an identity on a 3072-pixel input
    would cost 75 MB).  The graph node holding the value, once materialized,
    is cached in a cell shared with reshaped copies (same ``W``, ``b``), so a
    tensor used twice becomes one node.
    """

    def __init__(self, src: str, n_src: int, W, b, shape, perm, bzero: bool, label: str):
        self.src, self.n_src, self._W, self.b = src, int(n_src), W, b
        self.shape, self.perm, self.bzero, self.label = tuple(shape), perm, bool(bzero), label
        self.cell = [None]

    @property
    def size(self) -> int:
        return int(self.b.shape[0])

    @property
    def W(self) -> np.ndarray:
        if self._W is None:
            _need_dense(self.size, self.n_src, "a permutation matrix")
            W = np.zeros((self.size, self.n_src))
            rows = np.nonzero(self.perm >= 0)[0]
            W[rows, self.perm[rows]] = 1.0
            self._W = W
        return self._W

    @property
    def node(self) -> str | None:
        return self.cell[0]

    def reshaped(self, shape: tuple) -> "_Pending":
        q = _Pending(self.src, self.n_src, self._W, self.b, shape, self.perm, self.bzero, self.label)
        q.cell = self.cell  # same flat value
        return q

    @classmethod
    def identity(cls, node: str, size: int, shape: tuple, label: str) -> "_Pending":
        p = cls(node, size, None, np.zeros(size), shape, np.arange(size), True, label)
        p.cell[0] = node
        return p

    def is_identity(self) -> bool:
        n = self.n_src
        return (self.bzero and self.perm is not None and len(self.perm) == n
                and bool(np.all(self.perm == np.arange(n))))


@dataclass
class _Lin:
    """A linear op ``flat(out) = M @ flat(in) + c`` producing a tensor of ``shape``.

    ``M`` is either a row selection (``select[i]`` is the input entry row i
    copies) or a dense ``matrix``; ``offset`` is ``c`` (None means zero).
    """

    shape: tuple
    select: np.ndarray | None = None
    matrix: np.ndarray | None = None
    offset: np.ndarray | None = None


def _size(shape) -> int:
    # Python integers: a product of hostile dims must not wrap around in int64
    return math.prod(int(s) for s in shape)


class _Limit(Exception):
    """A size limit of :mod:`leo_verify.io.limits` would be exceeded; the tracer
    turns it into a :class:`ModelFormatError` naming the file and node."""


#: the running totals of the load in progress (see :class:`limits.Budget`)
_BUDGET: contextvars.ContextVar = contextvars.ContextVar("leo_verify_onnx_budget", default=None)


def _spend(kind: str, n: int, what: str) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        msg = budget.add(kind, n)
        if msg:
            raise _Limit(f"{what}: {msg}")


def _need_dense(rows: int, cols: int, what: str) -> None:
    """Refuse to build a ``rows x cols`` matrix beyond ``limits.MAX_ELEMENTS``
    (or beyond ``MAX_TOTAL_ELEMENTS`` for the whole model)."""
    n = int(rows) * int(cols)
    if n > limits.MAX_ELEMENTS:
        raise _Limit(f"{what} would need a {rows} x {cols} matrix ({limits.describe(n)} entries), "
                     f"more than the limit of {limits.MAX_ELEMENTS} (leo_verify.io.limits."
                     f"MAX_ELEMENTS)")
    _spend("elements", n, what)


def _need_rational(rows: int, cols: int, what: str) -> None:
    n = int(rows) * int(cols)
    if n > limits.MAX_RATIONAL_ENTRIES:
        raise _Limit(f"{what} would need a {rows} x {cols} matrix of exact rationals "
                     f"({limits.describe(n)} entries), more than the limit of "
                     f"{limits.MAX_RATIONAL_ENTRIES} (leo_verify.io.limits.MAX_RATIONAL_ENTRIES)")
    _spend("rational", n, what)


def _need_value(shape, what: str = "a network value") -> None:
    """Refuse a tensor computed by the network beyond ``limits.MAX_VALUE_SIZE`` values."""
    n = _size(shape)
    if n > limits.MAX_VALUE_SIZE:
        raise _Limit(f"{what} of shape {_shape_text(shape)} has {limits.describe(n)} values, more "
                     f"than the limit of {limits.MAX_VALUE_SIZE} (leo_verify.io.limits."
                     f"MAX_VALUE_SIZE)")


def _need_const(shape, what: str = "a constant") -> None:
    n = _size(shape)
    if n > limits.MAX_ELEMENTS:
        raise _Limit(f"{what} of shape {_shape_text(shape)} has {limits.describe(n)} elements, "
                     f"more than the limit of {limits.MAX_ELEMENTS} "
                     f"(leo_verify.io.limits.MAX_ELEMENTS)")


def _shape_text(shape, limit: int = 12) -> str:
    dims = [str(d) for d in shape]
    return "[" + ", ".join(dims if len(dims) <= limit else dims[:limit] + ["..."]) + "]"


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_const(v) -> bool:
    return isinstance(v, np.ndarray)


def _unique(idx: np.ndarray) -> bool:
    return len(np.unique(idx)) == len(idx)


# ---------------------------------------------------------------------------
# exact float64 constant arithmetic
# ---------------------------------------------------------------------------
def _split(a):
    # Veltkamp split: a = hi + lo with 26-bit halves, so hi*hi etc. are exact.
    c = 134217729.0 * a  # 2**27 + 1
    hi = c - (c - a)
    return hi, a - hi


def _exact_mul(a, b):
    """``a * b`` in float64, or None if some product rounds (Dekker's TwoProduct)."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    with np.errstate(all="ignore"):
        p = a * b
        ah, al = _split(a)
        bh, bl = _split(b)
        err = (((ah * bh - p) + ah * bl) + al * bh) + al * bl
        # the error-free transform needs no overflow in the split and no
        # underflow in the product; outside that range be conservative.
        safe = (np.abs(a) < 2.0 ** 995) & (np.abs(b) < 2.0 ** 995) & (
            (np.abs(p) >= 2.0 ** -969) | (a == 0) | (b == 0))
    ok = np.isfinite(p) & safe & (err == 0)
    return p if bool(np.all(ok)) else None


def _exact_add(a, b):
    """``a + b`` in float64, or None if some sum rounds (Knuth's TwoSum)."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    with np.errstate(all="ignore"):
        s = a + b
        bb = s - a
        err = (a - (s - bb)) + (b - bb)
    return s if bool(np.all(np.isfinite(s) & (err == 0))) else None


def _is_pow2(d: np.ndarray) -> bool:
    m, _ = np.frexp(d)
    return bool(np.all(np.abs(m) == 0.5))


# ---------------------------------------------------------------------------
# the tracer
# ---------------------------------------------------------------------------
class _Tracer:
    """Walks the ONNX nodes in order and builds the :class:`Graph`."""

    def __init__(self, model: onnx.ModelProto, source: str, name: str):
        self.model = model
        self.source = source
        self.graph = Graph(name=name)
        self.values: dict = {}
        self.opset = _default_opset(model)
        self.where = ""  # "node 'x' (Op)" while a node is being traced
        self.label = ""

    # -- errors ---------------------------------------------------------
    def error(self, msg: str, cls=ModelFormatError) -> LeoError:
        at = f" {self.where}:" if self.where else ""
        return cls(f"ONNX model {self.source!r}:{at} {msg}")

    # -- pending values ---------------------------------------------------
    def materialize(self, p: _Pending) -> str:
        """The graph node holding ``p``, creating an ``Affine`` if needed."""
        if p.node is None:
            if p.is_identity():
                p.cell[0] = p.src
            else:
                name = self.graph.fresh_name(p.label)
                p.cell[0] = self.graph.add(name, Affine(p.W, p.b), [p.src])
        return p.node

    def fresh(self, node: str, shape: tuple) -> _Pending:
        """A pending value that is exactly the graph node ``node``."""
        return _Pending.identity(node, self.graph.size_of(node), shape, self.label)

    def apply(self, p: _Pending, lin: _Lin) -> _Pending:
        """Compose ``lin`` after ``p``, materializing ``p`` first unless exact."""
        _need_value(lin.shape)
        c = lin.offset
        czero = c is None or not np.any(c)
        if lin.select is not None:
            idx = lin.select
            if not (czero or p.bzero):
                # b[idx] + c would round: start afresh from the materialized value
                return self.apply(self.fresh(self.materialize(p), p.shape), lin)
            # a row selection of W is exact; the bias is b[idx] or c
            b = p.b[idx] if czero else np.array(c, dtype=np.float64)
            if p.perm is not None and _unique(idx):
                return _Pending(p.src, p.n_src, None, b, lin.shape, p.perm[idx], p.bzero and czero,
                                self.label)
            _need_dense(len(idx), p.n_src, "composing this op")
            return _Pending(p.src, p.n_src, p.W[idx], b, lin.shape, None, p.bzero and czero,
                            self.label)
        M = np.asarray(lin.matrix, dtype=np.float64)
        if M.shape[1] != p.size:  # pragma: no cover - handlers build consistent ops
            raise self.error(f"internal error: linear op of shape {M.shape} after {p.size} values")
        b = np.zeros(M.shape[0]) if czero else np.array(c, dtype=np.float64)
        if p.perm is not None and p.bzero:
            # W has a single 1.0 in each used column: M @ W just moves M's columns (exact)
            _need_dense(M.shape[0], p.n_src, "composing this op")
            W = np.zeros((M.shape[0], p.n_src))
            rows = np.nonzero(p.perm >= 0)[0]
            W[:, p.perm[rows]] = M[:, rows]
            return _Pending(p.src, p.n_src, W, b, lin.shape, None, czero, self.label)
        node = self.materialize(p)
        return _Pending(node, p.size, M, b, lin.shape, None, czero, self.label)

    def negate(self, p: _Pending) -> _Pending:
        # negation is exact for any W, b
        _need_dense(p.size, p.n_src, "negating this value")
        return _Pending(p.src, p.n_src, -p.W, -p.b, p.shape, None, p.bzero, self.label)

    def as_float(self, v: np.ndarray, what: str) -> np.ndarray:
        if v.dtype.kind != "f":
            raise self.error(f"{what} has dtype {v.dtype}, expected a floating-point tensor")
        return v.astype(np.float64)

    # -- driver -----------------------------------------------------------
    def run(self) -> Graph:
        g = self.model.graph
        if len(g.sparse_initializer):
            raise self.error("sparse initializers are not supported", UnsupportedOp)
        for t in g.initializer:
            self.values[t.name] = _tensor_to_array(t, self.source)
        real_inputs = [i for i in g.input if i.name not in self.values]
        if len(real_inputs) != 1:
            raise self.error(f"expected exactly one network input (graph inputs that are not "
                             f"initializers), found {len(real_inputs)}: {[i.name for i in real_inputs]}")
        if len(g.output) != 1:
            raise self.error(f"expected exactly one graph output, found {len(g.output)}: "
                             f"{[o.name for o in g.output]}")
        inp, out = real_inputs[0], g.output[0]
        dtype, declared, trace_shape = self.input_shape(inp)
        n = _size(trace_shape)
        in_node = self.graph.add("input", Input(n, shape=declared))
        self.label = "input"
        self.values[inp.name] = self.fresh(in_node, trace_shape)

        for node in _needed_nodes(g, out.name):
            self.trace(node)

        self.where = ""
        if out.name not in self.values:
            raise self.error(f"graph output {out.name!r} is not produced by any node")
        try:
            self.finish(out, self.values[out.name], in_node)
        except _Limit as e:
            raise self.error(str(e)) from None
        self.graph.metadata.update({
            "source": self.source, "format": "onnx", "opset": self.opset, "dtype": dtype,
            "input_name": inp.name, "output_name": out.name,
            "io": {"input": _io_entry(inp), "output": _io_entry(out)},
        })
        try:
            return self.graph.lint(where="onnx loader")
        except GraphError as e:  # e.g. a NaN weight: say which file
            raise GraphError(f"ONNX model {self.source!r}: {e}") from e

    def input_shape(self, inp):
        """(dtype name, declared shape, shape used for tracing) of the network input."""
        tt = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
        if tt is None:
            raise self.error(f"network input {inp.name!r} is not a tensor")
        if tt.elem_type not in _FLOAT_TYPES:
            et = (TensorProto.DataType.Name(tt.elem_type) if tt.elem_type in _DATA_TYPES
                  and tt.elem_type else f"undefined ({tt.elem_type})")
            raise self.error(f"network input {inp.name!r} has element type {et}; only FLOAT and "
                             f"DOUBLE inputs are supported", UnsupportedOp)
        if not tt.HasField("shape"):
            raise self.error(f"network input {inp.name!r} declares no shape")
        declared, trace = _dims(tt.shape, f"network input {inp.name!r}", self)
        try:
            _need_value(trace, f"network input {inp.name!r}")
        except _Limit as e:
            raise self.error(str(e)) from None
        return _FLOAT_TYPES[tt.elem_type], declared, trace

    def trace(self, node) -> None:
        label = node.name or (node.output[0] if node.output else node.op_type)
        self.where = f"node {_clip(label)!r} ({_clip(node.op_type, 40)})"
        self.label = label
        if node.domain not in ("", "ai.onnx"):
            raise self.error(f"op {node.domain}.{node.op_type} is not supported (custom domain)",
                             UnsupportedOp)
        handler = _HANDLERS.get(node.op_type)
        if handler is None:
            raise self.error(f"op {node.op_type!r} is not supported (supported ops: "
                             f"{', '.join(sorted(_HANDLERS))})", UnsupportedOp)
        ins = []
        optional = _OPTIONAL_INPUTS.get(node.op_type, ())
        for k, name in enumerate(node.input):
            if not name:
                if k not in optional:
                    raise self.error(f"input {k} is empty; it is not optional")
                ins.append(None)
            elif name not in self.values:
                raise self.error(f"input tensor {_clip(name)!r} is used before it is defined")
            else:
                v = self.values[name]
                if isinstance(v, _HeadValue) and node.op_type != "Identity":
                    raise UnsupportedOp(
                        f"ONNX model {self.source!r}: {v.where}: a {v.op_type} head is supported "
                        f"only as the last operation of the network (after the last affine layer), "
                        f"but its output is read by {self.where}")
                ins.append(v)
        try:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            outs = handler(self, node, ins, attrs)
        except LeoError:
            raise
        except _Limit as e:
            raise self.error(str(e)) from None
        except KeyError as e:
            raise self.error(f"missing attribute {e}") from e
        except (ValueError, IndexError, TypeError, OverflowError, ZeroDivisionError) as e:
            # numpy shape errors from malformed models: report them readably
            raise self.error(f"invalid arguments: {_clip(_first_line(e), 300)}") from e
        for name, v in zip(node.output, outs):
            if name:
                if isinstance(v, np.generic):  # numpy folds 0-d arithmetic to scalars
                    v = np.asarray(v)
                if not _is_const(v) and v.size > limits.MAX_VALUE_SIZE:
                    raise self.error(f"output {_clip(name)!r}: " + _limit_text(v.shape))
                self.values[name] = v

    def finish(self, out, v, in_node: str) -> None:
        """Add the Output node for the graph output value ``v`` (a head is kept on it)."""
        head, head_attrs = "none", ()
        if isinstance(v, _HeadValue):
            head, head_attrs, v = v.head, v.attrs, v.value
        if _is_const(v):
            # a constant network: zero weights from the input
            c = self.as_float(v, f"graph output {out.name!r}").ravel()
            self.label = out.name
            n = self.graph.input_size
            _need_dense(c.size, n, "a constant graph output")
            v = _Pending(in_node, n, np.zeros((c.size, n)), c, v.shape, None, not np.any(c), out.name)
        src = self.materialize(v)
        declared = ()
        tt = out.type.tensor_type if out.type.HasField("tensor_type") else None
        if tt is not None and tt.HasField("shape"):
            declared = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                             for d in tt.shape.dim)
            # the leading dim may be a batch dim (dynamic, or 1)
            sizes = set()
            if all(isinstance(d, int) for d in declared):
                sizes = {_size(declared)}
            elif len(declared) >= 2 and all(isinstance(d, int) for d in declared[1:]):
                sizes = {_size(declared[1:])}
            computed = 1 if head == "argmax" else v.size
            if sizes and computed not in sizes:
                raise self.error(f"graph output {out.name!r} declares shape {list(declared)} but "
                                 f"computes {computed} values")
        self.graph.add(self.graph.fresh_name("output"),
                       Output(v.size, shape=declared, head=head, head_attrs=head_attrs), [src])


def _io_entry(value_info) -> dict:
    """Name, element type and declared dims (ints, dim_param strings, None) of a graph input
    or output, for a writer that keeps them (``metadata["io"]``)."""
    tt = value_info.type.tensor_type if value_info.type.HasField("tensor_type") else None
    shape = None
    if tt is not None and tt.HasField("shape"):
        shape = [int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None)
                 for d in tt.shape.dim]
    return {"name": value_info.name, "elem_type": int(tt.elem_type) if tt is not None else 0,
            "shape": shape}


#: input positions an op may leave empty ("")
_OPTIONAL_INPUTS = {"Dropout": (1, 2), "Squeeze": (1,), "Unsqueeze": (1,), "Gemm": (2,)}


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _limit_text(shape) -> str:
    try:
        _need_value(shape)
    except _Limit as e:
        return str(e)
    return ""  # pragma: no cover - only called beyond the limit


def _checker_text(text: str) -> str:
    """onnx.checker's message on one line (it spreads the node over several)."""
    return " ".join(ln.strip() for ln in text.strip().splitlines() if ln.strip()) or "invalid model"


def _default_opset(model) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def _dims(shape_proto, what: str, t: _Tracer):
    """Declared dims and the dims used for tracing (a leading batch dim becomes 1)."""
    declared = []
    for d in shape_proto.dim:
        if d.HasField("dim_value"):
            declared.append(int(d.dim_value))
        else:
            declared.append(d.dim_param or None)
    trace = []
    for k, d in enumerate(declared):
        if isinstance(d, int) and d > 0:
            trace.append(d)
        elif isinstance(d, int):
            raise t.error(f"{what} declares dimension {k} as {d}; dimensions must be positive")
        elif k == 0:
            trace.append(1)  # dynamic batch dim: the tool works on one point at a time
        else:
            raise t.error(f"{what} has a dynamic dimension {k} ({d!r}); only the leading batch "
                          f"dimension may be dynamic")
    return tuple(declared), tuple(trace)


def _needed_nodes(g, output: str) -> list:
    """The nodes the output depends on, in file order (dead branches are skipped)."""
    needed = {output}
    keep = []
    for node in reversed(g.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    return keep[::-1]


_DATA_TYPES = frozenset(TensorProto.DataType.values())


def _iter_graphs(model):
    """Every graph of the model: the main graph and all subgraphs (iteratively)."""
    stack = [("the main graph", model.graph)]
    for f in model.functions:
        # functions hold nodes only: wrap them so their attributes are scanned too
        stack.append((f"function {_clip(str(f.name))!r}", onnx.GraphProto(node=f.node)))
    while stack:
        where, g = stack.pop()
        yield where, g
        for node in g.node:
            for a in node.attribute:
                where = f"a subgraph of node {_clip(str(node.name))!r}"
                if a.HasField("g"):
                    stack.append((where, a.g))
                stack.extend((where, sg) for sg in a.graphs)


def _iter_tensors(g):
    """``(label, TensorProto)`` for every tensor stored in graph ``g`` (not its subgraphs)."""
    for t in g.initializer:
        yield "initializer", t
    for sp in g.sparse_initializer:
        yield "sparse initializer", sp.values
        yield "sparse initializer indices of", sp.indices
    for node in g.node:
        for a in node.attribute:
            where = f"attribute {_clip(str(a.name))!r} of node {_clip(str(node.name))!r}: tensor"
            if a.HasField("t"):
                yield where, a.t
            for t in a.tensors:
                yield where, t
            sparse = list(a.sparse_tensors) + ([a.sparse_tensor] if a.HasField("sparse_tensor")
                                               else [])
            for sp in sparse:
                yield where, sp.values
                yield where, sp.indices


def _external_location(t) -> str:
    for e in t.external_data:
        if e.key == "location":
            return _clip(str(e.value))
    return "<no location>"


def _prevalidate(model, source: str) -> None:
    """Refuse what must never reach ``onnx.checker`` or numpy, before any of them runs.

    * tensors stored as external data, anywhere in the model (main graph,
      subgraphs, functions, attributes): refused, and no file is opened;
    * a tensor whose declared dims are negative or whose element count
      exceeds :data:`leo_verify.io.limits.MAX_ELEMENTS` (computed with Python
      integers: dims whose int64 product overflows are refused too);
    * names that are not valid UTF-8 (protobuf hands them over as bytes);
    * in the main graph: a node consuming a tensor nobody produces (a
      dangling input), a cycle, nodes out of topological order, and a graph
      output no node produces.
    """
    def fail(msg):
        raise ModelFormatError(f"ONNX model {source!r}: {msg}")

    for gwhere, g in _iter_graphs(model):
        for label, t in _iter_tensors(g):
            name = _clip(str(t.name))
            if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
                fail(f"{label} {name!r} (in {gwhere}) is stored as external data (location "
                     f"{_external_location(t)!r}); external data is refused and no external file "
                     f"is opened: save the model with all tensors inside the .onnx file")
            dims = [int(d) for d in t.dims]
            if any(d < 0 for d in dims):
                fail(f"{label} {name!r} declares a negative dimension: {_shape_text(dims)}")
            n = _size(dims)
            if n > limits.MAX_ELEMENTS:
                fail(f"{label} {name!r} declares shape {_shape_text(dims)}, "
                     f"{limits.describe(n)} elements, more than the limit of "
                     f"{limits.MAX_ELEMENTS} (leo_verify.io.limits.MAX_ELEMENTS)")
            if t.data_type not in _DATA_TYPES or t.data_type == TensorProto.UNDEFINED:
                fail(f"{label} {name!r} has an unknown data type {t.data_type}")

    g = model.graph
    names = [("graph input", i.name) for i in g.input] + \
            [("graph output", o.name) for o in g.output] + \
            [("initializer", t.name) for t in g.initializer]
    for k, node in enumerate(g.node):
        for field in ("name", "op_type", "domain"):
            names.append((f"node #{k} {field}", getattr(node, field)))
        names += [(f"node #{k} input", x) for x in node.input]
        names += [(f"node #{k} output", x) for x in node.output]
        names += [(f"node #{k} attribute name", a.name) for a in node.attribute]
    for what, name in names:
        if not isinstance(name, str):
            fail(f"{what} {_clip(repr(name))} is not valid UTF-8 text")

    defined = {i.name for i in g.input} | {t.name for t in g.initializer} | \
              {sp.values.name for sp in g.sparse_initializer}
    producer: dict = {}
    for k, node in enumerate(g.node):
        for o in node.output:
            if o:
                producer.setdefault(o, k)

    def label(k):
        node = g.node[k]
        return f"{_clip(node.name or (node.output[0] if node.output else '#' + str(k)))!r} " \
               f"({_clip(node.op_type, 40)})"

    for k, node in enumerate(g.node):
        for name in node.input:
            if not name or name in defined:
                continue
            j = producer.get(name)
            if j is None:
                fail(f"node {label(k)} consumes tensor {_clip(name)!r}, which no node, initializer "
                     f"or graph input produces (dangling input)")
            cycle = _find_cycle(g, producer)
            if cycle:
                shown = [label(c) for c in cycle[:8]] + (["..."] if len(cycle) > 8 else [])
                fail("the graph has a cycle: " + " -> ".join(shown))
            fail(f"node {label(k)} consumes tensor {_clip(name)!r} before node {label(j)} produces "
                 f"it: ONNX nodes must be in topological order")
        defined.update(o for o in node.output if o)
    for o in g.output:
        if o.name not in defined:
            fail(f"graph output {_clip(o.name)!r} is not produced by any node, initializer or "
                 f"input")


def _find_cycle(g, producer: dict) -> list | None:
    """Node indices along one cycle of the main graph, or None (iterative DFS)."""
    n = len(g.node)
    preds = [sorted({producer[i] for i in node.input if i in producer}) for node in g.node]
    state = [0] * n  # 0 new, 1 on the stack, 2 done
    for root in range(n):
        if state[root]:
            continue
        path, its = [root], [iter(preds[root])]
        state[root] = 1
        while path:
            nxt = next(its[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                its.pop()
            elif state[nxt] == 1:
                cyc = path[path.index(nxt):] + [nxt]
                return cyc[::-1]  # producer -> consumer order
            elif state[nxt] == 0:
                state[nxt] = 1
                path.append(nxt)
                its.append(iter(preds[nxt]))
    return None


def _tensor_to_array(t, source: str) -> np.ndarray:
    name = _clip(str(t.name))
    dims = [int(d) for d in t.dims]
    n = _size(dims)  # _prevalidate has checked dims >= 0 and n <= MAX_ELEMENTS for stored tensors
    if any(d < 0 for d in dims) or n > limits.MAX_ELEMENTS:
        raise ModelFormatError(f"ONNX model {source!r}: tensor {name!r} declares shape "
                               f"{_shape_text(dims)}, beyond the limit of {limits.MAX_ELEMENTS} "
                               f"elements (leo_verify.io.limits.MAX_ELEMENTS)")
    try:
        return np.array(numpy_helper.to_array(t))
    except (ValueError, KeyError, TypeError, IndexError, OverflowError, UnicodeError) as e:
        # onnx raises assorted errors on corrupt tensors
        raise ModelFormatError(f"ONNX model {source!r}: tensor {name!r} cannot be decoded: "
                               f"{_clip(_first_line(e), 200)}") from e


# ---------------------------------------------------------------------------
# op handlers: handler(tracer, node, inputs, attributes) -> list of outputs
# ---------------------------------------------------------------------------
def _reshape_value(t: _Tracer, v, shape: tuple):
    shape = tuple(int(s) for s in shape)
    if _is_const(v):
        return v.reshape(shape)
    if _size(shape) != v.size:
        raise t.error(f"cannot reshape a tensor of shape {list(v.shape)} to {list(shape)}")
    return v.reshaped(shape)  # flat order is unchanged: same W, b (and node)


def _op_identity(t, node, ins, attrs):
    return [ins[0]]


def _op_dropout(t, node, ins, attrs):
    # Inference: identity.  Opset >= 12 passes training_mode as an input.
    if len(ins) > 2 and ins[2] is not None:
        if not _is_const(ins[2]):
            raise t.error("training_mode must be a constant", UnsupportedOp)
        if bool(np.asarray(ins[2]).any()):
            raise t.error("Dropout in training mode is not supported", UnsupportedOp)
    x = ins[0]
    return [x, np.ones(x.shape, dtype=bool)]


def _op_constant(t, node, ins, attrs):
    if "value" in attrs:
        return [_tensor_to_array(attrs["value"], t.source)]
    for key, dt in (("value_float", np.float32), ("value_floats", np.float32),
                    ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return [np.array(attrs[key], dtype=dt)]
    raise t.error(f"Constant with attributes {sorted(attrs)} is not supported", UnsupportedOp)


def _op_flatten(t, node, ins, attrs):
    x = ins[0]
    r = len(x.shape)
    axis = int(attrs.get("axis", 1))
    if axis < 0:
        axis += r
    if not 0 <= axis <= r:
        raise t.error(f"axis {attrs.get('axis')} is out of range for rank {r}")
    return [_reshape_value(t, x, (_size(x.shape[:axis]), _size(x.shape[axis:])))]


def _op_reshape(t, node, ins, attrs):
    x = ins[0]
    if len(ins) > 1:
        if not _is_const(ins[1]):
            raise t.error("the target shape must be a constant", UnsupportedOp)
        spec = [int(s) for s in np.asarray(ins[1]).ravel()]
    else:
        spec = list(attrs.get("shape", []))  # opset < 5
    allowzero = int(attrs.get("allowzero", 0))
    shape = [x.shape[k] if s == 0 and not allowzero else s for k, s in enumerate(spec)]
    if shape.count(-1) > 1:
        raise t.error(f"target shape {spec} has more than one -1")
    if -1 in shape:
        known = _size([s for s in shape if s != -1])
        if known == 0 or x.size % known:
            raise t.error(f"cannot reshape a tensor of shape {list(x.shape)} to {spec}")
        shape[shape.index(-1)] = x.size // known
    return [_reshape_value(t, x, tuple(shape))]


def _axes(t, ins, attrs, rank: int):
    """Axes from the second input (opset >= 13) or the attribute (older opsets)."""
    if len(ins) > 1 and ins[1] is not None:
        if not _is_const(ins[1]):
            raise t.error("axes must be a constant", UnsupportedOp)
        axes = [int(a) for a in np.asarray(ins[1]).ravel()]
    elif "axes" in attrs:
        axes = [int(a) for a in attrs["axes"]]
    else:
        return None
    out = sorted(a + rank if a < 0 else a for a in axes)
    if any(not 0 <= a < rank for a in out) or len(set(out)) != len(out):
        raise t.error(f"axes {axes} are invalid for rank {rank}")
    return out


def _op_squeeze(t, node, ins, attrs):
    x = ins[0]
    axes = _axes(t, ins, attrs, len(x.shape))
    if axes is None:
        axes = [k for k, s in enumerate(x.shape) if s == 1]
    if any(x.shape[a] != 1 for a in axes):
        raise t.error(f"cannot squeeze axes {axes} of shape {list(x.shape)}")
    return [_reshape_value(t, x, tuple(s for k, s in enumerate(x.shape) if k not in axes))]


def _op_unsqueeze(t, node, ins, attrs):
    x = ins[0]
    n_axes = len(np.asarray(ins[1]).ravel()) if len(ins) > 1 and ins[1] is not None \
        else len(attrs.get("axes", []))
    axes = _axes(t, ins, attrs, len(x.shape) + n_axes)
    if axes is None:
        raise t.error("Unsqueeze needs axes")
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return [_reshape_value(t, x, tuple(shape))]


def _op_transpose(t, node, ins, attrs):
    x = ins[0]
    r = len(x.shape)
    perm = [int(p) for p in attrs.get("perm", range(r - 1, -1, -1))]
    if sorted(perm) != list(range(r)):
        raise t.error(f"perm {perm} is not a permutation of 0..{r - 1}")
    if _is_const(x):
        return [np.transpose(x, perm)]
    idx = np.arange(x.size).reshape(x.shape).transpose(perm)
    return [t.apply(x, _Lin(idx.shape, select=idx.ravel()))]


def _op_shape(t, node, ins, attrs):
    # shapes are static here (batch dim traced as 1)
    shape = np.array(ins[0].shape, dtype=np.int64)
    start, end = attrs.get("start", 0), attrs.get("end", None)
    return [shape[start:end]]


def _op_cast(t, node, ins, attrs):
    x = ins[0]
    to = int(attrs["to"])
    if to not in _DATA_TYPES or to in (TensorProto.UNDEFINED, TensorProto.STRING):
        raise t.error(f"Cast to data type {to} is not supported", UnsupportedOp)
    if _is_const(x):
        return [x.astype(helper.tensor_dtype_to_np_dtype(to))]
    if to in _FLOAT_TYPES:
        # values are reals here: the cast's rounding is idealized away like that of every
        # float operation of the source model
        return [x]
    raise t.error(f"cast of a network value to {TensorProto.DataType.Name(to)}", UnsupportedOp)


def _op_concat(t, node, ins, attrs):
    if not all(_is_const(v) for v in ins):
        raise t.error("Concat of network values is not supported (only of constants)", UnsupportedOp)
    _need_const((sum(v.size for v in ins),), "the result of this Concat")
    return [np.concatenate(ins, axis=int(attrs["axis"]))]


def _op_gather(t, node, ins, attrs):
    if not all(_is_const(v) for v in ins):
        raise t.error("Gather of network values is not supported (only of constants)", UnsupportedOp)
    if ins[1].dtype.kind not in "iu":
        raise t.error(f"Gather indices have dtype {ins[1].dtype}, expected integers")
    axis = int(attrs.get("axis", 0))
    if not -ins[0].ndim <= axis < ins[0].ndim:
        raise t.error(f"axis {axis} is out of range for rank {ins[0].ndim}")
    rest = ins[0].shape[:axis % ins[0].ndim] + ins[0].shape[axis % ins[0].ndim + 1:]
    _need_const(ins[1].shape + rest, "the result of this Gather")
    return [np.take(ins[0], ins[1].astype(np.int64), axis=int(attrs.get("axis", 0)))]


def _op_relu(t, node, ins, attrs):
    x = ins[0]
    if _is_const(x):
        return [np.maximum(x, 0)]
    _spend("neurons", x.size, "this ReLU")
    src = t.materialize(x)
    name = t.graph.fresh_name(t.label)
    t.graph.add(name, Relu([neuron_id(name, i) for i in range(x.size)]), [src])
    return [t.fresh(name, x.shape)]


# -- output heads ---------------------------------------------------------------
class _HeadValue:
    """The output of a head op (Softmax, ..., ArgMax) applied to ``value``.

    Only the graph output (possibly through Identity) may be a head value:
    :meth:`_Tracer.trace` refuses any other reader of it, naming the head node.
    """

    def __init__(self, value, head: str, op_type: str, attrs: tuple, where: str):
        self.value, self.head, self.op_type, self.attrs, self.where = value, head, op_type, attrs, where
        self.shape = tuple(value.shape)

    @property
    def size(self) -> int:
        return _size(self.shape)


#: ONNX op -> head name (see leo_verify.heads)
_HEAD_OPS = {"Softmax": "softmax", "LogSoftmax": "logsoftmax", "Sigmoid": "sigmoid",
             "Tanh": "tanh", "ArgMax": "argmax"}
#: head -> the attributes the reader (and the kernel's form check) accept
HEAD_ATTRIBUTES = {"softmax": ("axis",), "logsoftmax": ("axis",), "sigmoid": (), "tanh": (),
                   "argmax": ("axis", "keepdims", "select_last_index")}


def head_axis_default(head: str, opset: int) -> int:
    """The ONNX default ``axis`` of a head op at ``opset``."""
    if head == "argmax":
        return 0
    return -1 if opset >= 13 else 1


def _op_head(t, node, ins, attrs):
    head = _HEAD_OPS[node.op_type]
    x = ins[0]
    extra = sorted(set(attrs) - set(HEAD_ATTRIBUTES[head]))
    if extra:
        raise t.error(f"{node.op_type} with attribute(s) {extra} is not supported", UnsupportedOp)
    for k, v in attrs.items():
        if not isinstance(v, int):
            raise t.error(f"attribute {k!r} must be an integer, got {v!r}")
    shape = tuple(int(d) for d in x.shape)
    if head in ("softmax", "logsoftmax", "argmax"):
        r = len(shape)
        axis = int(attrs.get("axis", head_axis_default(head, t.opset)))
        a = axis + r if axis < 0 else axis
        if r == 0 or a != r - 1:
            raise t.error(f"{node.op_type} over axis {axis} of a tensor of shape {list(shape)}: only a "
                          f"head over the last axis (the logits of one sample) is supported",
                          UnsupportedOp)
        if any(d != 1 for d in shape[:-1]):
            raise t.error(f"{node.op_type} over the last axis of a tensor of shape {list(shape)} acts "
                          f"on groups of {shape[-1]} of its {_size(shape)} values; only a head over all "
                          f"the outputs of a sample is supported", UnsupportedOp)
        for k in ("keepdims", "select_last_index"):
            if int(attrs.get(k, 0)) not in (0, 1):
                raise t.error(f"{k}={attrs[k]} is not 0 or 1")
    return [_HeadValue(x, head, node.op_type, tuple(attrs.items()), t.where)]


# -- element-wise arithmetic ------------------------------------------------
def _broadcast_select(t, x: _Pending, shape: tuple) -> np.ndarray:
    """Row selection broadcasting the pending ``x`` to ``shape``."""
    _need_value(shape, "the broadcast result")
    return np.broadcast_to(np.arange(x.size).reshape(x.shape), shape).ravel()


def _const_arith(t, kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    _need_const(np.broadcast_shapes(a.shape, b.shape), f"the result of this constant {kind}")
    if a.dtype.kind in "iub" and b.dtype.kind in "iub":  # shape arithmetic
        if kind == "Div":
            if np.any(b == 0):
                raise t.error("integer division by zero in a constant expression")
            return np.fix(np.true_divide(a, b)).astype(np.result_type(a, b))
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[kind](a, b)
    a, b = t.as_float(a, "operand"), t.as_float(b, "operand")
    if kind == "Add":
        r = _exact_add(a, b)
    elif kind == "Sub":
        r = _exact_add(a, -b)
    elif kind == "Mul":
        r = _exact_mul(a, b)
    else:
        if np.any(b == 0):
            raise t.error("division by zero in a constant expression")
        q = a / b
        back = _exact_mul(q, b)
        r = q if back is not None and np.array_equal(back, np.broadcast_to(a, back.shape)) else None
    if r is None:
        raise t.error(f"folding this constant {kind} in float64 would round", UnsupportedOp)
    return r


def _binary(kind: str):
    def handler(t, node, ins, attrs):
        a, b = ins[0], ins[1]
        if _is_const(a) and _is_const(b):
            return [_const_arith(t, kind, a, b)]
        if not _is_const(a) and not _is_const(b):
            if kind in ("Add", "Sub"):
                return [_add_values(t, a, b, negate=kind == "Sub")]
            raise t.error(f"{kind} of two network values is not piecewise linear", UnsupportedOp)
        var, const = (a, b) if _is_const(b) else (b, a)
        var_first = var is a
        const = t.as_float(const, f"constant operand of {kind}")
        try:
            shape = tuple(np.broadcast_shapes(var.shape, const.shape))
        except ValueError:
            raise t.error(f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast") from None
        sel = _broadcast_select(t, var, shape)  # checks the size of shape first
        cfull = np.broadcast_to(const, shape).ravel()
        if kind == "Add":
            return [t.apply(var, _Lin(shape, select=sel, offset=cfull))]
        if kind == "Sub":
            if var_first:
                return [t.apply(var, _Lin(shape, select=sel, offset=-cfull))]
            return [t.apply(t.negate(var), _Lin(shape, select=sel, offset=cfull))]
        if kind == "Mul":
            return [t.apply(var, _scaled_select(sel, cfull, shape, var.size))]
        # Div: only a network value divided by a constant
        if not var_first:
            raise t.error("division by a network value is not piecewise linear", UnsupportedOp)
        if np.any(cfull == 0):
            k = int(np.argmax(cfull == 0))
            raise t.error(f"division by zero (divisor entry {k} is 0)")
        if _is_pow2(cfull):  # 1/d is exact: an ordinary scaling
            return [t.apply(var, _scaled_select(sel, 1.0 / cfull, shape, var.size))]
        return [_exact_division(t, var, sel, cfull, shape)]
    return handler


def _scaled_select(sel, scale, shape, in_size: int) -> _Lin:
    """Row i copies entry ``sel[i]`` times ``scale[i]``."""
    _need_dense(len(sel), in_size, "this element-wise scaling")
    M = np.zeros((len(sel), in_size))
    M[np.arange(len(sel)), sel] = scale
    return _Lin(shape, matrix=M)


def _exact_division(t, var: _Pending, sel, d, shape) -> _Pending:
    """``x / d``: 1/d is not a float, so emit an Affine with exact rational weights."""
    _need_rational(len(sel), var.size, "this exact division")
    src = t.materialize(var)
    zero = Fraction(0)
    W = np.full((len(sel), var.size), zero, dtype=object)
    for i, (j, di) in enumerate(zip(sel, d)):
        W[i, j] = 1 / Fraction(float(di))
    b = np.full(len(sel), zero, dtype=object)
    name = t.graph.add(t.graph.fresh_name(t.label), Affine.from_rational(W, b), [src])
    return t.fresh(name, shape)


def _add_values(t, a: _Pending, b: _Pending, *, negate: bool) -> _Pending:
    """``a + b`` (or ``a - b``) of two network values: a residual Add node."""
    try:
        shape = tuple(np.broadcast_shapes(a.shape, b.shape))
    except ValueError:
        raise t.error(f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast") from None
    if a.shape != shape:
        a = t.apply(a, _Lin(shape, select=_broadcast_select(t, a, shape)))
    if b.shape != shape:
        b = t.apply(b, _Lin(shape, select=_broadcast_select(t, b, shape)))
    if negate:
        b = t.negate(b)
    na, nb = t.materialize(a), t.materialize(b)
    if na == nb:
        # x + x (networkx has no parallel edges): 2x, exact; x - x is not possible here
        # since -x is materialized as a distinct node.
        n = t.graph.size_of(na)
        _need_dense(n, n, "x + x")
        return t.apply(t.fresh(na, shape), _Lin(shape, matrix=2.0 * np.eye(n)))
    name = t.graph.add(t.graph.fresh_name(t.label), Add(a.size, 2), [na, nb])
    return t.fresh(name, shape)


# -- matrix products ----------------------------------------------------------
def _squeeze_leading(t, c: np.ndarray, keep: int) -> np.ndarray:
    if c.ndim > keep:
        if any(s != 1 for s in c.shape[:-keep]):
            raise t.error(f"a batched constant operand of shape {list(c.shape)} is not supported",
                          UnsupportedOp)
        c = c.reshape(c.shape[-keep:])
    return c


def _matmul_shape(t, sa, sb) -> tuple:
    """The shape of ``A @ B`` (numpy/ONNX matmul rules), computed without any arithmetic."""
    sa, sb = tuple(int(d) for d in sa), tuple(int(d) for d in sb)

    def bad():
        return t.error(f"operand shapes {list(sa)} and {list(sb)} do not match for a matrix "
                       f"product")
    if not sa or not sb:
        raise bad()
    a2 = (1,) + sa if len(sa) == 1 else sa
    b2 = sb + (1,) if len(sb) == 1 else sb
    if a2[-1] != b2[-2]:
        raise bad()
    try:
        batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    except ValueError:
        raise bad() from None
    out = batch + (a2[-2], b2[-1])
    if len(sa) == 1:
        out = out[:-2] + out[-1:]
    if len(sb) == 1:
        out = out[:-1]
    return out


def _matmul_var_const(t, xshape, c: np.ndarray) -> _Lin:
    """``X @ C`` for a network value X: flat(X @ C) = kron(I_B, C^T) flat(X)."""
    out = _matmul_shape(t, xshape, c.shape)
    c2 = _squeeze_leading(t, c, 2) if c.ndim >= 2 else c
    ct = c2[None, :] if c2.ndim == 1 else c2.T  # (N, K)
    B = _size(xshape[:-1]) if len(xshape) >= 2 else 1
    _need_value(out, "the product")
    _need_dense(B * ct.shape[0], B * ct.shape[1], "this matrix product")
    return _Lin(out, matrix=np.kron(np.eye(B), ct) if B > 1 else ct)


def _matmul_const_var(t, c: np.ndarray, xshape) -> _Lin:
    """``C @ X`` for a network value X (..., K, Q): kron(I_B, kron(C, I_Q))."""
    out = _matmul_shape(t, c.shape, xshape)
    c2 = _squeeze_leading(t, c, 2) if c.ndim >= 2 else c[None, :]
    if len(xshape) == 1:
        return _Lin(out, matrix=c2)
    Q = xshape[-1]
    B = _size(xshape[:-2])
    _need_value(out, "the product")
    _need_dense(B * c2.shape[0] * Q, B * c2.shape[1] * Q, "this matrix product")
    M = np.kron(c2, np.eye(Q)) if Q > 1 else c2
    return _Lin(out, matrix=np.kron(np.eye(B), M) if B > 1 else M)


def _op_matmul(t, node, ins, attrs):
    a, b = ins
    if not _is_const(a) and not _is_const(b):
        raise t.error("product of two network values is not piecewise linear", UnsupportedOp)
    if _is_const(a) and _is_const(b):
        raise t.error("MatMul of two constants would round when folded", UnsupportedOp)
    if _is_const(b):
        return [t.apply(a, _matmul_var_const(t, a.shape, t.as_float(b, "MatMul weight")))]
    return [t.apply(b, _matmul_const_var(t, t.as_float(a, "MatMul weight"), b.shape))]


def _transposed(t, x):
    if _is_const(x):
        return x.T
    idx = np.arange(x.size).reshape(x.shape).T
    return t.apply(x, _Lin(idx.shape, select=idx.ravel()))


def _op_gemm(t, node, ins, attrs):
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if _is_const(a) == _is_const(b):
        what = "constants" if _is_const(a) else "network values"
        raise t.error(f"Gemm of two {what} is not supported", UnsupportedOp)
    if c is not None and not _is_const(c):
        raise t.error("Gemm with a network value as C is not supported", UnsupportedOp)
    for name, v in (("A", a), ("B", b)):
        if len(v.shape) != 2:
            raise t.error(f"Gemm operand {name} must be 2-D, has shape {list(v.shape)}")
    if attrs.get("transA", 0):
        a = _transposed(t, a)
    if attrs.get("transB", 0):
        b = _transposed(t, b)
    var = b if _is_const(a) else a
    const = t.as_float(a if _is_const(a) else b, "Gemm weight")
    scaled = const if alpha == 1.0 else _exact_mul(const, alpha)
    lin = (_matmul_var_const(t, a.shape, scaled if scaled is not None else const) if var is a
           else _matmul_const_var(t, scaled if scaled is not None else const, b.shape))
    y = t.apply(var, lin)
    if scaled is None:  # alpha * weight rounds: scale as a separate exact step
        _need_dense(y.size, y.size, "scaling by alpha")
        y = t.apply(y, _Lin(y.shape, matrix=alpha * np.eye(y.size)))
    if c is not None:
        cc = t.as_float(c, "Gemm bias C")
        if beta != 1.0:
            cc = _exact_mul(cc, beta)
            if cc is None:
                raise t.error("beta * C is not exactly representable in float64", UnsupportedOp)
        try:
            cfull = np.broadcast_to(cc, y.shape).ravel()
        except ValueError:
            raise t.error(f"bias C of shape {list(c.shape)} does not broadcast to "
                          f"{list(y.shape)}") from None
        y = t.apply(y, _Lin(y.shape, select=np.arange(y.size), offset=cfull))
    return [y]


def _op_batchnorm(t, node, ins, attrs):
    x, gamma, beta, mean, var = ins[:5]
    if len([o for o in node.output if o]) > 1 or attrs.get("training_mode", 0):
        raise t.error("BatchNormalization in training mode is not supported", UnsupportedOp)
    if not attrs.get("spatial", 1):
        raise t.error("BatchNormalization with spatial=0 is not supported", UnsupportedOp)
    if not all(_is_const(v) for v in (gamma, beta, mean, var)):
        raise t.error("BatchNormalization parameters must be constants", UnsupportedOp)
    if len(x.shape) < 2:
        raise t.error(f"input of shape {list(x.shape)} has no channel axis")
    C = x.shape[1]
    eps = float(attrs.get("epsilon", 1e-5))
    params = [t.as_float(v, "BatchNormalization parameter").ravel() for v in (gamma, beta, mean, var)]
    if any(p.size != C for p in params):
        raise t.error(f"parameters must have {C} entries (channel axis 1)")
    g, bb, m, v = params
    # Irrational in general: this float64 fold *defines* the network we verify.
    scale = g / np.sqrt(v + eps)
    shift = bb - m * scale
    chan = (1, C) + (1,) * (len(x.shape) - 2)
    s_full = np.broadcast_to(scale.reshape(chan), x.shape).ravel()
    t_full = np.broadcast_to(shift.reshape(chan), x.shape).ravel()
    if _is_const(x):
        return [(t.as_float(x, "BatchNormalization input").ravel() * s_full
                 + t_full).reshape(x.shape)]
    _need_dense(x.size, x.size, "BatchNormalization")
    return [t.apply(x, _Lin(x.shape, matrix=np.diag(s_full), offset=t_full))]


_HANDLERS: Mapping[str, Callable] = {
    "MatMul": _op_matmul,
    "Gemm": _op_gemm,
    "Add": _binary("Add"),
    "Sub": _binary("Sub"),
    "Mul": _binary("Mul"),
    "Div": _binary("Div"),
    "Relu": _op_relu,
    "Flatten": _op_flatten,
    "Reshape": _op_reshape,
    "Squeeze": _op_squeeze,
    "Unsqueeze": _op_unsqueeze,
    "Transpose": _op_transpose,
    "Identity": _op_identity,
    "Dropout": _op_dropout,
    "BatchNormalization": _op_batchnorm,
    "Constant": _op_constant,
    "Shape": _op_shape,
    "Cast": _op_cast,
    "Concat": _op_concat,
    "Gather": _op_gather,
    **{op: _op_head for op in _HEAD_OPS},
}

#: ONNX op types the reader understands.
SUPPORTED_OPS = tuple(sorted(_HANDLERS))


# ---------------------------------------------------------------------------
# public reader API
# ---------------------------------------------------------------------------
def graph_from_onnx_model(model, *, source: str = "<memory>", name: str | None = None) -> Graph:
    """Build a :class:`Graph` from an in-memory ONNX model.

    Parameters
    ----------
    model : onnx.ModelProto or bytes
        The model, or its serialized bytes.
    source : str
        How error messages and ``graph.metadata["source"]`` name the model.
    name : str, optional
        The graph's name (default: the ONNX graph's name, else ``"network"``).

    Returns
    -------
    Graph
        A linted graph; ``metadata`` records source, format, opset, dtype and
        the ONNX input/output tensor names.

    Raises
    ------
    ModelFormatError
        Undecodable, truncated or inconsistent model, external data, a
        declared size beyond a limit of :mod:`leo_verify.io.limits`.
    UnsupportedOp
        An op (or op variant) outside :data:`SUPPORTED_OPS`; the message
        names the ONNX node and its op type.
    GraphError
        The traced graph fails :meth:`Graph.lint` (e.g. a non-finite weight).
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        if not data:
            raise ModelFormatError(f"ONNX model {source!r} is empty")
        if len(data) > limits.MAX_FILE_BYTES:
            raise ModelFormatError(f"ONNX model {source!r} has {len(data)} bytes, more than the "
                                   f"limit of {limits.MAX_FILE_BYTES} (leo_verify.io.limits."
                                   f"MAX_FILE_BYTES)")
        try:
            model = onnx.load_model_from_string(data)
        except (DecodeError, ValueError, RuntimeError) as e:
            raise ModelFormatError(f"ONNX model {source!r} cannot be decoded (truncated or not an "
                                   f"ONNX file): {_clip(_first_line(e), 200)}") from e
    if not isinstance(model, onnx.ModelProto):
        raise ModelFormatError(f"{source!r}: expected an ONNX ModelProto, got {type(model).__name__}")
    if not model.HasField("graph"):
        raise ModelFormatError(f"ONNX model {source!r} has no graph (truncated or not an ONNX file)")
    _prevalidate(model, source)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelFormatError(f"ONNX model {source!r} is invalid: "
                               f"{_clip(_checker_text(str(e)), 300)}") from e
    except UnicodeDecodeError as e:
        # the checker's message quotes a name that is not valid UTF-8
        text = e.object.decode("utf-8", "replace") if isinstance(e.object, bytes) else str(e)
        raise ModelFormatError(f"ONNX model {source!r} is invalid: "
                               f"{_clip(_checker_text(text), 300)}") from None
    except ValueError as e:  # e.g. a model over protobuf's 2 GiB
        raise ModelFormatError(f"ONNX model {source!r} is invalid: {_clip(_first_line(e), 300)}") \
            from e
    gname = name or model.graph.name or "network"
    if not isinstance(gname, str):  # a graph name that is not valid UTF-8
        gname = "network"
    token = _BUDGET.set(limits.Budget())
    try:
        with np.errstate(all="ignore"):
            # non-finite values are caught by Graph.lint (named), not printed as warnings
            return _Tracer(model, source, gname).run()
    finally:
        _BUDGET.reset(token)


def load_onnx(path, *, name: str | None = None) -> Graph:
    """Load an ONNX file as a :class:`Graph`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.onnx`` file. Tensors must be stored inside it: external data is
        refused without opening any other file (see the module docstring).
    name : str, optional
        The graph's name; default: the file name without its suffix.

    Returns
    -------
    Graph
        See :func:`graph_from_onnx_model`.

    Raises
    ------
    InputFileError
        The file does not exist, is not a regular file or cannot be read.
    ModelFormatError, UnsupportedOp, GraphError
        See :func:`graph_from_onnx_model`; also a file over
        :data:`leo_verify.io.limits.MAX_FILE_BYTES`.
    """
    path = os.fspath(path)
    data = read_model_bytes(path, "ONNX model")
    return graph_from_onnx_model(data, source=path, name=name or Path(path).stem)


# ---------------------------------------------------------------------------
# writer
# ---------------------------------------------------------------------------
_HEAD_OP_TYPES = {h: op for op, h in _HEAD_OPS.items()}


def _is_int(d) -> bool:
    return isinstance(d, int) and not isinstance(d, bool)


def _is_dynamic(d) -> bool:
    return d is None or isinstance(d, str)


@dataclass
class _Layout:
    """How the emitted file wraps the graph: the graph works on ``[B, n] -> [B, m]``."""

    in_name: str
    in_dims: list
    pre: str | None          # None, "flatten" (Flatten(axis=1)) or "reshape" (to [1, n])
    out_name: str
    out_dims: list
    post: list | None        # the constant shape of a final Reshape of the logits, or None
    head_attrs: tuple        # the head's attributes as written


def _head_fits(head: str, attrs: Mapping, logits: list, opset: int) -> bool:
    """The head acts on all the logits of a sample of shape ``logits``: over the last
    axis, all other dims but the batch being 1 (what the reader and the kernel accept)."""
    if head not in ("softmax", "logsoftmax", "argmax"):
        return True
    rank = len(logits)
    axis = int(attrs.get("axis", head_axis_default(head, opset)))
    return rank >= 1 and (axis + rank if axis < 0 else axis) == rank - 1 and \
        all(d == 1 for d in logits[1:-1])


def _fallback_layout(graph: Graph, out: Output, opset: int) -> _Layout:
    """``input [batch, n]`` -> ``output [batch, m]`` (or the head's shape on ``[batch, m]``)."""
    attrs = dict(out.head_attrs)
    if out.head in ("softmax", "logsoftmax") and "axis" in attrs or out.head == "argmax":
        attrs["axis"] = 1
    dims = ["batch", graph.output_size]
    if out.head == "argmax":
        dims = ["batch", 1] if int(attrs.get("keepdims", 1)) else ["batch"]
    return _Layout("input", ["batch", graph.input_size], None, "output", dims, None,
                   tuple(attrs.items()))


def _layout(graph: Graph, opset: int) -> _Layout:
    """The drop-in layout from ``graph.metadata["io"]`` (the source file's input and output
    names and shapes), or the ``[batch, n] -> [batch, m]`` fallback when there is none or it
    is not one of the supported layouts (see :func:`to_onnx_model`)."""
    out = graph.op(graph.output_name)
    fallback = _fallback_layout(graph, out, opset)
    io = graph.metadata.get("io")
    if not isinstance(io, Mapping):
        return fallback
    ii, oo = io.get("input") or {}, io.get("output") or {}
    D, O = ii.get("shape"), oo.get("shape")
    names = (ii.get("name"), oo.get("name"))
    if not (isinstance(D, list) and isinstance(O, list) and all(isinstance(x, str) and x for x in names)
            and names[0] != names[1]):
        return fallback
    n, m = graph.input_size, graph.output_size
    if len(D) == 1:
        if D[0] != n:
            return fallback
        batch, pre = "none", "reshape"
    elif len(D) >= 2:
        rest = D[1:]
        if not (D[0] == 1 or _is_dynamic(D[0])) or not all(_is_int(d) and d > 0 for d in rest) \
                or _size(rest) != n:
            return fallback
        batch, pre = ("one" if D[0] == 1 else "dynamic"), (None if len(D) == 2 else "flatten")
    else:
        return fallback
    attrs = dict(out.head_attrs)
    L = list(O)  # the shape of the logits, which the head maps to the output shape O
    if out.head == "argmax":
        if int(attrs.get("keepdims", 1)):
            if not O or not (O[-1] == 1 or _is_dynamic(O[-1])):
                return fallback
            L = O[:-1] + [m]
        else:
            L = O + [m]
    if len(L) == 1:
        if L[0] != m or batch == "dynamic":
            return fallback
        post = [m]
    elif len(L) >= 2:
        rest = L[1:]
        if not all(_is_int(d) and d > 0 for d in rest) or _size(rest) != m:
            return fallback
        ok = _is_dynamic(L[0]) if batch == "dynamic" else (
            L[0] == 1 if batch == "none" else (L[0] == 1 or _is_dynamic(L[0])))
        if not ok:
            return fallback
        post = None if len(L) == 2 else [-1] + list(rest)
    else:
        return fallback
    if not _head_fits(out.head, attrs, L, opset):
        return fallback
    return _Layout(names[0], list(D), pre, names[1], list(O), post, tuple(out.head_attrs))


def to_onnx_model(graph: Graph, *, dtype: str | None = None, opset: int = 13) -> onnx.ModelProto:
    """The ONNX model of ``graph``.

    Parameters
    ----------
    graph : Graph
        A linted graph.
    dtype : {"float32", "float64"}, optional
        Element type of the tensors; default ``graph.metadata.get("dtype", "float32")``.
        ``float32`` rounds weights that are not float32 values (and exact
        rational weights are written as their float rounding): write
        ``float64`` for a file whose weights are bit-identical to the graph's.
    opset : int
        The default-domain opset (>= 7).

    Returns
    -------
    onnx.ModelProto
        One ``Gemm(transB=1)`` per affine node (weight stored as (out, in)),
        ``Relu``, chained ``Add``, then the output: a final ``Identity``, or
        the graph's output head (``Softmax``, ``LogSoftmax``, ``Sigmoid``,
        ``Tanh``, ``ArgMax`` with the source's attributes).  ONNX node names are
        the graph's node names, so reloading keeps the ReLU layer names and
        hence the neuron ids.

        **Drop-in layout.**  When ``graph.metadata["io"]`` (recorded by the
        ONNX reader and :func:`~leo_verify.io.torch.from_torch`) gives the
        source's graph input and output, the file keeps their names and
        shapes (dim_params and a fixed batch of 1 included; the element type
        is ``dtype``, int64 for an ArgMax output), for these input layouts:
        ``[B, n]`` (``B`` = 1 or dynamic), ``[n]`` (no batch: a leading
        ``Reshape`` to ``[1, n]``), ``[B, d1, ..., dk]`` with fixed ``di``
        (a leading ``Flatten(axis=1)``); the logits (the output, or the head's
        input) are ``[B, m]``, ``[m]`` (no dynamic batch) or ``[B, e1, ...,
        ek]`` (a trailing ``Reshape`` to ``[-1, e1, ..., ek]``).  Otherwise (no
        metadata, another layout) the file has input ``"input"`` of shape
        ``[batch, n]`` and output ``"output"`` of shape ``[batch, m]`` (or the
        head's shape on it).  :func:`leo_verify.kernel.emitted.check_emitted_onnx`
        accepts exactly these forms.
    """
    dtype = dtype or graph.metadata.get("dtype", "float32")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    np_dtype, elem = _DTYPES[dtype]
    graph.lint(where="onnx writer")
    lay = _layout(graph, opset)

    used = {lay.in_name, lay.out_name}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        return name

    def shape_const(base: str, dims: list) -> str:
        name = fresh(base)
        inits.append(numpy_helper.from_array(np.array(dims, dtype=np.int64), name))
        return name

    tensor = {}  # graph node -> ONNX tensor holding its value
    nodes, inits = [], []
    out_op = graph.op(graph.output_name)
    for n, op in graph.items():
        args = [tensor[a] for a in graph.args(n)]
        if op.kind == "input":
            x = lay.in_name
            if lay.pre == "flatten":
                t = fresh(f"{n}.flat")
                nodes.append(helper.make_node("Flatten", [x], [t], name=t, axis=1))
                x = t
            elif lay.pre == "reshape":
                t = fresh(f"{n}.2d")
                nodes.append(helper.make_node("Reshape", [x, shape_const(f"{n}.2d_shape",
                                                                         [1, graph.input_size])],
                                              [t], name=t))
                x = t
            tensor[n] = x
        elif op.kind == "affine":
            w = fresh(f"{n}.weight")
            b = fresh(f"{n}.bias")
            inits += [numpy_helper.from_array(np.asarray(op.weight, dtype=np_dtype), w),
                      numpy_helper.from_array(np.asarray(op.bias, dtype=np_dtype), b)]
            tensor[n] = fresh(n)
            nodes.append(helper.make_node("Gemm", [args[0], w, b], [tensor[n]], name=n, transB=1))
        elif op.kind == "relu":
            tensor[n] = fresh(n)
            nodes.append(helper.make_node("Relu", args, [tensor[n]], name=n))
        elif op.kind == "add":
            # chained left to right: the same summation order as the interpreters
            acc = args[0]
            for k, a in enumerate(args[1:]):
                step = n if k == 0 else f"{n}_{k}"
                out = fresh(step)
                nodes.append(helper.make_node("Add", [acc, a], [out], name=step))
                acc = out
            tensor[n] = acc
        elif op.kind == "output":
            x = args[0]
            if lay.post is not None:
                t = fresh(f"{n}.logits")
                nodes.append(helper.make_node("Reshape", [x, shape_const(f"{n}.logits_shape",
                                                                         lay.post)], [t], name=t))
                x = t
            if op.head == "none":
                nodes.append(helper.make_node("Identity", [x], [lay.out_name], name=n))
            else:
                nodes.append(helper.make_node(_HEAD_OP_TYPES[op.head], [x], [lay.out_name], name=n,
                                              **dict(lay.head_attrs)))
        else:  # pragma: no cover - lint admits only the five kinds
            raise ValueError(f"node {n!r}: op kind {op.kind!r} cannot be written to ONNX")
    out_elem = TensorProto.INT64 if out_op.head == "argmax" else elem
    g = helper.make_graph(
        nodes, graph.name, [helper.make_tensor_value_info(lay.in_name, elem, lay.in_dims)],
        [helper.make_tensor_value_info(lay.out_name, out_elem, lay.out_dims)],
        initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(g, opset_imports=opsets, producer_name="leo_verify")
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return model


def save_onnx(graph: Graph, path, *, dtype: str | None = None, opset: int = 13):
    """Write ``graph`` as an ONNX file, atomically.

    Parameters
    ----------
    graph : Graph
    path : str or os.PathLike
        Destination; written to a temporary file in the same folder, then
        moved into place with :func:`os.replace`, so a reader never sees a
        half-written file.
    dtype, opset
        See :func:`to_onnx_model`.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    InputFileError
        The file cannot be written.
    """
    path = os.fspath(path)
    data = to_onnx_model(graph, dtype=dtype, opset=opset).SerializeToString()
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise InputFileError(f"cannot write ONNX model {path!r}: {e.strerror or e}") from e
    return path
