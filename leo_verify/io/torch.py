"""PyTorch reader and writer.

Reading (:func:`from_torch`) traces the module with :func:`torch.fx.symbolic_trace`
and maps every fx node through a handler table (module type / function /
method name -> handler).  Semantics are the module's **eval-mode** semantics:

* ``nn.Linear`` -> one ``Affine`` node whose weights are the module's own
  (float32 -> float64 is exact).  Linear layers are never folded into each
  other or into a BatchNorm: composing affine maps in floating point rounds,
  and the graph must *be* the user's network.
* ``nn.BatchNorm1d`` -> its own diagonal ``Affine`` with, **by definition**,
  ``scale = gamma / sqrt(running_var + eps)`` and
  ``shift = beta - running_mean * scale``, both computed in float64 from the
  stored parameters.  (BatchNorm involves a square root, so no float network
  equals it exactly; this float64 affine map is the network leo_verify
  certifies.  It agrees with torch's own evaluation to rounding.)
* ``nn.ReLU`` / ``torch.relu`` / ``F.relu`` / ``.relu()`` -> ``Relu`` with
  neuron ids ``neuron_id(node, i)``.
* ``+`` / ``torch.add`` / ``.add()`` of two tensors -> ``Add``.
* an output head as the last operation: ``nn.Softmax`` / ``nn.LogSoftmax`` /
  ``F.softmax`` / ``F.log_softmax`` / ``torch.softmax`` / ``.softmax()`` (and
  log-) over the last dim, ``nn.Sigmoid`` / ``torch.sigmoid`` / ``.sigmoid()``,
  ``nn.Tanh`` / ``torch.tanh`` / ``.tanh()``, ``torch.argmax(dim=-1)`` /
  ``.argmax(dim=-1)``: the ``head`` of the :class:`~leo_verify.graph.Output`
  op (attributes in ONNX terms: ``axis``, ``keepdims``).  A head read by any
  other operation is an :class:`UnsupportedOp` naming its fx node.
* ``nn.Identity``, ``nn.Dropout`` (eval: identity), ``F.dropout(training=False)``,
  ``nn.Flatten`` / ``torch.flatten`` / ``.flatten()`` (a reshape that keeps
  the batch dimension: identity on the row-major flat vector) produce no node.

Anything else raises :class:`UnsupportedOp` naming the fx node.  Note that
fx records ``a += b`` as an out-of-place ``a + b``; eager torch mutates
``a``.  Explicit in-place ops (``inplace=True``, ``relu_``, ``add_``) are
accepted only when no later operation reads an alias of the mutated tensor.

Hostile files: :func:`load_torch_file` uses ``torch.load(weights_only=True)``
only (a pickle with a malicious ``__reduce__`` is refused, never run; no other
code path unpickles), refuses files over
:data:`leo_verify.io.limits.MAX_FILE_BYTES` before reading them and tensors
over :data:`~leo_verify.io.limits.MAX_ELEMENTS` (e.g. a stride-0 view of a
one-element storage declaring 10^12 elements) before copying them.

Writing: :func:`to_torch` builds an ``nn.Sequential`` for chains and a
:class:`LeoNetwork` for DAGs; :func:`save_torch` writes a chain MLP's state
dict; :func:`load_torch_file` reads one back with ``weights_only=True``.
"""
from __future__ import annotations

import io
import math
import operator
import os
import pickle
import re
import struct
import warnings
import zipfile
from collections import OrderedDict
from typing import Callable, Mapping, NamedTuple

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import GraphError, InputFileError, ModelFormatError, UnsupportedOp, UsageError
from ..graph import Add, Affine, Graph, Input, Output, Relu, neuron_id
from ..util import atomic_write_bytes, check_file_size
from . import limits

__all__ = ["from_torch", "load_torch_file", "to_torch", "save_torch", "LeoNetwork", "Reshape",
           "ArgMax"]

_FLOAT_DTYPES = {torch.float32: "float32", torch.float64: "float64"}
_REQUIRED = object()


class _Val(NamedTuple):
    """A traced value: the graph node computing it and its shape (no batch dim)."""

    node: str
    shape: tuple

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class _HeadVal(NamedTuple):
    """The output of an output head (softmax, ..., argmax) applied to the logits ``logits``."""

    logits: _Val
    head: str
    attrs: tuple
    where: str
    shape: tuple  # of the head's output, without the batch dim
    label: str    # the module class or function, for messages


# ---------------------------------------------------------------------------
# from_torch: the builder and its handlers
# ---------------------------------------------------------------------------
class _Builder:
    """State of one conversion: the graph being built and fx node -> value."""

    def __init__(self, graph: Graph, fx_nodes: list):
        self.graph = graph
        self.env: dict = {}
        self.pos = {n: i for i, n in enumerate(fx_nodes)}
        self.dtypes: set = set()

    @staticmethod
    def where(node) -> str:
        if node.op == "call_module":
            return f"fx node {node.name!r} (module {node.target!r})"
        if node.op in ("call_function", "call_method"):
            return f"fx node {node.name!r} ({_fn_name(node)})"
        return f"fx node {node.name!r}"

    def tensor(self, node, value, what: str) -> _Val:
        v = self.value(node, value, what)
        if isinstance(v, _HeadVal):
            raise UnsupportedOp(f"{v.where}: {v.label} is supported only as the output head (the "
                                f"last operation, after the last Linear), but its output is read by "
                                f"{self.where(node)}")
        return v

    def value(self, node, value, what: str):
        """Like :meth:`tensor`, but a head's output is returned too."""
        if not isinstance(value, torch.fx.Node) or value not in self.env:
            raise UnsupportedOp(f"{self.where(node)}: {what} is the constant {value!r}; "
                                "only tensors computed from the input are supported")
        return self.env[value]

    def param(self, node, tensor, label: str) -> np.ndarray:
        if tensor.dtype not in _FLOAT_DTYPES:
            raise UnsupportedOp(f"{self.where(node)}: {label} has dtype {tensor.dtype}; convert "
                                "the model with .float() or .double() first")
        self.dtypes.add(_FLOAT_DTYPES[tensor.dtype])
        # float32 -> float64 is exact: the graph holds the module's own numbers.
        return tensor.detach().cpu().to(torch.float64).numpy().copy()

    def emit(self, base: str, op, inputs) -> str:
        name = self.graph.fresh_name(base)
        self.graph.add(name, op, inputs)
        return name

    def check_inplace(self, node, x: _Val) -> None:
        """Refuse an in-place op whose mutation a later node would observe.

        Identity-like ops (Identity, Dropout, Flatten) return the same tensor
        or a view, so every fx node mapped to the same graph value aliases it.
        """
        for alias, val in self.env.items():
            if getattr(val, "node", None) != x.node:
                continue
            for user in alias.users:
                if user is not node and self.pos[user] > self.pos[node]:
                    raise UnsupportedOp(
                        f"{self.where(node)}: in-place op modifies {alias.name!r}, which "
                        f"{user.name!r} reads afterwards (eager torch would see the modified "
                        "tensor); use the out-of-place form")


def _fn_name(node) -> str:
    if node.op == "call_method":
        return f"method .{node.target}()"
    t = node.target
    mod = getattr(t, "__module__", None) or ("torch" if "torch" in repr(t) else "")
    return f"{mod}.{getattr(t, '__name__', repr(t))}".lstrip(".")


def _bind(b: _Builder, node, spec) -> dict:
    """Bind fx call arguments to ``spec`` = [(name, default)], refusing unknown ones."""
    args, kwargs = list(node.args), dict(node.kwargs)
    if len(args) > len(spec):
        raise UnsupportedOp(f"{b.where(node)}: too many arguments {args!r}")
    out = {}
    for i, (key, default) in enumerate(spec):
        if i < len(args):
            out[key] = args[i]
        elif key in kwargs:
            out[key] = kwargs.pop(key)
        elif default is _REQUIRED:
            raise UnsupportedOp(f"{b.where(node)}: missing argument {key!r}")
        else:
            out[key] = default
    if kwargs:
        raise UnsupportedOp(f"{b.where(node)}: unsupported keyword argument(s) {sorted(kwargs)}")
    return out


def _emit_relu(b: _Builder, node, x: _Val, base: str, inplace: bool) -> _Val:
    if inplace:
        b.check_inplace(node, x)
    name = b.graph.fresh_name(base)
    b.graph.add(name, Relu([neuron_id(name, i) for i in range(x.size)]), [x.node])
    return _Val(name, x.shape)


def _emit_add(b: _Builder, node, x: _Val, y: _Val, alpha, inplace: bool) -> _Val:
    if not (isinstance(alpha, (int, float)) and alpha == 1):
        raise UnsupportedOp(f"{b.where(node)}: add with alpha={alpha!r} is not supported")
    if x.shape != y.shape:
        raise UnsupportedOp(f"{b.where(node)}: adds shapes {x.shape} and {y.shape} "
                            "(broadcasting is not supported)")
    if inplace:
        b.check_inplace(node, x)
    if x.node == y.node:
        # x + x: the graph has no parallel edges; 2*x is the same float exactly.
        n = x.size
        name = b.emit(node.name, Affine(2.0 * np.eye(n), np.zeros(n)), [x.node])
    else:
        name = b.emit(node.name, Add(x.size, 2), [x.node, y.node])
    return _Val(name, x.shape)


def _flatten(b: _Builder, node, x: _Val, start, end) -> _Val:
    """A flatten that keeps the batch dim is a reshape: no node, new shape."""
    nd = 1 + len(x.shape)  # with the batch dim
    s = start + nd if start < 0 else start
    e = end + nd if end < 0 else end
    if not (0 <= s < nd and 0 <= e < nd) or s > e:
        raise UnsupportedOp(f"{b.where(node)}: flatten(start_dim={start}, end_dim={end}) "
                            f"of a tensor with {nd} dims (batch included)")
    if s == e:
        return x
    if s == 0:
        raise UnsupportedOp(f"{b.where(node)}: flatten(start_dim={start}) merges the batch "
                            "dimension into the features; use start_dim=1")
    full = (None,) + x.shape
    return _Val(x.node, full[1:s] + (math.prod(full[s:e + 1]),) + full[e + 1:])


# -- module handlers: fn(builder, node, module) -> _Val -----------------------
def _linear(b: _Builder, node, mod: nn.Linear) -> _Val:
    x = b.tensor(node, node.args[0], "the input")
    if len(x.shape) != 1:
        raise UnsupportedOp(f"{b.where(node)}: Linear applied to a tensor of shape {x.shape}; "
                            "flatten it first (or pass input_size as an int)")
    if x.size != mod.in_features:
        raise ModelFormatError(f"{b.where(node)}: expects {mod.in_features} inputs, "
                               f"gets {x.size} (check input_size)")
    w = b.param(node, mod.weight, "weight")
    bias = (b.param(node, mod.bias, "bias") if mod.bias is not None
            else np.zeros(mod.out_features))
    return _Val(b.emit(node.target, Affine(w, bias), [x.node]), (mod.out_features,))


def _batchnorm(b: _Builder, node, mod: nn.BatchNorm1d) -> _Val:
    x = b.tensor(node, node.args[0], "the input")
    if mod.running_mean is None or mod.running_var is None:
        raise UnsupportedOp(f"{b.where(node)}: BatchNorm1d with track_running_stats=False "
                            "normalises with batch statistics, which is not a fixed function")
    if len(x.shape) != 1 or x.size != mod.num_features:
        raise UnsupportedOp(f"{b.where(node)}: BatchNorm1d({mod.num_features}) applied to "
                            f"shape {x.shape}; only (batch, features) inputs are supported")
    n = mod.num_features
    mean = b.param(node, mod.running_mean, "running_mean")
    var = b.param(node, mod.running_var, "running_var")
    gamma = b.param(node, mod.weight, "weight") if mod.weight is not None else np.ones(n)
    beta = b.param(node, mod.bias, "bias") if mod.bias is not None else np.zeros(n)
    # The definition (see module docstring): float64 scale/shift.
    scale = gamma / np.sqrt(var + float(mod.eps))
    shift = beta - mean * scale
    return _Val(b.emit(node.target, Affine(np.diag(scale), shift), [x.node]), x.shape)


def _relu_module(b, node, mod: nn.ReLU) -> _Val:
    x = b.tensor(node, node.args[0], "the input")
    return _emit_relu(b, node, x, node.target, bool(mod.inplace))


def _flatten_module(b, node, mod: nn.Flatten) -> _Val:
    x = b.tensor(node, node.args[0], "the input")
    return _flatten(b, node, x, mod.start_dim, mod.end_dim)


def _identity_module(b, node, mod) -> _Val:
    return b.tensor(node, node.args[0], "the input")


# -- output heads ----------------------------------------------------------------
def _emit_head(b: _Builder, node, x: _Val, head: str, dim=None, keepdim=None,
               label: str = "") -> _HeadVal:
    """A head on the logits ``x``; ``dim`` counts the batch dim (torch's convention)."""
    nd = 1 + len(x.shape)
    attrs: tuple = ()
    out_shape = x.shape
    if head in ("softmax", "logsoftmax", "argmax"):
        if dim is None and head != "argmax" and nd == 2:
            dim = 1  # torch's legacy implicit dim for 2-D inputs
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise UnsupportedOp(f"{b.where(node)}: {head} with dim={dim!r}; pass the logit dim "
                                "(dim=-1) explicitly")
        d = dim + nd if dim < 0 else dim
        if d != nd - 1 or d == 0:
            raise UnsupportedOp(f"{b.where(node)}: {head} over dim {dim} of a tensor with {nd} dims "
                                "(batch included): only a head over the last dim (the logits of one "
                                "sample) is supported")
        if any(s != 1 for s in x.shape[:-1]):
            raise UnsupportedOp(f"{b.where(node)}: {head} over the last dim of a (batch, "
                                f"{', '.join(map(str, x.shape))}) tensor acts on groups of "
                                f"{x.shape[-1]} of its {x.size} values per sample; only a head "
                                "over all the outputs of a sample is supported")
        attrs = (("axis", d),)
        if head == "argmax":
            attrs += (("keepdims", int(bool(keepdim))),)
            out_shape = x.shape[:-1] + ((1,) if keepdim else ())
    return _HeadVal(x, head, attrs, b.where(node), out_shape, label or head)


def _head_module(head: str):
    def handler(b, node, mod) -> _HeadVal:
        x = b.tensor(node, node.args[0], "the input")
        return _emit_head(b, node, x, head, getattr(mod, "dim", None), label=type(mod).__name__)
    return handler


def _head_fn(head: str, spec):
    def handler(b, node) -> _HeadVal:
        a = _bind(b, node, spec)
        if a.get("dtype") is not None:
            raise UnsupportedOp(f"{b.where(node)}: {head} with dtype={a['dtype']!r} is not supported")
        if a.get("out") is not None:
            raise UnsupportedOp(f"{b.where(node)}: {head} with out= is not supported")
        x = b.tensor(node, a["input"], "the input")
        return _emit_head(b, node, x, head, a.get("dim"), a.get("keepdim"), label=_fn_name(node))
    return handler


_SOFTMAX_FN = [("input", _REQUIRED), ("dim", None), ("_stacklevel", 3), ("dtype", None)]
_SOFTMAX_T = [("input", _REQUIRED), ("dim", _REQUIRED), ("dtype", None)]
_SOFTMAX_M = [("input", _REQUIRED), ("dim", _REQUIRED), ("dtype", None)]
_ARGMAX = [("input", _REQUIRED), ("dim", None), ("keepdim", False)]
_ELEMENTWISE = [("input", _REQUIRED), ("out", None)]


_MODULE_HANDLERS: Mapping[type, Callable] = {
    nn.Softmax: _head_module("softmax"),
    nn.LogSoftmax: _head_module("logsoftmax"),
    nn.Sigmoid: _head_module("sigmoid"),
    nn.Tanh: _head_module("tanh"),
    nn.Linear: _linear,
    nn.BatchNorm1d: _batchnorm,
    nn.ReLU: _relu_module,
    nn.Flatten: _flatten_module,
    nn.Identity: _identity_module,
    nn.Dropout: _identity_module,  # eval-mode semantics
}


# -- function / method handlers: fn(builder, node) -> _Val ---------------------
def _relu_fn(inplace_default: bool, spec):
    def handler(b, node):
        a = _bind(b, node, spec)
        x = b.tensor(node, a["input"], "the input")
        return _emit_relu(b, node, x, node.name, bool(a.get("inplace", inplace_default)))
    return handler


def _add_fn(spec, inplace: bool):
    def handler(b, node):
        a = _bind(b, node, spec)
        x = b.tensor(node, a["input"], "the first operand")
        y = b.tensor(node, a["other"], "the second operand")
        return _emit_add(b, node, x, y, a.get("alpha", 1), inplace)
    return handler


def _flatten_fn(b, node):
    a = _bind(b, node, [("input", _REQUIRED), ("start_dim", 0), ("end_dim", -1)])
    x = b.tensor(node, a["input"], "the input")
    return _flatten(b, node, x, a["start_dim"], a["end_dim"])


def _dropout_fn(b, node):
    a = _bind(b, node, [("input", _REQUIRED), ("p", 0.5), ("training", True), ("inplace", False)])
    if a["training"] and a["p"] != 0:
        # F.dropout defaults to training=True: random even when the module is in eval mode.
        raise UnsupportedOp(f"{b.where(node)}: F.dropout with training=True is random; "
                            "pass training=self.training and use eval mode")
    return b.tensor(node, a["input"], "the input")


_IN = [("input", _REQUIRED)]
_ADD = [("input", _REQUIRED), ("other", _REQUIRED), ("alpha", 1)]

_FUNCTION_HANDLERS: Mapping[Callable, Callable] = {
    torch.relu: _relu_fn(False, _IN),
    torch.relu_: _relu_fn(True, _IN),
    F.relu: _relu_fn(False, _IN + [("inplace", False)]),
    operator.add: _add_fn([("input", _REQUIRED), ("other", _REQUIRED)], False),
    torch.add: _add_fn(_ADD, False),
    torch.flatten: _flatten_fn,
    F.dropout: _dropout_fn,
    F.softmax: _head_fn("softmax", _SOFTMAX_FN),
    F.log_softmax: _head_fn("logsoftmax", _SOFTMAX_FN),
    torch.softmax: _head_fn("softmax", _SOFTMAX_T),
    torch.log_softmax: _head_fn("logsoftmax", _SOFTMAX_T),
    torch.sigmoid: _head_fn("sigmoid", _ELEMENTWISE),
    F.sigmoid: _head_fn("sigmoid", [("input", _REQUIRED)]),
    torch.tanh: _head_fn("tanh", _ELEMENTWISE),
    F.tanh: _head_fn("tanh", [("input", _REQUIRED)]),
    torch.argmax: _head_fn("argmax", _ARGMAX + [("out", None)]),
}

_METHOD_HANDLERS: Mapping[str, Callable] = {
    "relu": _relu_fn(False, _IN),
    "relu_": _relu_fn(True, _IN),
    "add": _add_fn(_ADD, False),
    "add_": _add_fn(_ADD, True),
    "flatten": _flatten_fn,
    "softmax": _head_fn("softmax", _SOFTMAX_M),
    "log_softmax": _head_fn("logsoftmax", _SOFTMAX_M),
    "sigmoid": _head_fn("sigmoid", [("input", _REQUIRED)]),
    "tanh": _head_fn("tanh", [("input", _REQUIRED)]),
    "argmax": _head_fn("argmax", _ARGMAX),
}


def _handler_for(node, root: nn.Module):
    if node.op == "call_module":
        mod = root.get_submodule(node.target)
        h = _MODULE_HANDLERS.get(type(mod))
        if h is None:
            raise UnsupportedOp(
                f"{_Builder.where(node)}: {type(mod).__name__} is not supported (supported "
                f"modules: {', '.join(sorted(t.__name__ for t in _MODULE_HANDLERS))})")
        return lambda b, n: h(b, n, mod)
    table, key = ((_FUNCTION_HANDLERS, node.target) if node.op == "call_function"
                  else (_METHOD_HANDLERS, node.target) if node.op == "call_method"
                  else (None, None))
    h = table.get(key) if table is not None else None
    if h is None:
        what = _fn_name(node) if table is not None else f"op {node.op!r} target {node.target!r}"
        raise UnsupportedOp(f"{_Builder.where(node)}: {what} is not supported")
    return h


# -- input size inference -----------------------------------------------------
_TRANSPARENT_MODULES = (nn.ReLU, nn.Flatten, nn.Identity, nn.Dropout)


def _infer_input_size(fx_nodes, placeholder, root) -> int | None:
    """in_features of the first Linear/BatchNorm1d fed (through size-preserving ops) by the input."""
    reach = {placeholder}
    for node in fx_nodes:
        if not any(isinstance(a, torch.fx.Node) and a in reach for a in node.all_input_nodes):
            continue
        if node.op == "call_module":
            mod = root.get_submodule(node.target)
            if type(mod) is nn.Linear:
                return mod.in_features
            if type(mod) is nn.BatchNorm1d:
                return mod.num_features
            if type(mod) in _TRANSPARENT_MODULES:
                reach.add(node)
        elif (node.op == "call_function" and node.target in _FUNCTION_HANDLERS) or \
                (node.op == "call_method" and node.target in _METHOD_HANDLERS):
            reach.add(node)  # relu, add, flatten, dropout keep the size
    return None


def _trace(module: nn.Module, name: str) -> torch.fx.GraphModule:
    if type(module) in _MODULE_HANDLERS:
        # Tracing a leaf module as the root would trace *into* it (F.linear...):
        # wrap it so it is one call_module node.
        module = nn.Sequential(OrderedDict([(type(module).__name__.lower(), module)]))
    try:
        return torch.fx.symbolic_trace(module)
    except Exception as exc:  # user code may raise anything while tracing
        raise UnsupportedOp(f"cannot trace torch module {name!r} with torch.fx "
                            f"({type(exc).__name__}: {_one_line(exc)})") from None


def from_torch(module, *, input_size=None, name: str | None = None) -> Graph:
    """Convert a ``torch.nn.Module`` to a :class:`Graph` (eval-mode semantics).

    Parameters
    ----------
    module : torch.nn.Module
        ``nn.Sequential`` (possibly nested) or any module ``torch.fx`` can
        trace, built from the operations listed in the module docstring.
    input_size : int or tuple of int, optional
        Features per example (a tuple is a per-example shape, without the
        batch dim).  Default: the ``in_features`` of the first Linear /
        BatchNorm1d that consumes the input.
    name : str, optional
        Graph name; default the module's class name.

    Returns
    -------
    Graph
        One ``Affine`` per Linear / BatchNorm1d (never folded), one ``Relu``
        per ReLU, one ``Add`` per residual add; linted.

    Raises
    ------
    UnsupportedOp
        An operation outside the supported set (the message names the fx node).
    UsageError
        The input size cannot be inferred and ``input_size`` was not given.
    """
    if not isinstance(module, nn.Module):
        raise ModelFormatError(f"from_torch expects a torch.nn.Module, got {type(module).__name__}")
    name = name or type(module).__name__
    gm = _trace(module, name)
    fx_nodes = list(gm.graph.nodes)
    placeholders = [n for n in fx_nodes if n.op == "placeholder"]
    used = [n for n in placeholders if n.users]
    if len(used) > 1 or not placeholders:
        raise UnsupportedOp(f"torch module {name!r} takes {len(used)} tensor inputs "
                            f"({', '.join(n.target for n in used)}); exactly one is supported")
    ph = used[0] if used else placeholders[0]
    # Resolve every handler first: an unsupported op is the more useful error
    # than "cannot infer the input size" when both apply.
    handlers = {n: _handler_for(n, gm) for n in fx_nodes if n.op not in ("placeholder", "output")}
    if input_size is None:
        size = _infer_input_size(fx_nodes, ph, gm)
        if size is None:
            raise UsageError(f"cannot infer the input size of torch module {name!r} (no Linear or "
                             "BatchNorm1d reads the input): pass input_size=")
        shape = (size,)
    else:
        shape = (int(input_size),) if isinstance(input_size, (int, np.integer)) \
            else tuple(int(s) for s in input_size)
        if not shape or any(s <= 0 for s in shape):
            raise UsageError(f"input_size must be positive, got {input_size!r}")

    graph = Graph(name=name, metadata={"source": f"torch module {type(module).__name__}",
                                       "format": "torch"})
    b = _Builder(graph, fx_nodes)
    head, out_shape = "none", ()
    for node in fx_nodes:
        if node.op == "placeholder":
            if node is ph:
                b.env[node] = _Val(b.emit(str(node.target), Input(math.prod(shape), shape), []), shape)
            continue
        if node.op == "output":
            result = node.args[0]
            if not isinstance(result, torch.fx.Node):
                raise UnsupportedOp(f"torch module {name!r} returns {type(result).__name__}; "
                                    "only a single tensor output is supported")
            out = b.value(node, result, "the output")
            head, attrs, out_shape = "none", (), None
            if isinstance(out, _HeadVal):
                head, attrs, out_shape, out = out.head, out.attrs, out.shape, out.logits
            b.emit("output", Output(out.size, out.shape, head=head, head_attrs=attrs), [out.node])
            out_shape = out.shape if out_shape is None else out_shape
            continue
        b.env[node] = handlers[node](b, node)
    graph.metadata["dtype"] = "float32" if "float32" in b.dtypes or not b.dtypes else "float64"
    elem = 1 if graph.metadata["dtype"] == "float32" else 11  # onnx FLOAT / DOUBLE
    in_name = str(ph.target)
    out_name = "output" if in_name != "output" else "y"
    graph.metadata["io"] = {
        "input": {"name": in_name, "elem_type": elem, "shape": ["batch", *shape]},
        "output": {"name": out_name, "elem_type": 7 if head == "argmax" else elem,
                   "shape": ["batch", *out_shape]}}
    return graph.lint(where="torch loader")


# ---------------------------------------------------------------------------
# state-dict files
# ---------------------------------------------------------------------------
#: what torch.load raises on corrupt or truncated files (found by fuzzing, see
#: tests/test_fuzz_readers.py); anything else is a bug and is not swallowed.
_TORCH_LOAD_ERRORS = (RuntimeError, EOFError, ValueError, TypeError, KeyError, IndexError,
                      AssertionError, AttributeError, OverflowError, UnicodeDecodeError,
                      struct.error, zipfile.BadZipFile)


def _one_line(exc: BaseException, limit: int = 240) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # torch's weights_only refusal buries the reason under generic advice.
    pick = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0] if lines else "")
    # torch appends paragraphs of advice after the first sentence.
    pick = pick.split(". ")[0] or type(exc).__name__
    return pick if len(pick) <= limit else pick[:limit - 3] + "..."


def _layers_of(sd: Mapping, path: str) -> list[tuple[str, dict]]:
    """Group ``prefix.weight`` / ``prefix.bias`` keys, in key order, into layers."""
    layers: list[tuple[str, dict]] = []
    for key, value in sd.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ModelFormatError(f"model file {path!r}: entry {key!r} is a {type(value).__name__}, "
                                   "not a tensor: expected a state dict of Linear layers")
        prefix, _, leaf = key.rpartition(".")
        if leaf not in ("weight", "bias"):
            raise ModelFormatError(
                f"model file {path!r}: unexpected key {key!r}; only Linear layers "
                "('<layer>.weight', '<layer>.bias') are supported in a state-dict file")
        if layers and layers[-1][0] == prefix and leaf not in layers[-1][1]:
            layers[-1][1][leaf] = (key, value)
        elif any(p == prefix for p, _ in layers):
            raise ModelFormatError(f"model file {path!r}: key {key!r} is not next to the other "
                                   f"parameters of layer {prefix!r}")
        else:
            layers.append((prefix, {leaf: (key, value)}))
    return layers


def _relu_name(prefix: str, prefixes: set) -> str:
    # nn.Sequential(Linear, ReLU, Linear) has keys "0.*", "2.*": call the ReLU
    # "1" so neuron ids match from_torch on that Sequential.
    head, _, last = prefix.rpartition(".")
    if last.isdigit():
        cand = f"{head}.{int(last) + 1}" if head else str(int(last) + 1)
        if cand not in prefixes:
            return cand
    return f"{prefix}.relu" if prefix else "relu"


def _unwrap_state_dict(obj, path: str) -> Mapping:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner  # a training checkpoint wrapping the state dict
        return obj
    raise ModelFormatError(f"model file {path!r} holds a {type(obj).__name__}, not a state dict "
                           "(save model.state_dict())")


def load_torch_file(path, *, name: str | None = None, input_size=None) -> Graph:
    """Load a ``.pt`` / ``.pth`` file holding the state dict of a Linear/ReLU MLP.

    The file is read with ``torch.load(path, map_location="cpu",
    weights_only=True)``: arbitrary pickled objects are refused, never run.
    Interpretation: the ``<layer>.weight`` / ``<layer>.bias`` pairs in key
    order are Linear layers (bias optional), with a ReLU between consecutive
    layers and none after the last.  A checkpoint dict whose ``state_dict`` or
    ``model_state_dict`` entry is the state dict is accepted too.

    Parameters
    ----------
    path : str or os.PathLike
    name : str, optional
        Graph name; default the file name without suffix.
    input_size : int, optional
        If given, must equal the first layer's ``in_features``.

    Raises
    ------
    InputFileError
        The file does not exist or cannot be read.
    ModelFormatError
        Not a weights-only torch file, not a state dict, a key that is not a
        Linear parameter, or layer shapes that do not chain.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputFileError(f"model file {path!r} does not exist or is not a file")
    check_file_size(path, what="model file", limit=limits.MAX_FILE_BYTES, name="MAX_FILE_BYTES",
                    error=ModelFormatError)
    try:
        with warnings.catch_warnings():
            # torch warns about odd pickle protocols etc.: the file is accepted or refused
            # below, a warning on stderr would only add noise to the one-line error
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise InputFileError(f"cannot read model file {path!r}: {exc.strerror or exc}") from None
    except pickle.UnpicklingError as exc:
        raise ModelFormatError(f"model file {path!r} was refused by torch.load(weights_only=True) "
                               f"({_one_line(exc)}); save model.state_dict() instead") from None
    except _TORCH_LOAD_ERRORS as exc:  # truncated zip, garbage bytes: torch raises many kinds
        raise ModelFormatError(f"model file {path!r} is not a readable torch file "
                               f"({type(exc).__name__}: {_one_line(exc)})") from None
    sd = _unwrap_state_dict(obj, path)
    layers = _layers_of(sd, path)
    if not layers:
        raise ModelFormatError(f"model file {path!r}: the state dict has no Linear layers")

    graph = Graph(name=name or os.path.splitext(os.path.basename(path))[0],
                  metadata={"source": path, "format": "torch"})
    prefixes = {p for p, _ in layers}
    dtypes = set()
    budget = limits.Budget()  # stride-0 views let a tiny file declare many huge tensors
    prev_node, prev_out = None, None
    for i, (prefix, params) in enumerate(layers):
        if "weight" not in params:
            raise ModelFormatError(f"model file {path!r}: layer {prefix!r} has a bias but no weight")
        wkey, w = params["weight"]
        if w.ndim != 2:
            raise ModelFormatError(f"model file {path!r}: {wkey!r} has shape {tuple(w.shape)}, "
                                   "expected (out_features, in_features)")
        out_f, in_f = (int(s) for s in w.shape)
        if prev_node is None:
            if input_size is not None and int(input_size) != in_f:
                raise UsageError(f"input_size={input_size} but {wkey!r} expects {in_f} inputs")
            if in_f <= 0:
                raise ModelFormatError(f"model file {path!r}: {wkey!r} has no input columns")
            prev_node, prev_out = graph.add("input", Input(in_f, (in_f,))), in_f
        elif in_f != prev_out:
            raise ModelFormatError(f"model file {path!r}: {wkey!r} has shape {tuple(w.shape)} "
                                   f"(expects {in_f} inputs) but the previous layer has "
                                   f"{prev_out} outputs")
        bias = np.zeros(out_f)
        tensors = [(wkey, w)]
        if "bias" in params:
            bkey, bt = params["bias"]
            if tuple(bt.shape) != (out_f,):
                raise ModelFormatError(f"model file {path!r}: {bkey!r} has shape {tuple(bt.shape)}, "
                                       f"expected ({out_f},) to match {wkey!r} {tuple(w.shape)}")
            tensors.append((bkey, bt))
        arrays = []
        for key, t in tensors:
            if t.dtype not in _FLOAT_DTYPES or t.layout != torch.strided:
                raise ModelFormatError(f"model file {path!r}: {key!r} is a {t.dtype} "
                                       f"{t.layout} tensor; expected dense float32/float64")
            # a stride-0 view of a tiny storage may declare any size: check before copying
            n = math.prod(int(d) for d in t.shape)
            if n > limits.MAX_ELEMENTS:
                raise ModelFormatError(f"model file {path!r}: {key!r} has shape {tuple(t.shape)}, "
                                       f"{limits.describe(n)} elements, more than the limit of "
                                       f"{limits.MAX_ELEMENTS} (leo_verify.io.limits.MAX_ELEMENTS)")
            msg = budget.add("elements", n)
            if msg:
                raise ModelFormatError(f"model file {path!r}: at {key!r}, {msg}")
            dtypes.add(_FLOAT_DTYPES[t.dtype])
            arrays.append(t.detach().to(torch.float64).numpy().copy())
        if len(arrays) == 2:
            bias = arrays[1]
        node = graph.add(graph.fresh_name(prefix or "linear"), Affine(arrays[0], bias), [prev_node])
        if i < len(layers) - 1:
            msg = budget.add("neurons", out_f)
            if msg:
                raise ModelFormatError(f"model file {path!r}: at layer {prefix!r}, {msg}")
            rname = graph.fresh_name(_relu_name(prefix, prefixes))
            node = graph.add(rname, Relu([neuron_id(rname, j) for j in range(out_f)]), [node])
        prev_node, prev_out = node, out_f
    graph.add(graph.fresh_name("output"), Output(prev_out, (prev_out,)), [prev_node])
    graph.metadata["dtype"] = "float32" if "float32" in dtypes else "float64"
    try:
        return graph.lint(where="torch loader")
    except GraphError as e:  # e.g. a NaN weight: say which file
        raise GraphError(f"model file {path!r}: {e}") from e


# ---------------------------------------------------------------------------
# to_torch / save_torch
# ---------------------------------------------------------------------------
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _resolve_dtype(graph: Graph, dtype) -> torch.dtype:
    if dtype is None:
        dtype = graph.metadata.get("dtype", "float32")
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise UsageError(f"dtype must be float32 or float64, got {dtype!r}")
        return _DTYPES[dtype]
    if dtype not in _FLOAT_DTYPES:
        raise UsageError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def _to_linear(op: Affine, dtype: torch.dtype) -> nn.Linear:
    # Built on the meta device: no random initialisation to throw away.
    with warnings.catch_warnings():  # a layer with no units is legitimate here
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        lin = nn.Linear(op.in_size, op.size, dtype=dtype, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        # The float weights (a rewrite's exact rationals, if any, are rounded
        # like in every float emitter).
        lin.weight.copy_(torch.from_numpy(np.array(op.weight)).to(dtype))
        lin.bias.copy_(torch.from_numpy(np.array(op.bias)).to(dtype))
    return lin


class _Keys:
    """Unique, valid submodule names derived from graph node names."""

    def __init__(self, reserved):
        self.used = set(reserved)

    def __call__(self, node: str) -> str:
        base = re.sub(r"\W", "_", node) or "node"
        key, k = base, 1
        while key in self.used:
            key, k = f"{base}_{k}", k + 1
        self.used.add(key)
        return key


class LeoNetwork(nn.Module):
    """A leo_verify :class:`Graph` with residual adds as a torch module.

    Linear and ReLU submodules are named after the graph nodes (``.`` and
    other non-identifier characters become ``_``); ``forward`` runs the graph
    in topological order on a ``(batch, n)`` tensor.  It is fx-traceable, so
    ``from_torch(to_torch(graph))`` works.
    """

    def __init__(self, graph: Graph, dtype: torch.dtype = torch.float32):
        super().__init__()
        keys = _Keys(dir(self))
        plan = []
        for node, op in graph.items():
            args = tuple(graph.args(node))
            if op.kind == "affine":
                key = keys(node)
                self.add_module(key, _to_linear(op, dtype))
            elif op.kind == "relu":
                key = keys(node)
                self.add_module(key, nn.ReLU())
            elif op.kind == "add":
                key = None
            else:
                continue
            plan.append((node, key, args))
        self._plan = tuple(plan)
        self._input = graph.input_name
        self._result = graph.args(graph.output_name)[0]

    def forward(self, x):
        values = {self._input: x}
        for node, key, args in self._plan:
            if key is None:
                out = values[args[0]]
                for a in args[1:]:
                    out = out + values[a]
            else:
                out = self._modules[key](values[args[0]])
            values[node] = out
        return values[self._result]


def _chain_nodes(graph: Graph) -> list[str] | None:
    """The nodes from input to output if the graph is a simple chain, else None."""
    if not graph.is_chain():
        return None
    nodes, cur = [], graph.input_name
    while True:
        nodes.append(cur)
        users = graph.users(cur)
        if not users:
            break
        cur = users[0]
    return nodes


class Reshape(nn.Module):
    """``x.reshape(shape)`` (the emitted module's trailing reshape of the logits;
    a ``-1`` first entry is the batch)."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(int(d) for d in shape)

    def forward(self, x):
        return x.reshape(self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class ArgMax(nn.Module):
    """``argmax`` over the last dim (ONNX ``ArgMax``: ``keepdims``, and the last
    maximal index with ``select_last_index``)."""

    def __init__(self, keepdim: bool = True, select_last_index: bool = False):
        super().__init__()
        self.keepdim, self.select_last_index = bool(keepdim), bool(select_last_index)

    def forward(self, x):
        if self.select_last_index:
            return x.shape[-1] - 1 - torch.argmax(torch.flip(x, [-1]), dim=-1, keepdim=self.keepdim)
        return torch.argmax(x, dim=-1, keepdim=self.keepdim)


def _head_to_module(op: Output, lay_attrs: tuple) -> nn.Module | None:
    attrs = dict(lay_attrs)
    if op.head == "none":
        return None
    if op.head == "softmax":
        return nn.Softmax(dim=-1)
    if op.head == "logsoftmax":
        return nn.LogSoftmax(dim=-1)
    if op.head == "sigmoid":
        return nn.Sigmoid()
    if op.head == "tanh":
        return nn.Tanh()
    return ArgMax(keepdim=bool(int(attrs.get("keepdims", 1))),
                  select_last_index=bool(int(attrs.get("select_last_index", 0))))


def to_torch(graph: Graph, *, dtype=None) -> nn.Module:
    """Build a torch module computing ``graph`` (the head included).

    Parameters
    ----------
    graph : Graph
    dtype : torch.float32, torch.float64, "float32" or "float64", optional
        Default ``graph.metadata["dtype"]`` (else float32).  float32 rounds
        weights that are not float32 numbers.

    Returns
    -------
    nn.Module
        An ``nn.Sequential`` of ``nn.Linear`` / ``nn.ReLU`` (named after the
        graph nodes) when the graph is a chain, else a :class:`LeoNetwork`.
        ReLU neuron ids are not kept (torch modules have no place for them).
        It takes the source model's input shape (``graph.metadata["io"]``, the
        layouts of :func:`leo_verify.io.onnx.to_onnx_model`: ``(B, n)``, ``(n,)``
        or ``(B, d1, ..., dk)``, the latter through a leading ``nn.Flatten``),
        returns the source's output shape (a trailing :class:`Reshape` where
        needed) and ends with the output head (``nn.Softmax(dim=-1)``,
        ``nn.LogSoftmax(dim=-1)``, ``nn.Sigmoid``, ``nn.Tanh``, :class:`ArgMax`);
        without that metadata it takes ``(batch, n)`` inputs.
    """
    from .onnx import _layout
    graph.lint(where="to_torch input")
    dtype = _resolve_dtype(graph, dtype)
    lay = _layout(graph, 13)
    out_op = graph.op(graph.output_name)
    head = _head_to_module(out_op, lay.head_attrs)
    chain = _chain_nodes(graph)
    keys = _Keys(dir(nn.Sequential()))
    layers = OrderedDict()
    if lay.pre == "flatten":
        layers[keys("flatten")] = nn.Flatten(start_dim=1)
    elif lay.pre == "reshape":  # an (n,) input: one sample, no batch dim
        layers[keys("reshape_input")] = Reshape((1, graph.input_size))
    if chain is None:
        core = LeoNetwork(graph, dtype).eval()
        if not layers and lay.post is None and head is None:
            return core
        layers[keys("network")] = core
    else:
        for node in chain[1:-1]:
            op = graph.op(node)
            layers[keys(node)] = _to_linear(op, dtype) if op.kind == "affine" else nn.ReLU()
    if lay.post is not None:
        layers[keys("reshape")] = Reshape(lay.post)
    if head is not None:
        layers[keys(out_op.head)] = head
    return nn.Sequential(layers).eval()


def save_torch(graph: Graph, path, *, dtype=None) -> None:
    """Write the state dict of ``to_torch(graph)`` to ``path`` (atomically).

    Only tensors are written, so :func:`load_torch_file` (``weights_only=True``)
    reads it back.  A state dict does not record the topology; the reader
    assumes Linear, ReLU, Linear, ..., Linear, so only graphs of exactly that
    shape are accepted.

    Raises
    ------
    UnsupportedOp
        The graph is not an alternating Affine/ReLU chain starting and ending
        with an Affine (use ONNX for other graphs).
    InputFileError
        The file cannot be written.
    """
    chain = _chain_nodes(graph.lint(where="save_torch input"))
    out_op = graph.op(graph.output_name)
    if out_op.head != "none":
        raise UnsupportedOp(
            f"save_torch: graph {graph.name!r} ends with a {out_op.head} head, which a state dict "
            "cannot record (it holds the Linear layers only, and would be read back without the "
            "head): export ONNX instead, or save the module of to_torch()")
    kinds = [graph.op(n).kind for n in chain[1:-1]] if chain else None
    expected = ["affine", "relu"] * (len(kinds or []) // 2) + ["affine"]
    if kinds != expected:
        raise UnsupportedOp(
            f"save_torch: graph {graph.name!r} is not a Linear, ReLU, ..., Linear chain "
            f"({'residual adds' if chain is None else 'layers: ' + ('-'.join(kinds) or 'none')}); "
            "a state dict cannot describe it: export ONNX instead")
    # the state dict of the Linear/ReLU chain (a leading Flatten or trailing Reshape of
    # to_torch holds no parameter; keys are the node names either way)
    sd = {k: v.detach().clone() for k, v in to_torch(graph, dtype=dtype).state_dict().items()}
    buf = io.BytesIO()
    torch.save(sd, buf)
    path = os.fspath(path)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        raise InputFileError(f"cannot write {path!r}: {exc.strerror or exc}") from None
