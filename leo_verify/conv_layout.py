"""Convolutions in the dense IR: the unrolled matrix and the layout an affine op keeps.

The IR computes on flat vectors, so a convolution is an :class:`~leo_verify.graph.Affine` whose
weight is the unrolled convolution (:func:`conv_matrix`).  Its :class:`ConvLayout` remembers the
convolution it came from, so writers can emit a ``Conv`` (not a dense ``Gemm``) and reports
count the kernel's parameters.  The layout is *checked*, never trusted: an ``Affine`` refuses a
layout whose unrolled matrix is not exactly its weight, and a pass that rewrites weights builds
a new op without one.

``rows[k]`` is the convolution output (flat, channel-major ``(M, Ho, Wo)``) that row ``k`` of
the affine computes; ``cols[j]`` is the convolution input (flat ``(C, H, W)``) that column ``j``
carries, or ``-1`` for a column the convolution does not read (zero in the weight).  Dropping
rows or columns (a pass removing units) restricts the layout (:meth:`ConvLayout.restrict`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["conv_matrix", "ConvLayout", "emit_plan"]


def window_positions(hw_in, hw_out, kernel, strides, dilations, begin):
    """Input row/column of every (output position, kernel offset), shape (Ho, Wo, kh, kw),
    and the mask of those inside the input (the others read the zero padding)."""
    (Ho, Wo), (kh, kw) = hw_out, kernel
    i = np.arange(Ho)[:, None, None, None] * strides[0] - begin[0] \
        + np.arange(kh)[None, None, :, None] * dilations[0]
    j = np.arange(Wo)[None, :, None, None] * strides[1] - begin[1] \
        + np.arange(kw)[None, None, None, :] * dilations[1]
    i, j = np.broadcast_arrays(i, j)
    inside = (i >= 0) & (i < hw_in[0]) & (j >= 0) & (j < hw_in[1])
    return i, j, inside


def conv_matrix(weight: np.ndarray, hw_in: tuple, hw_out: tuple, strides, dilations, begin,
                groups: int) -> np.ndarray:
    """The unrolled 2-D convolution ``M``: ``flat(y) = M @ flat(x)`` for ``x`` of shape
    ``(C, H, W)`` and ``y`` of shape ``(M_out, Ho, Wo)`` (channel-major, like ONNX NCHW).

    ``weight`` has shape ``(M_out, C / groups, kh, kw)``; ``begin`` is the padding before row 0
    and column 0.  Each entry of ``M`` is one kernel weight or zero (distinct kernel offsets
    read distinct input positions), so the lowering is exact.
    """
    m_out, cg, kh, kw = weight.shape
    H, W = hw_in
    Ho, Wo = hw_out
    i, j, inside = window_positions(hw_in, hw_out, (kh, kw), strides, dilations, begin)
    M = np.zeros((m_out * Ho * Wo, cg * groups * H * W))
    pos = np.broadcast_to((np.arange(Ho)[:, None] * Wo + np.arange(Wo)[None, :])[:, :, None, None],
                          i.shape)[inside]
    spot = (i * W + j)[inside]
    # which kernel offset each (position, offset) pair uses
    a = np.broadcast_to(np.arange(kh)[None, None, :, None], i.shape)[inside]
    b = np.broadcast_to(np.arange(kw)[None, None, None, :], i.shape)[inside]
    per_group = m_out // groups
    for m in range(m_out):
        g = m // per_group
        for cc in range(cg):
            M[m * Ho * Wo + pos, (g * cg + cc) * H * W + spot] = weight[m, cc, a, b]
    return M


def _frozen(a, dtype) -> np.ndarray:
    arr = np.array(a, dtype=dtype, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class ConvLayout:
    """The convolution an affine op computes (see the module docstring).

    Parameters
    ----------
    kernel : (M, C / groups, kh, kw) float64; a 1-D convolution has ``kh = 1``.
    bias : (M,) float64.
    in_shape : (C, H, W) of the convolution input (``H = 1`` for 1-D).
    out_hw : (Ho, Wo).
    strides, dilations, begin : per spatial axis (2 entries); ``begin`` is the padding before
        the first row/column (the padding after is implied by ``out_hw``).
    groups : ONNX ``group``.
    spatial : 1 or 2, the dimensionality the source model used (for the writers).
    rows, cols : see the module docstring.
    """

    kernel: np.ndarray
    bias: np.ndarray
    in_shape: tuple
    out_hw: tuple
    strides: tuple
    dilations: tuple
    begin: tuple
    groups: int
    spatial: int
    rows: np.ndarray
    cols: np.ndarray

    def __post_init__(self):
        for name in ("kernel", "bias"):
            object.__setattr__(self, name, _frozen(getattr(self, name), np.float64))
        for name in ("rows", "cols"):
            object.__setattr__(self, name, _frozen(getattr(self, name), np.int64))
        for name in ("in_shape", "out_hw", "strides", "dilations", "begin"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        used = self.cols[self.cols >= 0]
        if len(np.unique(used)) != len(used) or (used.size and used.max() >= self.n_inputs) \
                or len(np.unique(self.rows)) != len(self.rows) \
                or (self.rows.size and (self.rows.min() < 0 or self.rows.max() >= self.n_outputs)):
            raise ValueError("conv layout rows/cols must be distinct in-range indices")

    @property
    def out_channels(self) -> int:
        return int(self.kernel.shape[0])

    @property
    def n_inputs(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def n_outputs(self) -> int:
        return self.out_channels * self.out_hw[0] * self.out_hw[1]

    @property
    def parameters(self) -> int:
        """Parameters of the convolution the writers emit: the kernels of the output channels
        that still have a row and of the input channels still read (with ``groups > 1`` the
        writers keep every channel: :func:`emit_plan`), biases."""
        if self.groups == 1:
            m, c = len(self.row_channels()), len(self.col_channels())
        else:
            m, c = self.out_channels, self.kernel.shape[1]
        return m * c * self.kernel.shape[2] * self.kernel.shape[3] + m

    def row_channels(self) -> np.ndarray:
        """Output channels with at least one row, ascending."""
        return np.unique(self.rows // (self.out_hw[0] * self.out_hw[1]))

    def col_channels(self) -> np.ndarray:
        """Input channels with at least one column, ascending."""
        hw = self.in_shape[1] * self.in_shape[2]
        return np.unique(self.cols[self.cols >= 0] // hw)

    def full_matrix(self) -> np.ndarray:
        C, H, W = self.in_shape
        return conv_matrix(self.kernel, (H, W), self.out_hw, self.strides, self.dilations,
                           self.begin, self.groups)

    def matrix(self) -> np.ndarray:
        """The affine weight this layout stands for: rows ``rows``, columns ``cols``."""
        full = self.full_matrix()[self.rows]
        out = np.zeros((len(self.rows), len(self.cols)))
        used = self.cols >= 0
        out[:, used] = full[:, self.cols[used]]
        return out

    def dense_bias(self) -> np.ndarray:
        return np.repeat(self.bias, self.out_hw[0] * self.out_hw[1])[self.rows]

    def restrict(self, *, rows=None, cols=None) -> "ConvLayout":
        """The layout of the sub-matrix with rows ``rows`` and columns ``cols`` (positions in
        this layout's rows/cols)."""
        from dataclasses import replace
        return replace(self,
                       rows=self.rows if rows is None else self.rows[np.asarray(rows, dtype=np.int64)],
                       cols=self.cols if cols is None else self.cols[np.asarray(cols, dtype=np.int64)])

    def check(self, weight: np.ndarray, bias: np.ndarray) -> str:
        """'' when ``weight``/``bias`` are exactly this layout's matrix and bias; else why not."""
        if weight.shape != (len(self.rows), len(self.cols)):
            return f"layout has {len(self.rows)} x {len(self.cols)} entries, weight {weight.shape}"
        if not np.array_equal(self.matrix(), weight):
            return "weight is not the unrolled convolution of its layout"
        if not np.array_equal(self.dense_bias(), bias):
            return "bias is not the convolution bias of its layout"
        return ""


def emit_plan(lay: ConvLayout) -> dict | None:
    """How to emit the convolution ``lay`` (a :class:`~leo_verify.conv_layout.ConvLayout`) as
    ``Conv``: the input/output index maps (None: identity), the kernel of the output channels
    that still have rows (and, for ``group = 1``, of the input channels still read), the
    attributes.  None when the columns miss part of an input channel that is read (the
    convolution would need zeros scattered back: the writer then emits the dense ``Gemm``)."""
    C, H, W = lay.in_shape
    hw = H * W
    in_ch = lay.col_channels() if lay.groups == 1 else np.arange(C)
    out_ch = lay.row_channels() if lay.groups == 1 else np.arange(lay.out_channels)
    if not len(in_ch) or not len(out_ch):
        return None  # no rows or no columns left: an empty Gemm says that more plainly
    inv = np.full(lay.n_inputs, -1, dtype=np.int64)
    used = np.nonzero(lay.cols >= 0)[0]
    inv[lay.cols[used]] = used
    gather_in = inv[(in_ch[:, None] * hw + np.arange(hw)[None, :]).ravel()]
    if np.any(gather_in < 0):
        return None
    if len(gather_in) == len(lay.cols) and np.array_equal(gather_in, np.arange(len(lay.cols))):
        gather_in = None
    kernel = lay.kernel[out_ch]
    if lay.groups == 1:
        kernel = kernel[:, in_ch]
    howo = lay.out_hw[0] * lay.out_hw[1]
    new_ch = np.full(lay.out_channels, -1, dtype=np.int64)
    new_ch[out_ch] = np.arange(len(out_ch))
    gather_out = new_ch[lay.rows // howo] * howo + lay.rows % howo
    if np.array_equal(gather_out, np.arange(len(out_ch) * howo)):
        gather_out = None
    kh, kw = lay.kernel.shape[2:]
    ends = []
    for n_in, k, s, d, b, n_out in zip((H, W), (kh, kw), lay.strides, lay.dilations, lay.begin,
                                       lay.out_hw):
        ends.append(max(0, (n_out - 1) * s + (k - 1) * d + 1 - n_in - b))
        if (n_in + b + ends[-1] - (k - 1) * d - 1) // s + 1 != n_out:  # pragma: no cover
            return None
    axes = slice(2 - lay.spatial, 2)
    attrs = {"kernel_shape": [kh, kw][axes], "strides": list(lay.strides)[axes],
             "dilations": list(lay.dilations)[axes],
             "pads": list(lay.begin)[axes] + ends[axes], "group": int(lay.groups)}
    in_dims = [len(in_ch), H, W] if lay.spatial == 2 else [len(in_ch), W]
    shape_k = kernel.shape if lay.spatial == 2 else kernel.shape[:2] + (kw,)
    return {"gather_in": gather_in, "gather_out": gather_out, "in_dims": in_dims,
            "kernel": kernel.reshape(shape_k), "bias": lay.bias[out_ch], "attrs": attrs}
