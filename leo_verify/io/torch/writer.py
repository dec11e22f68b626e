"""``to_torch`` / ``save_torch``: a :class:`~leo_verify.graph.Graph` as ``nn.Sequential`` or
:class:`LeoNetwork`.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from ...errors import InputFileError, UnsupportedOp, UsageError
from ...conv_layout import emit_plan
from ...graph import Affine, Graph, Output
from ...util import atomic_write_bytes
from .common import _FLOAT_DTYPES


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


class ConvUnit(nn.Module):
    """An affine op that is a convolution (:class:`~leo_verify.conv_layout.ConvLayout`), in
    conv form: ``x[:, in_index]`` -> reshape ``(-1, C, (H,) W)`` -> ``Conv1d``/``Conv2d`` ->
    flatten -> ``[:, out_index]`` (the index steps only where the plan needs them), like the
    ONNX writer's conv segment."""

    def __init__(self, plan: dict, dtype: torch.dtype):
        super().__init__()
        k = plan["kernel"]
        attrs = plan["attrs"]
        nsp = k.ndim - 2
        conv_cls = nn.Conv2d if nsp == 2 else nn.Conv1d
        pads = attrs["pads"]
        self.pad = None
        if pads[:nsp] != pads[nsp:]:  # torch pads symmetrically: pad the input explicitly
            self.pad = tuple(p for a in reversed(range(nsp)) for p in (pads[a], pads[a + nsp]))
            padding = 0
        else:
            padding = tuple(pads[:nsp])
        conv = conv_cls(int(k.shape[1]) * attrs["group"], int(k.shape[0]), tuple(k.shape[2:]),
                        stride=tuple(attrs["strides"]), padding=padding,
                        dilation=tuple(attrs["dilations"]), groups=attrs["group"], dtype=dtype,
                        device="meta").to_empty(device="cpu")
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(np.array(k)).to(dtype))
            conv.bias.copy_(torch.from_numpy(np.array(plan["bias"])).to(dtype))
        self.conv = conv
        self.in_dims = tuple(int(d) for d in plan["in_dims"])
        for name in ("gather_in", "gather_out"):
            idx = plan[name]
            self.register_buffer(name, None if idx is None else torch.from_numpy(np.array(idx)))

    def forward(self, x):
        if self.gather_in is not None:
            x = x[:, self.gather_in]
        x = x.reshape((-1,) + self.in_dims)
        if self.pad is not None:
            x = nn.functional.pad(x, self.pad)
        x = self.conv(x).flatten(1)
        if self.gather_out is not None:
            x = x[:, self.gather_out]
        return x


def _to_linear(op: Affine, dtype: torch.dtype) -> nn.Module:
    if op.layout is not None:
        plan = emit_plan(op.layout)
        if plan is not None:
            return ConvUnit(plan, dtype)
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
    from ..onnx.writer import _layout
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
    # an (n,) input needs no reshape in torch: nn.Linear maps (n,) to (m,), and a (k, n)
    # batch to (k, m), so the module takes the original's shape and batches too
    if chain is None:
        core = LeoNetwork(graph, dtype).eval()
        if not layers and lay.post is None and head is None:
            return core
        layers[keys("network")] = core
    else:
        for node in chain[1:-1]:
            op = graph.op(node)
            layers[keys(node)] = _to_linear(op, dtype) if op.kind == "affine" else nn.ReLU()
    if lay.post is not None and not (lay.pre == "reshape" and list(lay.post) == [graph.output_size]):
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
    convs = [n for n, op in graph.items() if op.kind == "affine" and op.layout is not None]
    if convs:
        raise UnsupportedOp(
            f"save_torch: graph {graph.name!r} has convolution layers ({convs[0]!r}, ...), which a "
            "state dict of Linear layers cannot describe: export ONNX instead, or save the module "
            "of to_torch()")
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
