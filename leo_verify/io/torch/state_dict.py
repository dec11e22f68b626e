"""``load_torch_file``: ``.pt``/``.pth`` state dicts of MLPs (``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Mapping

import numpy as np
import pickle
import struct
import torch
import zipfile

from ...errors import GraphError, InputFileError, ModelFormatError, UsageError
from ...graph import Affine, Graph, Input, neuron_id, Output, Relu
from ...util import check_file_size
from .. import limits
from .common import _FLOAT_DTYPES, _one_line


# ---------------------------------------------------------------------------
# state-dict files
# ---------------------------------------------------------------------------
#: what torch.load raises on corrupt or truncated files (found by fuzzing, see
#: tests/test_fuzz_readers.py); anything else is a bug and is not swallowed.
_TORCH_LOAD_ERRORS = (RuntimeError, EOFError, ValueError, TypeError, KeyError, IndexError,
                      AssertionError, AttributeError, OverflowError, UnicodeDecodeError,
                      struct.error, zipfile.BadZipFile)


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
