"""The ONNX writer: :func:`to_onnx_model` and :func:`save_onnx` (opset 13, ``Gemm``/``Relu``/
``Add``, then ``Identity`` or the original's head, keeping the original's graph input and output
names and shapes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

from ...conv_layout import emit_plan
from ...errors import InputFileError
from ...graph import Graph, Output
from ...util import atomic_write_bytes
from .ops import _HEAD_OPS, head_axis_default
from .values import _DTYPES, _size


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
        elif op.kind == "affine" and op.layout is not None and dtype == "float32" and \
                (plan := emit_plan(op.layout)) is not None:
            # (onnxruntime has no float64 Conv: a float64 file writes convolutions as Gemm)
            tensor[n] = _emit_conv(n, args[0], plan, np_dtype, fresh, nodes, inits)
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


def _emit_conv(n: str, x: str, plan: dict, np_dtype, fresh, nodes: list, inits: list) -> str:
    """``[B, w]`` -> (Gather) -> Reshape ``[-1, C, (H,) W]`` -> Conv -> Flatten -> (Gather):
    the writer's conv segment (see :func:`~leo_verify.conv_layout.emit_plan`); returns the output tensor."""
    def const(base, arr):
        name = fresh(base)
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name
    if plan["gather_in"] is not None:
        t = fresh(f"{n}.gather_in")
        nodes.append(helper.make_node("Gather", [x, const(f"{n}.in_index", plan["gather_in"])],
                                      [t], name=t, axis=1))
        x = t
    t = fresh(f"{n}.nchw")
    nodes.append(helper.make_node("Reshape", [x, const(f"{n}.nchw_shape", np.array(
        [-1] + list(plan["in_dims"]), dtype=np.int64))], [t], name=t))
    x, t = t, fresh(f"{n}.conv")
    nodes.append(helper.make_node(
        "Conv", [x, const(f"{n}.weight", plan["kernel"].astype(np_dtype)),
                 const(f"{n}.bias", plan["bias"].astype(np_dtype))], [t], name=n, **plan["attrs"]))
    x, t = t, fresh(f"{n}.flat")
    nodes.append(helper.make_node("Flatten", [x], [t], name=t, axis=1))
    if plan["gather_out"] is not None:
        x, t = t, fresh(f"{n}.rows")
        nodes.append(helper.make_node("Gather", [x, const(f"{n}.out_index", plan["gather_out"])],
                                      [t], name=t, axis=1))
    return t


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
