"""Output heads: the last operation of a classifier, applied to the logits.

A network may end with one *head* after its last affine layer (ONNX
``Softmax``, ``LogSoftmax``, ``Sigmoid``, ``Tanh``, ``ArgMax``; PyTorch
``nn.Softmax`` / ``nn.LogSoftmax`` / ``nn.Sigmoid`` / ``nn.Tanh`` or their
functional forms, ``torch.argmax``).  The head is a field of the graph's
:class:`~leo_verify.graph.Output` op; every analysis, prover, certificate and
the checker kernel work on the **logits** (the value *before* the head).  Equal
logits give equal head outputs, so a certificate about the logits is one about
the head outputs too; when the logits are only proven within ``eps``
(rounding of the emitted weights), the head outputs are within ``L * eps``
with the head's Lipschitz constant ``L`` below.

Every head acts on the whole logit vector of one sample (the readers refuse a
softmax over a non-last axis or over part of the outputs).

Lipschitz constants (:data:`HEADS`), in the infinity norm of the logit
difference: for logits ``a``, ``b``,

    ``max_i |h(a)_i - h(b)_i| <= L * max_i |a_i - b_i|``.

Proof scheme.  Each differentiable head ``h`` is C^1 on R^m, so by the mean
value theorem in integral form
``h(a) - h(b) = (integral_0^1 J(b + t (a - b)) dt) (a - b)`` and
``||h(a) - h(b)||_inf <= sup_z ||J(z)||_inf ||a - b||_inf``, where
``||J||_inf`` is the largest absolute row sum of the Jacobian ``J``.  So ``L``
is any bound of the row sums:

* ``sigmoid`` (element-wise): ``s' = s (1 - s)`` with ``s`` in (0, 1), and
  ``s (1 - s) <= 1/4`` (AM-GM); the Jacobian is diagonal: **L = 1/4**.
* ``tanh`` (element-wise): ``tanh' = 1 - tanh^2`` in (0, 1]: **L = 1**.
* ``softmax`` ``p = exp(a) / sum exp(a)``: ``J = diag(p) - p p^T``.  Row ``i``
  has ``p_i (1 - p_i)`` on the diagonal and ``-p_i p_j`` off it, so its
  absolute sum is ``p_i (1 - p_i) + p_i sum_{j != i} p_j = 2 p_i (1 - p_i)
  <= 1/2``: **L = 1/2**.
* ``logsoftmax`` ``l = a - log sum exp(a)``: ``J = I - 1 p^T``.  Row ``i``
  has ``1 - p_i`` on the diagonal and ``-p_j`` off it: absolute sum
  ``(1 - p_i) + sum_{j != i} p_j = 2 (1 - p_i) < 2``: **L = 2** (approached
  when ``p_i -> 0``).
* ``argmax`` is not continuous: no ``L``.  Instead, if ``||a - b||_inf <= eps``
  and the top-two gap of ``a`` (largest minus second largest logit) exceeds
  ``2 eps``, then ``b`` has the same argmax: for the top index ``k`` of ``a``
  and any ``j != k``, ``b_k >= a_k - eps > a_j + eps >= b_j``.  With ``eps = 0``
  the logits are equal, so the argmax is equal everywhere, ties included (both
  networks carry the same head, so they resolve ties alike: the first index,
  or the last with ONNX ``select_last_index=1``).
* ``none`` (no head): the outputs are the logits, **L = 1**.

``tests/test_heads.py`` checks every constant numerically with hypothesis on
random logit pairs (it is never exceeded).

Order: ``softmax``, ``logsoftmax``, ``sigmoid`` and ``tanh`` are strictly
increasing in each logit's rank (``h(a)_i < h(a)_j`` iff ``a_i < a_j``), so
the argmax of the head outputs is the argmax of the logits, ties included:
``check --top1`` compares logits.

The float functions here are for evaluation (``leo-verify eval``,
``evaluate(..., apply_head=True)``); nothing proven depends on them.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Mapping

import numpy as np

from .graph import HEAD_NAMES
from .kernel.binding import float_up
from .kernel.exact import fraction_str
from .kernel.lipschitz import HEAD_LIPSCHITZ

__all__ = ["HEADS", "Head", "apply_head", "lipschitz", "order_preserving", "head_report",
           "head_of"]


def _rows(z: np.ndarray) -> np.ndarray:
    return np.asarray(z, dtype=np.float64)


def _softmax(z, attrs):
    z = _rows(z)
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _logsoftmax(z, attrs):
    z = _rows(z)
    s = z - np.max(z, axis=-1, keepdims=True)
    return s - np.log(np.sum(np.exp(s), axis=-1, keepdims=True))


def _sigmoid(z, attrs):
    z = _rows(z)
    # exp(-log(1 + exp(-z))): no overflow for large |z|
    return np.exp(-np.logaddexp(0.0, -z))


def _tanh(z, attrs):
    return np.tanh(_rows(z))


def _argmax(z, attrs):
    z = _rows(z)
    if int(attrs.get("select_last_index", 0)):
        m = z.shape[-1]
        idx = m - 1 - np.argmax(z[..., ::-1], axis=-1)
    else:
        idx = np.argmax(z, axis=-1)
    return idx.astype(np.int64)[..., None]


def _none(z, attrs):
    return _rows(z)


@dataclass(frozen=True)
class Head:
    """One head: its float function on (batch, m) logits, its proven Lipschitz
    constant (infinity norm; ``None`` for argmax) and whether it preserves the
    order of the logits (so the argmax of its outputs is that of the logits)."""

    name: str
    function: Callable
    lipschitz: Fraction | None
    order_preserving: bool
    describe: str


#: head name -> :class:`Head` (the constants are proven in the module docstring; the table
#: itself is :data:`leo_verify.kernel.lipschitz.HEAD_LIPSCHITZ`, which the checker kernel reads)
HEADS: Mapping[str, Head] = {
    "none": Head("none", _none, HEAD_LIPSCHITZ["none"], True, "no head: the outputs are the logits"),
    "softmax": Head("softmax", _softmax, HEAD_LIPSCHITZ["softmax"], True,
                    "softmax: ||J||_inf = max_i 2 p_i (1 - p_i) <= 1/2"),
    "logsoftmax": Head("logsoftmax", _logsoftmax, HEAD_LIPSCHITZ["logsoftmax"], True,
                       "log-softmax: ||J||_inf = max_i 2 (1 - p_i) < 2"),
    "sigmoid": Head("sigmoid", _sigmoid, HEAD_LIPSCHITZ["sigmoid"], True,
                    "sigmoid: s' = s (1 - s) <= 1/4, element-wise"),
    "tanh": Head("tanh", _tanh, HEAD_LIPSCHITZ["tanh"], True, "tanh: tanh' = 1 - tanh^2 <= 1, element-wise"),
    "argmax": Head("argmax", _argmax, None, True,
                   "argmax: equal wherever the top-two logit gap exceeds 2 eps"),
}
assert set(HEADS) == set(HEAD_NAMES)


def head_of(graph) -> tuple[str, dict]:
    """``(head name, attributes)`` of a graph's output."""
    op = graph.op(graph.output_name)
    return op.head, dict(op.head_attrs)


def apply_head(name: str, attrs: Mapping, logits) -> np.ndarray:
    """The head's outputs (float64; argmax: int64 of shape (batch, 1)) at (batch, m) logits."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; known: {', '.join(HEADS)}")
    return HEADS[name].function(logits, dict(attrs))


def lipschitz(name: str) -> Fraction | None:
    """The proven Lipschitz constant of head ``name`` (infinity norm), None for argmax."""
    return HEADS[name].lipschitz


def order_preserving(name: str) -> bool:
    """True if ``argmax head(a) == argmax a`` for every ``a`` (ties included)."""
    return HEADS[name].order_preserving


def head_report(graph, epsilon: Mapping[str, str]) -> dict:
    """What the certified logit bounds say about the head outputs.

    Parameters
    ----------
    graph : Graph
        The original network (its output op carries the head).
    epsilon : mapping file name -> exact eps string (``"p/q"`` or ``"p"``)
        The proven bound on ``max_i |emitted_i(x) - original_i(x)|`` of the
        *logits* over the domain, per emitted file (the certificate's
        ``epsilon``).

    Returns
    -------
    dict
        ``{"head": name, "attrs": {...}, "lipschitz": "p/q" or None,
        "proof": where the constant is proven, "files": {file: {"logits_eps":
        "p/q", "bound": "p/q" or None, "bound_float": float (rounded up) or None,
        "statement": one line}}}``.  ``bound`` is ``L * eps``, a proven bound on
        ``max_i |head(emitted)_i - head(original)_i|``; for ``argmax`` it is
        None and the statement says where the argmax is equal.
    """
    name, attrs = head_of(graph)
    head = HEADS[name]
    out = {"head": name, "attrs": attrs,
           "lipschitz": None if head.lipschitz is None else fraction_str(head.lipschitz),
           "proof": f"leo_verify/heads.py: {head.describe} (mean value theorem, infinity norm)"
           if head.lipschitz is not None else
           "leo_verify/heads.py: b_k >= a_k - eps > a_j + eps >= b_j for the top index k of a",
           "files": {}}
    for file, text in epsilon.items():
        eps = Fraction(str(text))
        if eps < 0:
            raise ValueError(f"{file}: eps {text!r} is negative")
        entry = {"logits_eps": fraction_str(eps)}
        if head.lipschitz is None:
            entry.update(bound=None, bound_float=None, statement=(
                "equal argmax everywhere on the domain (equal logits; ties resolved as the "
                "original's head resolves them)" if eps == 0 else
                f"equal argmax wherever the original's top-two logit gap exceeds 2*eps = "
                f"{float_up(2 * eps):.3e}"))
        else:
            bound = head.lipschitz * eps
            what = "outputs" if name == "none" else f"{name} outputs"
            entry.update(bound=fraction_str(bound), bound_float=float_up(bound), statement=(
                f"|{what} of {file} - original| <= {fraction_str(head.lipschitz)} * eps = "
                f"{float_up(bound):.3e}" if eps else f"{what} equal to the original's everywhere "
                                                          f"on the domain"))
        out["files"][file] = entry
    return out
