"""Public hypothesis strategies for tests of networks and of leo_verify itself.

``networks(...)`` draws small ReLU networks (MLPs, optionally with a residual
add) as :class:`~leo_verify.graph.Graph`; ``boxes(n)`` draws input boxes;
``points_in(box)`` draws points of a box (corners, edges and the interior,
not only nearly constant vectors).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from .domain import Box
from .graph import Add, Affine, Graph, Input, Output, Relu, neuron_id

__all__ = ["networks", "boxes", "points_in", "mlp"]


def mlp(weights, biases, *, name: str = "mlp", residual: bool = False) -> Graph:
    """A Graph ``Affine -> ReLU -> ... -> Affine`` from weight/bias lists.

    With ``residual=True`` and two hidden layers of equal width, the second
    hidden pre-activation also receives the first layer's output (``h1 + W2 h1``).
    """
    g = Graph(name=name)
    g.add("x", Input(np.asarray(weights[0]).shape[1]))
    prev = "x"
    n_layers = len(weights)
    for i, (w, b) in enumerate(zip(weights, biases)):
        fc = f"fc{i}"
        g.add(fc, Affine(np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64)), [prev])
        node = fc
        if residual and i == 1 and prev.startswith("relu") and g.size_of(prev) == g.size_of(fc):
            node = g.add(f"res{i}", Add(g.size_of(fc)), [fc, prev])
        if i < n_layers - 1:
            r = f"relu{i}"
            g.add(r, Relu([neuron_id(r, j) for j in range(g.size_of(node))]), [node])
            prev = r
        else:
            prev = node
    g.add("y", Output(g.size_of(prev)), [prev])
    return g.lint(where="testing.mlp")


_weight = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def networks(draw, *, inputs=(1, 4), hidden=(1, 6), layers=(1, 3), outputs=(1, 3),
             residual: bool | None = None, bias_shift=(-1.0, 0.5)) -> Graph:
    """Small random ReLU networks with float32-representable weights.

    ``bias_shift`` moves biases down/up so that draws contain stably inactive
    and stably active neurons, not only unstable ones.
    """
    n_in = draw(st.integers(*inputs))
    n_layers = draw(st.integers(*layers))
    widths = [draw(st.integers(*hidden)) for _ in range(n_layers)]
    if residual is None:
        residual = n_layers >= 2 and draw(st.booleans())
    if residual and n_layers >= 2:
        widths[1] = widths[0]
    sizes = [n_in] + widths + [draw(st.integers(*outputs))]
    shift = draw(st.floats(*bias_shift, width=32))
    ws, bs = [], []
    for a, b in zip(sizes, sizes[1:]):
        w = np.array(draw(st.lists(_weight, min_size=a * b, max_size=a * b)), dtype=np.float32)
        bias = np.array(draw(st.lists(_weight, min_size=b, max_size=b)), dtype=np.float32) + np.float32(shift)
        ws.append(w.reshape(b, a).astype(np.float64))
        bs.append(bias.astype(np.float64))
    return mlp(ws, bs, residual=residual and n_layers >= 2)


@st.composite
def boxes(draw, n: int, *, low=-1.0, high=1.0, degenerate: bool = True) -> Box:
    """Boxes inside ``[low, high]^n``; with ``degenerate`` some sides may have zero width."""
    lo, hi = [], []
    for _ in range(n):
        a = draw(st.floats(low, high, width=32))
        b = a if degenerate and draw(st.integers(0, 9)) == 0 else draw(st.floats(low, high, width=32))
        lo.append(min(a, b))
        hi.append(max(a, b))
    return Box(np.array(lo), np.array(hi), source="hypothesis")


@st.composite
def points_in(draw, box: Box):
    """A point of ``box``: per coordinate a bound, the midpoint or an interior value."""
    out = []
    for lo, hi in zip(box.lower, box.upper):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            out.append(float(lo))
        elif kind == 1:
            out.append(float(hi))
        elif kind == 2:
            out.append(float((lo + hi) / 2))
        else:
            out.append(draw(st.floats(float(lo), float(hi), allow_nan=False)))
    return np.array(out)
