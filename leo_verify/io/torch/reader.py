"""``from_torch``: a :class:`torch.nn.Module` (``nn.Sequential`` or ``torch.fx``-traceable)
as a :class:`~leo_verify.graph.Graph`: the fx builder and its module/function handlers.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, Mapping, NamedTuple

import numpy as np
import operator
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ...errors import ModelFormatError, UnsupportedOp, UsageError
from ...graph import Add, Affine, Graph, Input, neuron_id, Output, Relu
from .common import _FLOAT_DTYPES, _one_line


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


#: modules that take a module through ONNX (one conv/pool semantics: the ONNX op table)
_CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d,
                 nn.AvgPool2d, nn.BatchNorm2d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d,
                 nn.AdaptiveAvgPool2d)


def _from_torch_conv(module: nn.Module, input_size, name: str) -> Graph:
    """A module with convolutions or pools: exported by ``torch.onnx.export`` (TorchScript
    exporter, eval mode, a batch of one) and read by the ONNX reader, whose op table is the one
    place conv/pool semantics live.  ``input_size`` must be the per-example shape."""
    import io as _io
    from ..onnx import graph_from_onnx_model
    import onnx
    if input_size is None or isinstance(input_size, (int, np.integer)):
        raise UsageError(f"torch module {name!r} has convolutions or pools: pass input_size= as the "
                         f"per-example shape, e.g. (1, 28, 28)")
    shape = tuple(int(s) for s in input_size)
    if not shape or any(s <= 0 for s in shape):
        raise UsageError(f"input_size must be positive, got {input_size!r}")
    was_training = module.training
    module.eval()
    buf = _io.BytesIO()
    try:
        dtype = next((p.dtype for p in module.parameters()), torch.float32)
        torch.onnx.export(module, torch.zeros((1,) + shape, dtype=dtype), buf, input_names=["input"],
                          output_names=["output"], dynamo=False)
    except (RuntimeError, TypeError, ValueError, torch.onnx.errors.OnnxExporterError) as exc:
        raise UnsupportedOp(f"torch module {name!r}: its convolutional layers are read through "
                            f"torch.onnx.export, which failed: {_one_line(exc)}") from None
    finally:
        module.train(was_training)
    graph = graph_from_onnx_model(onnx.load_from_string(buf.getvalue()),
                                  source=f"torch module {type(module).__name__}", name=name)
    graph.metadata["format"] = "torch"
    return graph


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
    if any(isinstance(m, _CONV_MODULES) for m in module.modules()):
        return _from_torch_conv(module, input_size, name)
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
