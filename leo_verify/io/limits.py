"""Size limits of the readers: hostile or corrupt files are refused *before* allocating.

Every reader checks the sizes a file *declares* (file length, tensor dims,
layer sizes, number of boxes) against these limits before it allocates
memory or starts work proportional to them, so a tiny file claiming a
10^6 x 10^6 weight, an overflowing shape or 10^11 inputs gives one
:class:`~leo_verify.errors.ModelFormatError` (exit 5) or
:class:`~leo_verify.errors.DomainError` (exit 8) naming the file, the tensor
or node and the limit, instead of a ``MemoryError``, an overflow or a hang.

The limits are module constants (and documented in the README, "Hostile
inputs"); a caller that really needs more may raise them before loading::

    import leo_verify.io.limits as limits
    limits.MAX_ELEMENTS = 10**9

The readers look them up at call time.  Format-specific limits live in their
modules: :mod:`leo_verify.io.nnet` (``MAX_LAYER_SIZE`` = 10^6,
``MAX_PARAMETERS`` = 10^8) and :mod:`leo_verify.io.vnnlib` (``MAX_BYTES`` =
64 MiB, ``MAX_DEPTH`` = 1000, ``MAX_NUMBER_CHARS`` = 1000, ``MAX_CONST_BITS``
= 20000, ``MAX_BOXES`` = 10^4, ``MAX_BOX_VALUES`` = 10^7).
"""
from __future__ import annotations

import math

__all__ = ["MAX_FILE_BYTES", "MAX_ELEMENTS", "MAX_TOTAL_ELEMENTS", "MAX_VALUE_SIZE",
           "MAX_NEURONS", "MAX_RATIONAL_ENTRIES", "MAX_TOTAL_RATIONAL_ENTRIES", "MAX_JSON_BYTES",
           "element_count", "describe"]

#: Model files (ONNX, ``.nnet``, ``.pt``/``.pth``) larger than this are refused
#: before they are read (protobuf cannot parse ONNX files over 2 GiB anyway).
MAX_FILE_BYTES = 1 << 30          # 1 GiB

#: Largest number of elements of one constant tensor (an ONNX initializer or
#: Constant, a folded constant, a state-dict tensor) and of one dense matrix a
#: reader builds (an ``Affine`` weight).  10^8 float64 values = 800 MB.
MAX_ELEMENTS = 100_000_000

#: Largest number of matrix entries a reader builds in total for one model,
#: counted as they are allocated (intermediate compositions included).  Without
#: it a tiny file could repeat an op that turns a scalar into an n x n matrix
#: (``Mul`` by a constant, then ``Relu``, a thousand times).
MAX_TOTAL_ELEMENTS = 500_000_000

#: Largest number of values of one tensor *computed by the network* (the
#: input, any intermediate value, the output): each ReLU unit carries a
#: neuron id, and a value of n entries may need an n x n matrix.
MAX_VALUE_SIZE = 1_000_000

#: Largest number of ReLU units of one model (each carries a neuron id string).
MAX_NEURONS = 10_000_000

#: Largest exact-rational weight matrix a reader builds (ONNX ``Div`` by a
#: constant that is not a power of two, ``.nnet`` normalisation): one Python
#: ``Fraction`` per entry, about a microsecond and 100 bytes each.
MAX_RATIONAL_ENTRIES = 10_000_000

#: Largest number of exact-rational entries a reader builds in total for one model.
MAX_TOTAL_RATIONAL_ENTRIES = 40_000_000

#: JSON files the user names (domains, points, facts) larger than this are
#: refused before parsing.
MAX_JSON_BYTES = 256 << 20        # 256 MiB


def element_count(dims) -> int:
    """The exact product of ``dims`` (Python integers: no int64 overflow)."""
    return math.prod(int(d) for d in dims)


def describe(n: int) -> str:
    """``n`` for a message: ``1000000000000 (1.0e+12)``; astronomically large
    counts (a product of many huge dims) as a power of two."""
    n = int(n)
    if n.bit_length() > 200:
        return f"more than 2^{n.bit_length() - 1}"
    return f"{n} ({float(n):.1e})" if n >= 10**6 else str(n)


class Budget:
    """Running totals of one load, checked against the ``MAX_TOTAL_*`` limits and
    :data:`MAX_NEURONS`.  ``add`` returns an error message (None when within the
    limits), so each reader raises its own documented error class."""

    _LIMITS = {"elements": ("MAX_TOTAL_ELEMENTS", "matrix entries"),
               "rational": ("MAX_TOTAL_RATIONAL_ENTRIES", "exact-rational matrix entries"),
               "neurons": ("MAX_NEURONS", "ReLU units")}

    def __init__(self):
        self.totals = {k: 0 for k in self._LIMITS}

    def add(self, kind: str, n: int) -> str | None:
        self.totals[kind] += int(n)
        name, what = self._LIMITS[kind]
        limit = globals()[name]
        if self.totals[kind] > limit:
            return (f"the model needs more than {limit} {what} in total (leo_verify.io.limits."
                    f"{name})")
        return None
