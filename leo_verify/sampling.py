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


#: boxes with more coordinates than this draw a seed and mixture weights from hypothesis and the
#: coordinates from numpy: 3,072 hypothesis draws per point cost ~0.2 s (a CIFAR input)
MAX_DRAWN_COORDINATES = 64


@st.composite
def points_in(draw, box: Box):
    """A point of ``box``: per coordinate a bound, the midpoint or an interior value.

    Up to :data:`MAX_DRAWN_COORDINATES` coordinates each is a hypothesis choice (shrinkable one by
    one); beyond, hypothesis draws the shares of the four kinds and a seed, and numpy draws the
    coordinates (still a deterministic function of the drawn choices)."""
    if box.size > MAX_DRAWN_COORDINATES:
        weights = np.array([draw(st.integers(0, 4)) for _ in range(4)], dtype=np.float64)
        if not weights.any():
            weights[:] = 1.0
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
        lo, hi = np.asarray(box.lower, dtype=np.float64), np.asarray(box.upper, dtype=np.float64)
        kind = rng.choice(4, size=box.size, p=weights / weights.sum())
        inner = np.minimum(np.maximum(lo + rng.random(box.size) * (hi - lo), lo), hi)
        return np.select([kind == 0, kind == 1, kind == 2], [lo, hi, (lo + hi) / 2], inner)
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
