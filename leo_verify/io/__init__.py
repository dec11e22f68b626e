"""Readers and writers. ``load`` dispatches on the source's type / suffix."""
from __future__ import annotations

import os

from ..errors import InputFileError, ModelFormatError
from ..graph import Graph

__all__ = ["load"]


def load(source, **kwargs) -> Graph:
    """Load a network.

    ``source`` is a path (``.onnx``, ``.nnet``, ``.pt``/``.pth`` state dict of a
    Linear/ReLU MLP, loaded with ``weights_only=True``) or a ``torch.nn.Module``.
    The returned graph has passed :meth:`Graph.lint`.
    """
    if isinstance(source, Graph):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise InputFileError(f"model file {path!r} does not exist")
        if not os.path.isfile(path):
            raise InputFileError(f"model path {path!r} is not a file")
        low = path.lower()
        if low.endswith(".onnx"):
            from .onnx import load_onnx
            return load_onnx(path, **kwargs)
        if low.endswith(".nnet"):
            from .nnet import load_nnet
            return load_nnet(path, **kwargs)
        if low.endswith((".pt", ".pth")):
            from .torch import load_torch_file
            return load_torch_file(path, **kwargs)
        raise ModelFormatError(f"model file {path!r}: unknown format (expected .onnx, .nnet, .pt or .pth)")
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(source, torch.nn.Module):
        from .torch import from_torch
        return from_torch(source, **kwargs)
    raise ModelFormatError(f"cannot load a network from a {type(source).__name__}")
