"""Public test helpers: hypothesis strategies and ``assert_equivalent``.

``networks(...)`` draws small ReLU networks (MLPs, optionally with a residual
add) as :class:`~leo_verify.graph.Graph`; ``boxes(n)`` draws input boxes;
``points_in(box)`` draws points of a box (corners, edges and the interior,
not only nearly constant vectors).

``assert_equivalent(f, g, domain)`` fails a test unless two networks are
*proven* equivalent on a domain (see
:func:`leo_verify.certify.equivalence.check_equivalence`); a counterexample is
shown after it has been replayed in exact arithmetic.  Example (pytest)::

    import copy

    import torch
    from leo_verify.testing import assert_equivalent

    def test_my_rewrite_is_lossless():
        net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                  torch.nn.Linear(8, 2))
        small = copy.deepcopy(net)       # stands for the rewrite under test
        # |net(x) - small(x)| <= 1e-6 on [0, 1]^4; fails with the replayed
        # counterexample (point, both outputs, difference), or with "unknown"
        # and the reason if nothing was decided within 60 s
        assert_equivalent(net, small, "box:0,1", epsilon=1e-6)
        # the same exactly over the reals, or only the predicted class:
        assert_equivalent(net, small, "box:0,1", mode="exact")
        assert_equivalent(net, small, "box:0,1", mode="top1")
        # a rewrite that changes the structure (``compressed``, e.g. the graph of
        # leo_verify.compressor.compress(net, box)): z3 or the structural prover
        # decides, without a kernel certificate; accept that explicitly
        assert_equivalent(net, compressed, "box:0,1", accept_uncertified=True)

``f`` and ``g`` may be :class:`~leo_verify.graph.Graph` objects, model files
or ``torch.nn.Module`` s; ``domain`` is anything :func:`leo_verify.domain.parse_domain`
accepts (``"box:LO,HI"``, a JSON/VNNLIB file, a :class:`~leo_verify.domain.Box`,
a ``(lower, upper)`` pair).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from .domain import Box
from .graph import Add, Affine, Graph, Input, Output, Relu, neuron_id
from .sampling import points_in  # re-exported: the sampler the fuzz stage uses

__all__ = ["networks", "boxes", "points_in", "mlp", "assert_equivalent"]


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


def assert_equivalent(f, g, domain, *, epsilon: float = 1e-6, mode: str = "epsilon",
                      time_limit: float = 60, seed: int = 0, allow_unknown: bool = False,
                      accept_uncertified: bool = False, **kwargs):
    """Fail (``AssertionError``) unless ``f`` and ``g`` are proven equivalent on ``domain``.

    Parameters
    ----------
    f, g : networks: :class:`Graph`, model paths, or ``torch.nn.Module`` s.
    domain : a domain spec (``"box:LO,HI"``, JSON/VNNLIB path, :class:`Box`,
        ``(lower, upper)``); a ``box:`` spec takes its size from ``f``.
    epsilon, mode, time_limit, seed : as in
        :func:`leo_verify.certify.equivalence.check_equivalence` (mode
        ``"epsilon"``, ``"exact"`` or ``"top1"``).
    allow_unknown : pass (return the result) when nothing was decided within
        ``time_limit`` instead of failing.
    accept_uncertified : as in ``check_equivalence``: by default a proof counts only
        with a certificate the checker kernel re-checks (the differential prover's
        split tree); ``True`` also accepts an exact proof without one (z3, the
        structural prover), which a network against its own compression (a
        different structure) usually needs.
    kwargs : further arguments of ``check_equivalence``.

    Returns
    -------
    The :class:`~leo_verify.certify.equivalence.CheckResult`.

    Raises
    ------
    AssertionError
        on a (replayed) counterexample -- the message has the point, both
        outputs and the difference -- and on ``"unknown"`` (with the reason)
        unless ``allow_unknown``.
    """
    from .certify.equivalence import check_equivalence
    from .domain import parse_domain
    from .io import load
    fg, gg = load(f), load(g)
    box = parse_domain(domain, n=fg.input_size)
    res = check_equivalence(fg, gg, box, mode=mode, epsilon=epsilon, time_limit=time_limit,
                            seed=seed, accept_uncertified=accept_uncertified, **kwargs)
    if res.verdict == "equivalent":
        return res
    if res.verdict == "counterexample":
        cex = res.counterexample
        what = {"epsilon": f"differ by more than epsilon = {epsilon:g}",
                "exact": "differ", "top1": "disagree on the top class"}[mode]
        lines = [f"the networks {what} at a point of the domain "
                 f"(found by {res.method}, replayed exactly):",
                 f"  x      = {cex['point']}",
                 f"  x (exact) = {cex['point_exact']}" if not cex.get("point_is_float") else "",
                 f"  f(x)   = {cex['f_exact_float']}",
                 f"  g(x)   = {cex['g_exact_float']}"]
        if mode == "top1":
            lines.append(f"  argmax f = {cex['argmax_f']}, argmax g = {cex['argmax_g']}")
        else:
            lines.append(f"  |f - g| = {cex['difference']:.6g} at output {cex['output']} "
                         f"(exact: {cex['difference_exact']})")
        raise AssertionError("\n".join(line for line in lines if line))
    if allow_unknown:
        return res
    raise AssertionError(f"equivalence unknown within {time_limit:g} s: {res.reason}")
