"""leo_verify: lossless, certified compression of ReLU networks.

Data flows one way: ``io`` -> ``graph`` -> ``analysis`` -> ``passes`` ->
``certify`` -> ``report``.
"""
from ._version import __version__
from .errors import LeoError
from .graph import Add, Affine, Graph, Input, Output, Relu
from .semantics import evaluate, evaluate_exact

__all__ = ["Graph", "Input", "Affine", "Relu", "Add", "Output", "LeoError",
           "evaluate", "evaluate_exact", "load", "analyze", "compress", "__version__"]


def compress(model, domain, **kwargs):
    """Analyse, rewrite losslessly and certify; see :func:`leo_verify.compressor.compress`."""
    from .compressor import compress as _compress
    return _compress(model, domain, **kwargs)


def analyze(graph, domain, **kwargs):
    """Stability facts of every hidden neuron; see :func:`leo_verify.analysis.analyze`."""
    from .analysis import analyze as _analyze
    return _analyze(graph, domain, **kwargs)


def load(source, **kwargs) -> Graph:
    """Load a network from a path (.onnx, .nnet, .pt state dict) or a torch module."""
    from .io import load as _load
    return _load(source, **kwargs)
