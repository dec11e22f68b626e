"""The op table: one handler per ONNX op type, ``handler(tracer, node, inputs, attributes)
-> list of outputs``, in :data:`_HANDLERS` (a dict from op type); output heads included.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np
from onnx import helper, TensorProto

from ...errors import UnsupportedOp
from ...graph import neuron_id, Relu
from .checks import _DATA_TYPES, _tensor_to_array
from .conv_ops import _apply_conv, CONV_HANDLERS
from .nodes import _add_values, _broadcast_select, _exact_division
from .values import (_exact_add, _exact_mul, _FLOAT_TYPES, _is_const, _is_pow2, _Lin, _need_const,
                     _need_dense, _need_value, _size, _spend)

if TYPE_CHECKING:  # annotations only: no import at run time
    from .tracer import _Tracer


#: input positions an op may leave empty ("")
_OPTIONAL_INPUTS = {"Dropout": (1, 2), "Squeeze": (1,), "Unsqueeze": (1,), "Gemm": (2,)}


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
    x, idx = ins[0], ins[1]
    if not _is_const(idx):
        raise t.error("Gather with network values as indices is not supported", UnsupportedOp)
    if idx.dtype.kind not in "iu":
        raise t.error(f"Gather indices have dtype {idx.dtype}, expected integers")
    r = len(x.shape)
    axis = int(attrs.get("axis", 0))
    if not -r <= axis < r:
        raise t.error(f"axis {axis} is out of range for rank {r}")
    axis %= r
    n = int(x.shape[axis])
    k = idx.astype(np.int64)
    if np.any((k < -n) | (k >= n)):
        bad = int(k[(k < -n) | (k >= n)].ravel()[0])
        raise t.error(f"Gather index {bad} is out of range for an axis of size {n}")
    k = np.where(k < 0, k + n, k)
    shape = tuple(x.shape[:axis]) + tuple(k.shape) + tuple(x.shape[axis + 1:])
    if _is_const(x):
        _need_const(shape, "the result of this Gather")
        return [np.take(x, k, axis=axis)]
    # constant indices into a network value: a row selection
    _need_value(shape, "the Gather result")
    sel = np.take(np.arange(x.size).reshape(x.shape), k, axis=axis)
    return [t.apply(x, _Lin(shape, select=sel.ravel()))]


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
    if len(x.shape) in (3, 4) and x.shape[0] == 1:
        # on feature maps: a 1x1 convolution with one group per channel (kept in conv form)
        hw = tuple(int(d) for d in x.shape[2:])
        hw = (1,) + hw if len(hw) == 1 else hw
        return [_apply_conv(t, x, scale.reshape(C, 1, 1, 1), shift, (C,) + hw, hw, (1, 1), (1, 1),
                            (0, 0), C, len(x.shape) - 2, tuple(x.shape))]
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
    **CONV_HANDLERS,
}

#: ONNX op types the reader understands.
SUPPORTED_OPS = tuple(sorted(_HANDLERS))
