"""Checks of an ONNX model before and while it is traced: prevalidation of every
tensor and graph (before ``onnx.checker`` or numpy sees them), cycles, declared
dims, graph input/output entries, tensor decoding.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper, TensorProto

from ...errors import GraphError, ModelFormatError
from .. import limits
from .values import _clip, _Limit, _need_value, _shape_text, _size

if TYPE_CHECKING:  # annotations only: no import at run time
    from .tracer import _Tracer


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
                # a cycle is a readable file describing an invalid network: exit 7, not 5
                shown = [label(c) for c in cycle[:8]] + (["..."] if len(cycle) > 8 else [])
                raise GraphError(f"ONNX model {source!r}: the graph has a cycle: " + " -> ".join(shown))
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
