"""leo_verify: lossless, certified compression of ReLU networks.

Data flows one way: ``io`` -> ``graph`` -> ``analysis`` -> ``passes`` ->
``certify`` -> ``report``.
"""
from .errors import LeoError
from .graph import Add, Affine, Graph, Input, Output, Relu
from .semantics import evaluate, evaluate_exact

__version__ = "0.1.0"

__all__ = ["Graph", "Input", "Affine", "Relu", "Add", "Output", "LeoError",
           "evaluate", "evaluate_exact", "load", "__version__"]


def load(source, **kwargs) -> Graph:
    """Load a network from a path (.onnx, .nnet, .pt state dict) or a torch module."""
    from .io import load as _load
    return _load(source, **kwargs)
