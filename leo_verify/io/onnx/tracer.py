"""The tracer: walks the ONNX nodes in order and builds the :class:`~leo_verify.graph.Graph`
(dispatching each node to the op table :data:`leo_verify.io.onnx.ops.HANDLERS`).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, TensorProto

from ...errors import GraphError, LeoError, ModelFormatError, UnsupportedOp
from ...graph import Affine, Graph, Input, Output
from .. import limits
from .checks import (_DATA_TYPES, _default_opset, _dims, _first_line, _io_entry, _limit_text,
                     _needed_nodes, _tensor_to_array)
from .ops import _HANDLERS, _HeadValue, _OPTIONAL_INPUTS
from .values import (_clip, _exact_add, _FLOAT_TYPES, _is_const, _Limit, _Lin, _need_dense, _need_value,
                     _Pending, _size, _unique)


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
                p.cell[0] = self.graph.add(name, Affine(p.W, p.b, layout=p.layout), [p.src])
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
            # row i copies entry idx[i] (idx[i] < 0: a zero row, e.g. a pad); exact
            idx = np.asarray(lin.select, dtype=np.int64)
            zero_row = idx < 0
            safe = np.where(zero_row, 0, idx)
            picked = np.where(zero_row, 0.0, p.b[safe]) if len(idx) else np.zeros(0)
            if czero:
                b = picked
            else:
                b = _exact_add(picked, np.asarray(c, dtype=np.float64))
                if b is None:
                    # b[idx] + c would round: start afresh from the materialized value
                    return self.apply(self.fresh(self.materialize(p), p.shape), lin)
            bzero = not np.any(b)
            if p.perm is not None and _unique(idx[~zero_row]):
                perm = np.where(zero_row, -1, p.perm[safe]) if len(idx) else idx
                return _Pending(p.src, p.n_src, None, b, lin.shape, perm, bzero, self.label)
            _need_dense(len(idx), p.n_src, "composing this op")
            W = p.W[safe]
            if zero_row.any():
                W[zero_row] = 0.0
            q = _Pending(p.src, p.n_src, W, b, lin.shape, None, bzero, self.label)
            if p.layout is not None and czero and not zero_row.any() and _unique(idx):
                q.layout = p.layout.restrict(rows=idx)  # e.g. a Transpose after a Conv
            return q
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
