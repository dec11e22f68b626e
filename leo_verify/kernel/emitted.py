"""The emitted ONNX file must be in the narrow form the writer produces.

The general ONNX reader (:mod:`leo_verify.io.onnx`) accepts many ops and
folds shape computations for a batch of one; a runtime evaluates the same
file for any batch and rounds at every ``Cast``.  A forged emitted file can use
that gap: a ``Reshape``/``Transpose`` that mixes the samples of a batch, a
``Shape`` that only looks constant at batch 1, a float32 ``Cast`` the reader
takes as the identity.  So before its weights are compared, an emitted ONNX
file must have exactly the writer's structure, in which every op acts on each
sample alone and exactly as the reader reads it:

* one graph input ``[batch, n]`` and one output ``[batch, m]`` of the same
  element type (float32 or float64), no initializer shadowing an input;
* only the default opset domain; nodes ``Gemm`` (``transB=1`` and no other
  attribute, weight and bias initializers of that element type, the data
  input a network value), ``Relu``, ``Add`` (two network values) and one
  final ``Identity`` to the output; no sub-graphs, no functions.

Anything else is not the certified kind of file: NOT CERTIFIED.
"""
from __future__ import annotations

__all__ = ["check_emitted_onnx"]

_FLOAT, _DOUBLE = 1, 11  # onnx.TensorProto.FLOAT / DOUBLE


def _dims(value_info) -> list:
    t = value_info.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


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
    inits = {t.name: t for t in g.initializer}
    inputs = [v for v in g.input if v.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        return False, "needs exactly one graph input and one output"
    if len(g.input) != 1:
        return False, "an initializer is also declared as a graph input (it could be overridden)"
    elem = inputs[0].type.tensor_type.elem_type
    if elem not in (_FLOAT, _DOUBLE) or g.output[0].type.tensor_type.elem_type != elem:
        return False, "input and output must both be float32 or both float64"
    din, dout = _dims(inputs[0]), _dims(g.output[0])
    if len(din) != 2 or len(dout) != 2 or not isinstance(din[1], int) or not isinstance(dout[1], int) \
            or din[0] != dout[0]:
        return False, f"input {din} / output {dout} are not [batch, n] / [batch, m]"
    for t in inits.values():
        if t.data_type != elem or t.data_location == 1:  # EXTERNAL
            return False, f"initializer {t.name!r} is not a {('float32', 'float64')[elem == _DOUBLE]} tensor in the file"
    values = {inputs[0].name}
    used_inits: set = set()
    for k, node in enumerate(g.node):
        where = f"node {k} ({node.op_type} {node.name!r})"
        if node.domain not in ("", "ai.onnx") or any(a.type in (5, 10, 11, 12) for a in node.attribute):
            return False, f"{where}: custom domain or sub-graph attribute"
        if len(node.output) != 1 or node.output[0] in values or node.output[0] in inits:
            return False, f"{where}: must write one new tensor"
        ins = list(node.input)
        if node.op_type == "Gemm":
            attrs = {a.name: a for a in node.attribute}
            if set(attrs) != {"transB"} or attrs["transB"].i != 1 or len(ins) != 3:
                return False, f"{where}: only Gemm(x, W, b) with transB=1 is the writer's form"
            if ins[0] not in values or ins[1] not in inits or ins[2] not in inits:
                return False, f"{where}: data must be a network value, weight and bias initializers"
            w, b = inits[ins[1]], inits[ins[2]]
            if len(w.dims) != 2 or list(b.dims) != [w.dims[0]]:
                return False, f"{where}: weight {list(w.dims)} / bias {list(b.dims)} shapes"
            used_inits.update(ins[1:])
        elif node.op_type == "Relu":
            if len(ins) != 1 or ins[0] not in values or node.attribute:
                return False, f"{where}: Relu of one network value"
        elif node.op_type == "Add":
            if len(ins) != 2 or any(i not in values for i in ins) or node.attribute:
                return False, f"{where}: Add of two network values"
        elif node.op_type == "Identity":
            if k != len(g.node) - 1 or len(ins) != 1 or ins[0] not in values or node.output[0] != g.output[0].name:
                return False, f"{where}: Identity only as the last node, to the output"
        else:
            return False, f"{where}: op {node.op_type!r} is not in the writer's form (Gemm, Relu, Add, Identity)"
        values.add(node.output[0])
    if g.output[0].name not in values or not g.node or g.node[-1].op_type != "Identity":
        return False, "the output is not produced by a final Identity"
    if set(inits) != used_inits:
        return False, "unused initializers"
    return True, ""
