"""The emitted ONNX file must be in the narrow form the writer produces.

The general ONNX reader (:mod:`leo_verify.io.onnx`) accepts many ops and
folds shape computations for a batch of one; a runtime evaluates the same
file for any batch and rounds at every ``Cast``.  A forged emitted file can use
that gap: a ``Reshape``/``Transpose`` that mixes the samples of a batch, a
``Shape`` that only looks constant at batch 1, a float32 ``Cast`` the reader
takes as the identity.  So before its weights are compared, an emitted ONNX
file must have exactly the writer's structure
(:func:`leo_verify.io.onnx.to_onnx_model`), in which every op acts on each
sample alone and exactly as the reader reads it:

* one graph input of element type float32 or float64, no initializer
  shadowing it, of shape ``[B, n]`` (``B`` = 1 or dynamic), ``[n]`` (no batch)
  or ``[B, d1, ..., dk]`` (k >= 2, fixed ``di``);
* only the default opset domain, no sub-graphs, no functions; in order:

  1. for a ``[n]`` input a ``Reshape`` of it by an int64 initializer equal to
     ``[1, n]``; for a ``[B, d1, ..., dk]`` input a ``Flatten(axis=1)`` of it;
     for ``[B, n]`` nothing (and the raw input is used only there);
  2. ``Gemm`` (``transB=1`` and no other attribute, weight and bias
     initializers of the input's element type whose shapes fit the data
     input's width), ``Relu``, ``Add`` (two network values of equal width);
     every value is ``[B, width]``;
     and the conv segment of a convolution: ``Gather(axis=1)`` of a ``[B, w]`` value by a
     1-D int64 initializer of indices in ``[0, w)``; ``Reshape`` of a ``[B, w]`` value to
     ``[-1, C, (H,) W]`` (product ``w``); ``Conv`` of that with weight and bias initializers
     and exactly the attributes kernel_shape, strides, pads, dilations, group (no
     ``auto_pad``); ``Flatten(axis=1)`` of a ``Conv`` output (all per sample);
  3. optionally a ``Reshape`` of a network value ``[B, w]`` by an int64
     initializer equal to ``[-1, e1, ..., ek]`` (k >= 2, ``ei >= 1``, product
     ``w``: the same sample's values, split), or to ``[w]`` when the input has
     no dynamic batch (``[n]`` or ``B = 1``);
  4. last, writing the graph output: ``Identity``, or one head ``Softmax`` /
     ``LogSoftmax`` (attribute ``axis`` only), ``Sigmoid``, ``Tanh`` (none),
     ``ArgMax`` (``axis``, ``keepdims``, ``select_last_index`` in {0, 1}) acting on
     the last axis of its input, all other dims but the batch being 1 -- the
     attributes the reader accepts;

* the declared output shape is the shape those ops compute (a dynamic batch
  stays dynamic), of the input's element type (int64 after ``ArgMax``); every
  initializer is used, and shape initializers only by those ``Reshape`` nodes.

A ``Reshape`` anywhere else, ``Transpose``, ``Cast``, ``Shape`` and every other
op are refused.  Anything else is not the certified kind of file: NOT CERTIFIED.
"""
from __future__ import annotations

import math

__all__ = ["check_emitted_onnx"]

_FLOAT, _DOUBLE, _INT64 = 1, 11, 7  # onnx.TensorProto.FLOAT / DOUBLE / INT64
_INT_ATTR = 2  # onnx.AttributeProto.INT

#: head op -> attributes it may carry (those the reader accepts)
_HEADS = {"Softmax": ("axis",), "LogSoftmax": ("axis",), "Sigmoid": (), "Tanh": (),
          "ArgMax": ("axis", "keepdims", "select_last_index")}


def _dims(value_info) -> list:
    t = value_info.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def _dyn(d) -> bool:
    return d is None or isinstance(d, str)


def _int_array(t):
    """The values of a 1-D int64 initializer stored in the file, or None."""
    from onnx import numpy_helper
    if t.data_type != _INT64 or len(t.dims) != 1 or t.data_location == 1:
        return None
    try:
        return [int(v) for v in numpy_helper.to_array(t).ravel()]
    except (ValueError, TypeError):  # pragma: no cover - corrupt tensor
        return None


def check_emitted_onnx(data: bytes) -> tuple[bool, str]:
    """``(ok, why)``: whether ``data`` (the file's bytes) has the writer's structure."""
    import onnx
    from google.protobuf.message import DecodeError
    try:
        m = onnx.load_from_string(data)
    except DecodeError as exc:
        return False, f"not an ONNX model ({exc})"
    g = m.graph
    if any(op.domain not in ("", "ai.onnx") for op in m.opset_import) or len(m.functions):
        return False, "uses an opset domain other than the default, or functions"
    opset = next((int(op.version) for op in m.opset_import if op.domain in ("", "ai.onnx")), 1)
    inits = {t.name: t for t in g.initializer}
    if len(inits) != len(g.initializer) or len(g.sparse_initializer):
        return False, "repeated or sparse initializers"
    inputs = [v for v in g.input if v.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        return False, "needs exactly one graph input and one output"
    if len(g.input) != 1:
        return False, "an initializer is also declared as a graph input (it could be overridden)"
    x_in, y_out = inputs[0], g.output[0]
    elem = x_in.type.tensor_type.elem_type
    if elem not in (_FLOAT, _DOUBLE):
        return False, "the input must be float32 or float64"
    if not x_in.type.tensor_type.HasField("shape") or not y_out.type.tensor_type.HasField("shape"):
        return False, "the input and output must declare their shapes"
    din, dout = _dims(x_in), _dims(y_out)
    # the input layout: "none" ([n]), "one" ([1, ...]) or "dynamic" ([B, ...]) batch
    if len(din) == 1 and isinstance(din[0], int) and din[0] > 0:
        batch, pre = "none", "reshape"
    elif len(din) >= 2 and (din[0] == 1 or _dyn(din[0])) and \
            all(isinstance(d, int) and d > 0 for d in din[1:]):
        batch, pre = ("one" if din[0] == 1 else "dynamic"), (None if len(din) == 2 else "flatten")
    else:
        return False, f"input {din} is not [B, n], [n] or [B, d1, ..., dk] with fixed di"
    n_in = math.prod(din[1:]) if batch != "none" else din[0]
    float_inits = set()
    shape_inits = set()
    for t in inits.values():
        if t.data_location == 1:  # EXTERNAL
            return False, f"initializer {t.name!r} is not stored in the file"
        if t.data_type == elem:
            float_inits.add(t.name)
        elif t.data_type == _INT64 and len(t.dims) == 1:
            shape_inits.add(t.name)
        else:
            return False, f"initializer {t.name!r} is not a {('float32', 'float64')[elem == _DOUBLE]} tensor in the file"
    width: dict = {}   # network value -> per-sample width (a value [B, width])
    spatial: dict = {}  # network value -> per-sample dims [C, (H,) W] (a value [B, C, (H,) W])
    if pre is None:
        width[x_in.name] = n_in
    used_inits: set = set()
    nodes = list(g.node)
    if not nodes:
        return False, "no nodes"
    last = len(nodes) - 1
    post_shape = None  # the shape written by the trailing Reshape (its -1 is the batch)
    post_value = None
    for k, node in enumerate(nodes):
        where = f"node {k} ({node.op_type} {node.name!r})"
        if node.domain not in ("", "ai.onnx") or any(a.type in (5, 10, 11, 12) for a in node.attribute):
            return False, f"{where}: custom domain or sub-graph attribute"
        if len(node.output) != 1 or node.output[0] in width or node.output[0] in inits \
                or node.output[0] == x_in.name:
            return False, f"{where}: must write one new tensor"
        if node.output[0] == y_out.name and k != last:
            return False, f"{where}: only the last node writes the graph output"
        ins = list(node.input)
        attrs = {a.name: a for a in node.attribute}
        out = node.output[0]
        if k == 0 and pre is not None:
            if pre == "flatten":
                if node.op_type != "Flatten" or ins != [x_in.name] or set(attrs) != {"axis"} \
                        or attrs["axis"].type != _INT_ATTR or attrs["axis"].i != 1:
                    return False, f"{where}: a [B, d1, ..., dk] input must first go through Flatten(axis=1)"
            else:
                if node.op_type != "Reshape" or len(ins) != 2 or ins[0] != x_in.name or attrs \
                        or ins[1] not in shape_inits or _int_array(inits[ins[1]]) != [1, n_in]:
                    return False, f"{where}: a [n] input must first go through Reshape to [1, n]"
                used_inits.add(ins[1])
            width[out] = n_in
            continue
        if node.op_type == "Gemm":
            if set(attrs) != {"transB"} or attrs["transB"].type != _INT_ATTR or attrs["transB"].i != 1 \
                    or len(ins) != 3:
                return False, f"{where}: only Gemm(x, W, b) with transB=1 is the writer's form"
            if ins[0] not in width or ins[1] not in float_inits or ins[2] not in float_inits:
                return False, f"{where}: data must be a network value, weight and bias initializers"
            w, b = inits[ins[1]], inits[ins[2]]
            if len(w.dims) != 2 or list(b.dims) != [w.dims[0]] or w.dims[1] != width[ins[0]]:
                return False, f"{where}: weight {list(w.dims)} / bias {list(b.dims)} shapes"
            used_inits.update(ins[1:])
            width[out] = int(w.dims[0])
        elif node.op_type == "Relu":
            if len(ins) != 1 or ins[0] not in width or node.attribute:
                return False, f"{where}: Relu of one network value"
            width[out] = width[ins[0]]
        elif node.op_type == "Add":
            if len(ins) != 2 or any(i not in width for i in ins) or node.attribute \
                    or width[ins[0]] != width[ins[1]]:
                return False, f"{where}: Add of two network values of equal width"
            width[out] = width[ins[0]]
        elif node.op_type in ("Gather", "Conv", "Flatten") or (node.op_type == "Reshape"
                                                                and k != last - 1):
            why = _conv_segment(node, ins, attrs, width, spatial, inits, float_inits, shape_inits)
            if why:
                return False, f"{where}: {why}"
            used_inits.update(ins[1:])
        elif node.op_type == "Reshape":
            # only the trailing Reshape of the logits, read by the last node
            if k != last - 1 or len(ins) != 2 or ins[0] not in width or attrs or ins[1] not in shape_inits:
                return False, f"{where}: Reshape only of the logits, just before the last node"
            w = width[ins[0]]
            shape = _int_array(inits[ins[1]])
            split = shape is not None and len(shape) >= 3 and shape[0] == -1 and \
                all(d >= 1 for d in shape[1:]) and math.prod(shape[1:]) == w
            flat = shape == [w] and batch in ("none", "one")
            if not (split or flat):
                return False, f"{where}: Reshape of [B, {w}] to {shape} is not the writer's per-sample form"
            used_inits.add(ins[1])
            post_shape, post_value = shape, out
        elif node.op_type == "Identity" or node.op_type in _HEADS:
            if k != last or len(ins) != 1 or out != y_out.name or \
                    not (ins[0] in width or ins[0] == post_value):
                return False, f"{where}: Identity or a head only as the last node, to the output"
        else:
            return False, (f"{where}: op {node.op_type!r} is not in the writer's form (Flatten/Reshape "
                           f"of the input, Gemm, Relu, Add, the conv segment Gather/Reshape/Conv/"
                           f"Flatten/Gather, a Reshape of the logits, Identity or a head)")
    if nodes[last].output[0] != y_out.name or not (nodes[last].op_type == "Identity"
                                                    or nodes[last].op_type in _HEADS):
        return False, "the output is not produced by a final Identity or head"
    final = nodes[last]
    src = final.input[0]
    if post_value is not None and src != post_value:
        return False, "the Reshape of the logits is not read by the last node"
    # the shape of the last node's input; "B" marks the batch position
    if src == post_value:
        shape_in = ["B"] + post_shape[1:] if post_shape[0] == -1 else list(post_shape)
    else:
        shape_in = ["B", width[src]]
    ok, why, shape_out = _final(final, shape_in, opset)
    if not ok:
        return False, f"node {last} ({final.op_type} {final.name!r}): {why}"
    out_elem = y_out.type.tensor_type.elem_type
    if out_elem != (_INT64 if final.op_type == "ArgMax" else elem):
        return False, "the output element type is not the input's (int64 after ArgMax)"
    if len(dout) != len(shape_out):
        return False, f"output {dout} does not have the computed shape {shape_out}"
    for d, e in zip(dout, shape_out):
        if e == "B":
            good = _dyn(d) if batch == "dynamic" else (d == 1 or _dyn(d))
        else:
            good = d == e
        if not good:
            return False, f"output {dout} does not have the computed shape {shape_out} (input {din})"
    if set(inits) != used_inits:
        return False, "unused initializers, or shape tensors not read by the writer's Reshape nodes"
    return True, ""


_INTS_ATTR = 7  # onnx.AttributeProto.INTS
_CONV_ATTRS = {"kernel_shape": _INTS_ATTR, "strides": _INTS_ATTR, "pads": _INTS_ATTR,
               "dilations": _INTS_ATTR, "group": _INT_ATTR}


def _conv_segment(node, ins, attrs, width, spatial, inits, float_inits, shape_inits) -> str:
    """The writer's conv segment, one node at a time; every op acts on each sample alone:
    ``Gather(axis=1)`` of ``[B, w]`` by constant in-range indices; ``Reshape`` of ``[B, w]`` to
    ``[-1, C, (H,) W]`` (product ``w``); ``Conv`` of ``[B, C, (H,) W]`` with weight and bias
    initializers and explicit integer attributes; ``Flatten(axis=1)`` of a ``Conv`` output.
    Records the output's shape in ``width`` / ``spatial``; returns '' or why not."""
    out = node.output[0]
    op = node.op_type
    if op == "Gather":
        if len(ins) != 2 or ins[0] not in width or ins[1] not in shape_inits or \
                set(attrs) != {"axis"} or attrs["axis"].type != _INT_ATTR or attrs["axis"].i != 1:
            return "only Gather(x, indices, axis=1) of a [B, w] value by an int64 initializer"
        idx = _int_array(inits[ins[1]])
        if idx is None or not idx or any(not 0 <= i < width[ins[0]] for i in idx):
            return f"Gather indices are not in [0, {width[ins[0]]})"
        width[out] = len(idx)
    elif op == "Reshape":
        if len(ins) != 2 or ins[0] not in width or attrs or ins[1] not in shape_inits:
            return "Reshape of a [B, w] value by an int64 initializer only"
        shape = _int_array(inits[ins[1]])
        if shape is None or len(shape) not in (3, 4) or shape[0] != -1 or \
                any(d < 1 for d in shape[1:]) or math.prod(shape[1:]) != width[ins[0]]:
            return f"Reshape of [B, {width[ins[0]]}] to {shape} is not [-1, C, (H,) W] of the same size"
        spatial[out] = list(shape[1:])
    elif op == "Flatten":
        if ins[0:1] != ins or ins[0] not in spatial or set(attrs) != {"axis"} or \
                attrs["axis"].type != _INT_ATTR or attrs["axis"].i != 1:
            return "Flatten(axis=1) of a Conv output only"
        width[out] = math.prod(spatial[ins[0]])
    else:  # Conv
        if len(ins) != 3 or ins[0] not in spatial or ins[1] not in float_inits or \
                ins[2] not in float_inits:
            return "Conv(x, W, b) of a [B, C, (H,) W] value with weight and bias initializers"
        if any(a not in _CONV_ATTRS or attrs[a].type != _CONV_ATTRS[a] for a in attrs) or \
                set(attrs) != set(_CONV_ATTRS):
            return f"Conv attributes {sorted(attrs)} are not exactly {sorted(_CONV_ATTRS)}"
        dims = spatial[ins[0]]
        nsp = len(dims) - 1
        w, b = inits[ins[1]], inits[ins[2]]
        wd = [int(d) for d in w.dims]
        get = {a: list(attrs[a].ints) for a in ("kernel_shape", "strides", "pads", "dilations")}
        group = int(attrs["group"].i)
        if len(wd) != nsp + 2 or get["kernel_shape"] != wd[2:] or list(b.dims) != [wd[0]] or \
                group < 1 or dims[0] % group or wd[0] % group or wd[1] * group != dims[0]:
            return f"Conv weight {wd} / bias {list(b.dims)} do not fit an input {dims}, group {group}"
        if len(get["strides"]) != nsp or len(get["dilations"]) != nsp or len(get["pads"]) != 2 * nsp \
                or min(get["strides"] + get["dilations"]) < 1 or min(get["pads"]) < 0 \
                or min(wd[2:]) < 1:
            return "Conv strides/dilations (>= 1) and pads (>= 0) do not fit its dims"
        outs = []
        for a in range(nsp):
            span = (wd[2 + a] - 1) * get["dilations"][a] + 1
            total = dims[1 + a] + get["pads"][a] + get["pads"][a + nsp]
            if total < span:
                return "Conv kernel larger than its padded input"
            outs.append((total - span) // get["strides"][a] + 1)
        spatial[out] = [wd[0]] + outs
    return ""


def _final(node, shape: list, opset: int) -> tuple[bool, str, list]:
    """``(ok, why, output shape)`` of the last node (Identity or a head) on ``shape``."""
    if node.op_type == "Identity":
        return (not node.attribute, "Identity with attributes", shape)
    allowed = _HEADS[node.op_type]
    attrs = {}
    for a in node.attribute:
        if a.name not in allowed or a.type != _INT_ATTR or a.name in attrs:
            return False, f"attribute {a.name!r} is not one the reader accepts", shape
        attrs[a.name] = int(a.i)
    if not allowed:
        return True, "", shape
    r = len(shape)
    default = 0 if node.op_type == "ArgMax" else (-1 if opset >= 13 else 1)
    axis = attrs.get("axis", default)
    if r == 0 or (axis + r if axis < 0 else axis) != r - 1:
        return False, f"axis {axis} is not the last axis of {shape}", shape
    if any(d != 1 for d in shape[1:-1]) or (r >= 2 and shape[0] not in ("B", 1)):
        return False, f"the head on {shape} does not act on all the outputs of a sample", shape
    if node.op_type != "ArgMax":
        return True, "", shape
    if any(attrs.get(k, 0) not in (0, 1) for k in ("keepdims", "select_last_index")):
        return False, "keepdims / select_last_index must be 0 or 1", shape
    return True, "", shape[:-1] + [1] if attrs.get("keepdims", 1) else shape[:-1]
