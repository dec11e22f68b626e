"""Reader and writer for the ``.nnet`` text format (Julian & Katz, ACAS Xu).

Layout (values separated by commas; a trailing comma is allowed)::

    // any number of header comment lines
    numLayers,inputSize,outputSize,maxLayerSize,
    size_0,size_1,...,size_numLayers,          (size_0 = inputSize)
    flag                                       (unused)
    input minimums                             (inputSize values)
    input maximums                             (inputSize values)
    means                                      (inputSize + 1; the last is for the outputs)
    ranges                                     (inputSize + 1; the last is for the outputs)
    then per layer: size_k+1 weight rows of size_k values, one row per line,
                    then size_k+1 bias lines of one value each.

Every layer but the last is followed by a ReLU.  Weights are read as float64
(what the reference tools compute with), so the graph is the float64 network.

Normalisation: the NNet tools clip each input to ``[min, max]``, compute
``(x - mean) / range``, run the network, and return ``y * range_out +
mean_out``.  By default :func:`load_nnet` returns the network on
*normalised* inputs (as in the VNN-COMP ONNX versions and their VNNLIB
properties).  With ``normalize=True`` it prepends the affine map
``(x - mean) / range`` (its exact rationals are recorded, the float weights
are their rounding) and appends ``y * range_out + mean_out``.  The clipping is
not affine and is *not* represented: use an input domain inside
``[min, max]``, where clipping is the identity.

Hostile files: every problem is a :class:`ModelFormatError` naming the file,
the line and the value.  Sizes are checked before anything is allocated:
files over :data:`leo_verify.io.limits.MAX_FILE_BYTES`, layer sizes outside
``1..MAX_LAYER_SIZE``, more than :data:`MAX_PARAMETERS` weights, integers of
more than 18 digits, and with ``normalize=True`` an input layer whose exact
normalisation matrix exceeds :data:`leo_verify.io.limits.MAX_RATIONAL_ENTRIES`.
"""
from __future__ import annotations

import os
import re
import sys
from fractions import Fraction

import numpy as np

from ..errors import GraphError, InputFileError, ModelFormatError, UnsupportedOp, UsageError
from ..graph import Affine, Graph, Input, Output, Relu, neuron_id
from ..util import atomic_write_bytes, check_file_size
from . import limits

__all__ = ["load_nnet", "save_nnet", "MAX_LAYER_SIZE", "MAX_PARAMETERS", "MAX_EXACT_COMPOSE"]

#: Refuse a declared layer larger than this before allocating anything.
MAX_LAYER_SIZE = 1_000_000
#: Refuse a declared network with more weights + biases than this.
MAX_PARAMETERS = 100_000_000
#: save_nnet: refuse composing consecutive affine maps in exact rationals
#: beyond this many multiplications (Fractions: roughly 5 us each).
MAX_EXACT_COMPOSE = 5_000_000

_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INT_RE = re.compile(r"[+-]?\d+")


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------
class _Reader:
    """Numbered non-blank lines of an open file, with strict value parsing."""

    def __init__(self, f, path: str):
        self.f, self.path, self.lineno = f, path, 0

    def error(self, msg: str, lineno: int | None = None) -> ModelFormatError:
        return ModelFormatError(f"nnet file {self.path!r}, line {lineno or self.lineno}: {msg}")

    def line(self, what: str) -> str:
        for raw in self.f:
            self.lineno += 1
            text = raw.strip()
            if text:
                return text
        raise ModelFormatError(f"nnet file {self.path!r} ends early (after line {self.lineno}): "
                               f"expected {what}")

    def tokens(self, what: str, count: int, text: str | None = None) -> list[str]:
        if text is None:
            text = self.line(what)
        if text.endswith(","):
            text = text[:-1]
        toks = [t.strip() for t in text.split(",")]
        if len(toks) != count:
            raise self.error(f"expected {count} value(s) ({what}), found {len(toks)}: "
                             f"{_clip(text)!r}")
        for t in toks:
            if not t:
                raise self.error(f"empty value in {what}: {_clip(text)!r}")
        return toks

    def ints(self, what: str, count: int, text: str | None = None) -> list[int]:
        toks = self.tokens(what, count, text)
        for t in toks:
            if not _INT_RE.fullmatch(t):
                raise self.error(f"{_clip(t, 40)!r} is not an integer ({what})")
            if len(t.lstrip("+-").lstrip("0")) > 18:
                # far beyond every size limit (and beyond Python's int() digit limit)
                raise self.error(f"{_clip(t, 40)!r} is too large ({what})")
        return [int(t) for t in toks]

    def floats(self, what: str, count: int) -> np.ndarray:
        toks = self.tokens(what, count)
        for t in toks:
            if not _FLOAT_RE.fullmatch(t):
                raise self.error(f"{_clip(t, 40)!r} is not a number ({what})")
        arr = np.array([float(t) for t in toks], dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            bad = toks[int(np.argmin(np.isfinite(arr)))]
            raise self.error(f"{_clip(bad, 40)!r} overflows float64 ({what})")
        return arr

    def rest(self) -> None:
        for raw in self.f:
            self.lineno += 1
            if raw.strip():
                raise self.error(f"unexpected content after the last layer: {_clip(raw.strip())!r}")


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _header(r: _Reader) -> list[int]:
    """Parse the comment, header and layer-size lines; return the layer sizes."""
    # Leading comment lines ("//"), then the four header integers.
    what = "the header line 'numLayers,inputSize,outputSize,maxLayerSize,'"
    text = r.line(what)
    while text.startswith("//"):
        text = r.line(what)
    n_layers, n_in, n_out, max_size = r.ints("numLayers,inputSize,outputSize,maxLayerSize", 4, text)
    head_line = r.lineno
    if n_layers < 1:
        raise r.error(f"numLayers is {n_layers}; at least 1 layer is required")
    if n_layers > MAX_PARAMETERS // 2:
        raise r.error(f"numLayers {n_layers} exceeds the parameter limit {MAX_PARAMETERS}")
    sizes = r.ints(f"the {n_layers + 1} layer sizes", n_layers + 1)
    for k, s in enumerate(sizes):
        if not 1 <= s <= MAX_LAYER_SIZE:
            raise r.error(f"layer size {s} (entry {k}) is outside 1..{MAX_LAYER_SIZE}")
    for label, declared, actual in (("inputSize", n_in, sizes[0]), ("outputSize", n_out, sizes[-1]),
                                    ("maxLayerSize", max_size, max(sizes))):
        if declared != actual:
            raise r.error(f"{label} is {declared} on line {head_line} but the layer sizes "
                          f"{_clip(str(sizes))} give {actual}")
    params = sum(sizes[k] * sizes[k + 1] + sizes[k + 1] for k in range(n_layers))
    if params > MAX_PARAMETERS:
        raise r.error(f"the layer sizes declare {params} parameters, more than the limit "
                      f"{MAX_PARAMETERS}")
    return sizes


def _parse(r: _Reader, normalize: bool) -> tuple[list, dict, int]:
    sizes = _header(r)
    n_in = sizes[0]
    r.line("the flag line (unused)")
    meta, lines = {}, {}
    for key, count in (("mins", n_in), ("maxes", n_in), ("means", n_in + 1), ("ranges", n_in + 1)):
        meta[key] = r.floats(f"input {key}" if count == n_in else f"{key} (inputs, then output)",
                             count)
        lines[key] = r.lineno
    bad = np.flatnonzero(meta["mins"] > meta["maxes"])
    if bad.size:
        i = int(bad[0])
        raise r.error(f"input {i}: minimum {float(meta['mins'][i])!r} > maximum "
                      f"{float(meta['maxes'][i])!r}",
                      lines["maxes"])
    if normalize and np.any(meta["ranges"][:-1] == 0):
        i = int(np.flatnonzero(meta["ranges"][:-1] == 0)[0])
        raise r.error(f"input {i} has range 0: cannot normalise", lines["ranges"])
    layers = []
    for k in range(len(sizes) - 1):
        n_prev, n_out = sizes[k], sizes[k + 1]
        w = np.empty((n_out, n_prev))
        for i in range(n_out):
            w[i] = r.floats(f"row {i} of the weights of layer {k + 1}", n_prev)
        b = np.empty(n_out)
        for i in range(n_out):
            b[i] = r.floats(f"bias {i} of layer {k + 1}", 1)[0]
        layers.append((w, b))
    r.rest()
    return layers, meta, sizes[-1]


def _check_normalize_sizes(path: str) -> None:
    with open(path, encoding="utf-8", errors="replace") as f:
        sizes = _header(_Reader(f, path))
    n_in, n_out = sizes[0], sizes[-1]
    if n_in * n_in > limits.MAX_RATIONAL_ENTRIES:
        raise ModelFormatError(
            f"nnet file {path!r}: normalize=True needs a {n_in} x {n_in} exact rational matrix, "
            f"more than the limit of {limits.MAX_RATIONAL_ENTRIES} entries "
            f"(leo_verify.io.limits.MAX_RATIONAL_ENTRIES)")
    if n_out * n_out > limits.MAX_ELEMENTS:
        raise ModelFormatError(
            f"nnet file {path!r}: normalize=True needs a {n_out} x {n_out} output scaling "
            f"matrix, more than the limit of {limits.MAX_ELEMENTS} entries "
            f"(leo_verify.io.limits.MAX_ELEMENTS)")


def _normalizer(means, ranges) -> Affine:
    """(x - mean) / range with exact rational weights."""
    n = len(means)
    zero = Fraction(0)
    w = np.full((n, n), zero, dtype=object)
    b = np.empty(n, dtype=object)
    for i in range(n):
        r = Fraction(float(ranges[i]))
        w[i, i] = 1 / r
        b[i] = -Fraction(float(means[i])) / r
    return Affine.from_rational(w, b)


def load_nnet(path, *, normalize: bool = False, name: str | None = None) -> Graph:
    """Load a ``.nnet`` file.

    Parameters
    ----------
    path : str or os.PathLike
    normalize : bool, default False
        False: the network on normalised inputs and outputs (VNN-COMP
        convention).  True: include the input normalisation and output
        de-normalisation as affine nodes (input clipping is not included:
        see the module docstring).
    name : str, optional
        Graph name; default the file name without suffix.

    Returns
    -------
    Graph
        Affine nodes ``layer1 ... layerN`` with ReLUs ``relu1 ...`` between;
        ``metadata["nnet"]`` holds ``mins``, ``maxes``, ``means``, ``ranges``
        (lists) and ``normalized``.

    Raises
    ------
    InputFileError
        The file does not exist or cannot be read.
    ModelFormatError
        Malformed content; the message names the file, the line and the value.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputFileError(f"model file {path!r} does not exist or is not a file")
    check_file_size(path, what="nnet file", limit=limits.MAX_FILE_BYTES, name="MAX_FILE_BYTES",
                    error=ModelFormatError)
    try:
        if normalize:
            # the exact normalisation is an n x n matrix of Fractions, the output
            # scaling an m x m float matrix: refuse before reading the weights
            _check_normalize_sizes(path)
        with open(path, encoding="utf-8") as f:
            r = _Reader(f, path)
            layers, meta, n_out = _parse(r, normalize)
    except UnicodeDecodeError:
        raise ModelFormatError(f"nnet file {path!r}, line {r.lineno + 1}: not UTF-8 text") from None
    except OSError as exc:
        raise InputFileError(f"cannot read model file {path!r}: {exc.strerror or exc}") from None

    n_in = layers[0][0].shape[1]
    graph = Graph(name=name or os.path.splitext(os.path.basename(path))[0], metadata={
        "source": path, "format": "nnet", "dtype": "float64",
        "nnet": {**{k: [float(v) for v in a] for k, a in meta.items()}, "normalized": normalize},
    })
    prev = graph.add("input", Input(n_in, (n_in,)))
    if normalize:
        prev = graph.add("normalize_input", _normalizer(meta["means"][:-1], meta["ranges"][:-1]),
                         [prev])
    for k, (w, b) in enumerate(layers, start=1):
        prev = graph.add(f"layer{k}", Affine(w, b), [prev])
        if k < len(layers):
            relu = f"relu{k}"
            prev = graph.add(relu, Relu([neuron_id(relu, i) for i in range(w.shape[0])]), [prev])
    if normalize:
        # y * range_out + mean_out: both floats, so the float weights are exact.
        scale, shift = meta["ranges"][-1], meta["means"][-1]
        prev = graph.add("denormalize_output",
                         Affine(scale * np.eye(n_out), np.full(n_out, shift)), [prev])
    graph.add("output", Output(n_out, (n_out,)), [prev])
    try:
        return graph.lint(where="nnet loader")
    except GraphError as e:  # say which file
        raise GraphError(f"nnet file {path!r}: {e}") from e


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------
def _chain_segments(graph: Graph) -> list[list[str]]:
    """The affine runs between ReLUs of a chain graph (ReLU runs merged).

    Only the first and last run can be empty (a ReLU right after the input
    or right before the output).
    """
    if not graph.is_chain():
        raise UnsupportedOp(f"save_nnet: graph {graph.name!r} has residual adds or branches; "
                            "the NNet format holds only Affine/ReLU chains")
    head = graph.op(graph.output_name).head
    if head != "none":
        raise UnsupportedOp(f"save_nnet: graph {graph.name!r} ends with a {head} head, which the "
                            "NNet format cannot record: export ONNX instead")
    segments: list[list[str]] = [[]]
    after_relu = False
    node = graph.users(graph.input_name)[0]
    while graph.op(node).kind != "output":
        kind = graph.op(node).kind
        if kind == "affine":
            segments[-1].append(node)
            after_relu = False
        elif kind == "relu":
            if not after_relu:  # relu(relu(x)) = relu(x): a run of ReLUs is one
                segments.append([])
            after_relu = True
        else:  # pragma: no cover - a chain has only affine/relu inside
            raise UnsupportedOp(f"save_nnet: node {node!r} ({kind}) cannot be written to NNet")
        node = graph.users(node)[0]
    return segments


def _q_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact product of object arrays of Fractions, skipping zeros of ``a``."""
    out = np.full((a.shape[0],) + b.shape[1:], Fraction(0), dtype=object)
    for i in range(a.shape[0]):
        for k in np.flatnonzero(a[i] != 0):
            out[i] = out[i] + a[i, k] * b[k]
    return out


def _compose(graph: Graph, names: list[str], allow_rounding: bool):
    """One (W, b) in float64 for a run of affine nodes.

    A single node is written as is.  A run is composed in exact rationals;
    if the result is not exactly float64 it is written rounded only when
    ``allow_rounding`` (the ``compose=True`` option).
    """
    if len(names) == 1:
        op = graph.op(names[0])
        return op.weight, op.bias
    w, b = (np.array(a, dtype=object) for a in graph.op(names[0]).rational())
    for name in names[1:]:
        w2, b2 = graph.op(name).rational()
        cost = int(np.count_nonzero(graph.op(name).weight)) * (w.shape[1] + 1)
        if cost > MAX_EXACT_COMPOSE:
            raise UnsupportedOp(
                f"save_nnet: composing affine nodes {names} exactly needs about {cost} rational "
                f"multiplications (limit {MAX_EXACT_COMPOSE}); NNet needs one affine map per layer")
        w = _q_matmul(w2, w)
        b = _q_matmul(w2, b[:, None])[:, 0] + b2
    composed = Affine.from_rational(w, b)
    exact = all(Fraction(float(q)) == q for q in list(w.ravel()) + list(b.ravel()))
    if not exact and not allow_rounding:
        raise UnsupportedOp(
            f"save_nnet: affine nodes {names} follow each other; NNet needs one affine map per "
            "layer and their exact composition is not representable in float64. Pass "
            "compose=True to write its float64 rounding (the saved network then differs from "
            "this graph by that rounding).")
    return composed.weight, composed.bias


def _norm_params(graph: Graph, n_in: int, mins, maxes, means, ranges) -> dict:
    stored = dict(graph.metadata.get("nnet") or {})
    # A graph loaded with normalize=True already contains its normalisation:
    # writing the stored means/ranges again would apply it twice.  Its
    # mins/maxes (raw input units) still describe its input.
    if stored.get("normalized", False):
        stored.pop("means", None)
        stored.pop("ranges", None)
    big = sys.float_info.max
    defaults = {"mins": [-big] * n_in, "maxes": [big] * n_in,
                "means": [0.0] * (n_in + 1), "ranges": [1.0] * (n_in + 1)}
    given = {"mins": mins, "maxes": maxes, "means": means, "ranges": ranges}
    out = {}
    for key, want in (("mins", n_in), ("maxes", n_in), ("means", n_in + 1), ("ranges", n_in + 1)):
        val = given[key] if given[key] is not None else stored.get(key, defaults[key])
        arr = np.asarray(val, dtype=np.float64).ravel()
        if arr.size != want or not np.all(np.isfinite(arr)):
            raise UsageError(f"save_nnet: {key} must be {want} finite values, got {_clip(repr(val))}")
        out[key] = arr
    if np.any(out["mins"] > out["maxes"]):
        raise UsageError("save_nnet: some input minimum is larger than its maximum")
    if np.any(out["ranges"][:-1] == 0):
        raise UsageError("save_nnet: an input range is 0 (readers divide by it)")
    return out


def _row(values) -> str:
    # repr of a Python float is the shortest string that reads back exactly.
    return ",".join(repr(v) for v in np.asarray(values, dtype=np.float64).tolist()) + ",\n"


def save_nnet(graph: Graph, path, *, mins=None, maxes=None, means=None, ranges=None,
              compose: bool = False) -> None:
    """Write a chain network as a ``.nnet`` file (atomically).

    Parameters
    ----------
    graph : Graph
        A chain of Affine and ReLU nodes.  A ReLU at the start or end is
        written with an identity layer next to it; a hidden layer with no
        units becomes one dead unit (zero weights, zero bias): both exact.
    path : str or os.PathLike
    mins, maxes : sequence of float, optional
        Input bounds (inputSize values).  Default: ``metadata["nnet"]`` of a
        graph loaded from NNet, else +-float max (no clipping).
    means, ranges : sequence of float, optional
        inputSize + 1 values each (the last for the outputs).  Default:
        ``metadata["nnet"]`` of a graph loaded with ``normalize=False`` (a
        graph loaded with ``normalize=True`` contains its normalisation),
        else 0 and 1 (no normalisation).
    compose : bool, default False
        Consecutive Affine nodes must become one layer.  Their composition is
        computed in exact rationals; if it is not exactly a float64 matrix it
        is refused unless ``compose=True``, which writes its rounding.

    Raises
    ------
    UnsupportedOp
        A graph with adds, or consecutive affines needing rounding without
        ``compose=True``.
    UsageError
        Normalisation values of the wrong length or not finite.
    InputFileError
        The file cannot be written.
    """
    graph.lint(where="save_nnet input")
    n_in = graph.input_size
    layers = []
    for names in _chain_segments(graph):
        if names:
            layers.append(tuple(np.asarray(a, dtype=np.float64)
                                for a in _compose(graph, names, compose)))
        else:  # a ReLU next to the input or output: an exact identity layer
            n = layers[-1][0].shape[0] if layers else n_in
            layers.append((np.eye(n), np.zeros(n)))
    # A hidden layer with no units (all pruned): one dead unit, exactly 0 after ReLU.
    for k in range(len(layers) - 1):
        w, b = layers[k]
        if w.shape[0] == 0:
            layers[k] = (np.zeros((1, w.shape[1])), np.zeros(1))
            w2, b2 = layers[k + 1]
            layers[k + 1] = (np.zeros((w2.shape[0], 1)), b2)
    if layers[-1][0].shape[0] == 0:  # pragma: no cover - lint forbids an empty output
        raise UnsupportedOp("save_nnet: the network has no outputs")
    norm = _norm_params(graph, n_in, mins, maxes, means, ranges)

    sizes = [n_in] + [w.shape[0] for w, _ in layers]
    out = [f"// Neural network {graph.name!r} written by leo_verify (NNet format)\n",
           "// Values are float64 written with repr(): they read back exactly.\n",
           f"{len(layers)},{n_in},{sizes[-1]},{max(sizes)},\n",
           ",".join(str(s) for s in sizes) + ",\n",
           "0,\n"]
    out += [_row(norm[k]) for k in ("mins", "maxes", "means", "ranges")]
    for w, b in layers:
        out += [_row(row) for row in w]
        out += [_row([v]) for v in b]
    path = os.fspath(path)
    try:
        atomic_write_bytes(path, "".join(out).encode("utf-8"))
    except OSError as exc:
        raise InputFileError(f"cannot write {path!r}: {exc.strerror or exc}") from None
