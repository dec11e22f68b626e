"""The public ONNX reader API: :func:`graph_from_onnx_model` and :func:`load_onnx`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from ...errors import ModelFormatError
from ...graph import Graph
from ...util import read_model_bytes
from .. import limits
from .checks import _checker_text, _first_line, _prevalidate
from .tracer import _Tracer
from .values import _BUDGET, _clip


# ---------------------------------------------------------------------------
# public reader API
# ---------------------------------------------------------------------------
def graph_from_onnx_model(model, *, source: str = "<memory>", name: str | None = None) -> Graph:
    """Build a :class:`Graph` from an in-memory ONNX model.

    Parameters
    ----------
    model : onnx.ModelProto or bytes
        The model, or its serialized bytes.
    source : str
        How error messages and ``graph.metadata["source"]`` name the model.
    name : str, optional
        The graph's name (default: the ONNX graph's name, else ``"network"``).

    Returns
    -------
    Graph
        A linted graph; ``metadata`` records source, format, opset, dtype and
        the ONNX input/output tensor names.

    Raises
    ------
    ModelFormatError
        Undecodable, truncated or inconsistent model, external data, a
        declared size beyond a limit of :mod:`leo_verify.io.limits`.
    UnsupportedOp
        An op (or op variant) outside :data:`SUPPORTED_OPS`; the message
        names the ONNX node and its op type.
    GraphError
        The traced graph fails :meth:`Graph.lint` (e.g. a non-finite weight).
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        if not data:
            raise ModelFormatError(f"ONNX model {source!r} is empty")
        if len(data) > limits.MAX_FILE_BYTES:
            raise ModelFormatError(f"ONNX model {source!r} has {len(data)} bytes, more than the "
                                   f"limit of {limits.MAX_FILE_BYTES} (leo_verify.io.limits."
                                   f"MAX_FILE_BYTES)")
        try:
            model = onnx.load_model_from_string(data)
        except (DecodeError, ValueError, RuntimeError) as e:
            raise ModelFormatError(f"ONNX model {source!r} cannot be decoded (truncated or not an "
                                   f"ONNX file): {_clip(_first_line(e), 200)}") from e
    if not isinstance(model, onnx.ModelProto):
        raise ModelFormatError(f"{source!r}: expected an ONNX ModelProto, got {type(model).__name__}")
    if not model.HasField("graph"):
        raise ModelFormatError(f"ONNX model {source!r} has no graph (truncated or not an ONNX file)")
    _prevalidate(model, source)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelFormatError(f"ONNX model {source!r} is invalid: "
                               f"{_clip(_checker_text(str(e)), 300)}") from e
    except UnicodeDecodeError as e:
        # the checker's message quotes a name that is not valid UTF-8
        text = e.object.decode("utf-8", "replace") if isinstance(e.object, bytes) else str(e)
        raise ModelFormatError(f"ONNX model {source!r} is invalid: "
                               f"{_clip(_checker_text(text), 300)}") from None
    except ValueError as e:  # e.g. a model over protobuf's 2 GiB
        raise ModelFormatError(f"ONNX model {source!r} is invalid: {_clip(_first_line(e), 300)}") \
            from e
    gname = name or model.graph.name or "network"
    if not isinstance(gname, str):  # a graph name that is not valid UTF-8
        gname = "network"
    token = _BUDGET.set(limits.Budget())
    try:
        with np.errstate(all="ignore"):
            # non-finite values are caught by Graph.lint (named), not printed as warnings
            return _Tracer(model, source, gname).run()
    finally:
        _BUDGET.reset(token)


def load_onnx(path, *, name: str | None = None) -> Graph:
    """Load an ONNX file as a :class:`Graph`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.onnx`` file. Tensors must be stored inside it: external data is
        refused without opening any other file (see the module docstring).
    name : str, optional
        The graph's name; default: the file name without its suffix.

    Returns
    -------
    Graph
        See :func:`graph_from_onnx_model`.

    Raises
    ------
    InputFileError
        The file does not exist, is not a regular file or cannot be read.
    ModelFormatError, UnsupportedOp, GraphError
        See :func:`graph_from_onnx_model`; also a file over
        :data:`leo_verify.io.limits.MAX_FILE_BYTES`.
    """
    path = os.fspath(path)
    data = read_model_bytes(path, "ONNX model")
    return graph_from_onnx_model(data, source=path, name=name or Path(path).stem)
