"""Point samplers over an input box (core: the fuzz stage draws from them).

:func:`points_in` is the hypothesis strategy the certifier's fuzz stage
(:mod:`leo_verify.certify.fuzz`) searches over; :mod:`leo_verify.testing`
re-exports it for tests.  Kept here so that core code never imports the
public test helpers (which import the equivalence checker back).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from .domain import Box

__all__ = ["points_in"]


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
