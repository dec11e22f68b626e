"""Proven Lipschitz constants of the output heads, in the infinity norm of the logits.

``max_i |h(a)_i - h(b)_i| <= L * max_i |a_i - b_i|`` for all logit vectors ``a``, ``b``.
The proofs (bounds of the Jacobian's absolute row sums) are in the docstring of
:mod:`leo_verify.heads`, which takes its constants from this table; the checker
kernel reads them here to re-check an ``epsilon`` claim about head outputs from a
proof about the logits at ``epsilon / L``.  ``argmax`` is not continuous: no entry.
"""
from __future__ import annotations

from fractions import Fraction

__all__ = ["HEAD_LIPSCHITZ"]

HEAD_LIPSCHITZ = {
    "none": Fraction(1),
    "softmax": Fraction(1, 2),
    "logsoftmax": Fraction(2),
    "sigmoid": Fraction(1, 4),
    "tanh": Fraction(1),
}
