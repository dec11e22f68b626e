"""Convolution and pooling handlers of the ONNX op table: ``Conv``, ``Pad``, ``AveragePool``,
``GlobalAveragePool``, ``MaxPool``, ``GlobalMaxPool``.

All of them are lowered to the IR's dense ops while tracing, exactly:

* ``Conv`` and ``Pad`` (constant mode) are affine maps; their matrix is the unrolled
  convolution (one row per output unit ``(channel, row, column)``, the kernel's entries placed
  at the input positions it reads), composed with the pending linear value like any ``Gemm``.
* ``AveragePool`` is affine with weights ``1/k``: a power-of-two ``k`` is a float; otherwise the
  sum (integer weights) is followed by an exact rational division, so the network stays the
  real-valued average (never the rounded float ``1/9``).
* ``MaxPool`` is piecewise linear: ``max(a, b) = b + relu(a - b)``, applied as a balanced tree
  over each window.  Every level adds one ReLU layer (its units are neurons like any other,
  named after the pool node) and one residual ``Add``; pads are ``-inf`` in ONNX, i.e. padded
  positions are simply not in the window.

Only 1-D and 2-D spatial ops on a batch of one are supported; 3-D convolutions and pooling,
non-constant ``Pad`` modes, a network value as weights or pads raise ``UnsupportedOp``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ...conv_layout import conv_matrix, ConvLayout, window_positions
from ...errors import UnsupportedOp
from ...graph import neuron_id, Relu
from .nodes import _add_values, _exact_division
from .values import _is_const, _is_pow2, _Lin, _need_dense, _need_value, _spend

if TYPE_CHECKING:  # annotations only
    from .tracer import _Tracer


# ---------------------------------------------------------------------------
# geometry shared by Conv and the pools
# ---------------------------------------------------------------------------
def _spatial(t: _Tracer, x, op: str) -> tuple[int, tuple]:
    """(channels, spatial dims as a 2-tuple) of an ``[1, C, *spatial]`` network value."""
    shape = tuple(int(d) for d in x.shape)
    if len(shape) < 3:
        raise t.error(f"{op} needs an input of shape [N, C, ...], got {list(shape)}")
    if len(shape) > 4:
        raise t.error(f"{op} over {len(shape) - 2} spatial dimensions (input shape {list(shape)}) "
                      f"is not supported: only 1-D and 2-D", UnsupportedOp)
    if shape[0] != 1:
        raise t.error(f"{op} on a batch of {shape[0]} samples is not supported (batch of one)",
                      UnsupportedOp)
    spatial = shape[2:]
    return shape[1], (1,) + spatial if len(spatial) == 1 else spatial


def _ints(t, attrs, key, n: int, default: int) -> tuple:
    v = attrs.get(key)
    if v is None:
        return (default,) * n
    v = tuple(int(a) for a in v)
    if len(v) != n:
        raise t.error(f"attribute {key}={list(v)} must have {n} entries")
    return v


def _geometry(t, attrs, spatial_in: tuple, nsp: int, kernel: tuple, *, pool: bool):
    """Strides, dilations, begin/end pads and the output size per axis (2 axes; a 1-D op is
    handled as a 2-D one with height 1)."""
    strides = _ints(t, attrs, "strides", nsp, 1)
    dilations = _ints(t, attrs, "dilations", nsp, 1)
    if any(s < 1 for s in strides) or any(d < 1 for d in dilations):
        raise t.error(f"strides {list(strides)} and dilations {list(dilations)} must be >= 1")
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    ceil_mode = bool(attrs.get("ceil_mode", 0)) if pool else False
    ins = spatial_in[2 - nsp:]
    if auto in ("NOTSET", ""):
        pads = _ints(t, attrs, "pads", 2 * nsp, 0)
        begin, end = pads[:nsp], pads[nsp:]
    elif auto == "VALID":
        begin = end = (0,) * nsp
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for n, k, s, d in zip(ins, kernel, strides, dilations):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small = total // 2
            begin.append(small if auto == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
    else:
        raise t.error(f"auto_pad {auto!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    if any(p < 0 for p in tuple(begin) + tuple(end)):
        raise t.error(f"negative pads {list(begin) + list(end)} are not supported", UnsupportedOp)
    outs = []
    for n, k, s, d, b, e in zip(ins, kernel, strides, dilations, begin, end):
        span = (k - 1) * d + 1
        if n + b + e < span:
            raise t.error(f"the kernel (extent {span}) is larger than the padded input ({n + b + e})")
        rnd = math.ceil if ceil_mode else math.floor
        o = rnd((n + b + e - span) / s) + 1
        if ceil_mode and (o - 1) * s >= n + b:  # ONNX/PyTorch: the last window starts inside
            o -= 1
        outs.append(int(o))
    pad1 = (0,) * (2 - nsp)
    one = (1,) * (2 - nsp)
    return one + tuple(strides), one + tuple(dilations), pad1 + tuple(begin), one + tuple(outs)


def _kernel2(t, kshape: tuple, nsp: int) -> tuple:
    k = tuple(int(a) for a in kshape)
    if len(k) != nsp or any(a < 1 for a in k):
        raise t.error(f"kernel_shape {list(k)} must have {nsp} positive entries")
    return (1,) * (2 - nsp) + k


# ---------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------
def _op_conv(t, node, ins, attrs):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if _is_const(x):
        raise t.error("Conv of a constant input would round when folded", UnsupportedOp)
    if not _is_const(w) or (b is not None and not _is_const(b)):
        raise t.error("Conv with a network value as weight or bias is not supported", UnsupportedOp)
    C, hw_in = _spatial(t, x, "Conv")
    nsp = len(x.shape) - 2
    w = t.as_float(w, "Conv weight")
    if w.ndim != nsp + 2:
        raise t.error(f"Conv weight of shape {list(w.shape)} does not match an input of shape "
                      f"{list(x.shape)}")
    groups = int(attrs.get("group", 1))
    m_out = int(w.shape[0])
    if groups < 1 or C % groups or m_out % groups or w.shape[1] * groups != C:
        raise t.error(f"weight shape {list(w.shape)} with group={groups} does not fit {C} "
                      f"input channels")
    ks = _kernel2(t, attrs.get("kernel_shape", w.shape[2:]), nsp)
    if tuple(w.shape[2:]) != ks[2 - nsp:]:
        raise t.error(f"kernel_shape {list(ks[2 - nsp:])} differs from the weight's "
                      f"{list(w.shape[2:])}")
    strides, dilations, begin, hw_out = _geometry(t, attrs, hw_in, nsp, ks[2 - nsp:], pool=False)
    w4 = w.reshape((m_out, C // groups) + ks)
    out_shape = (1, m_out) + tuple(hw_out[2 - nsp:])
    _need_value(out_shape, "the Conv output")
    _need_dense(m_out * hw_out[0] * hw_out[1], x.size, "this Conv (unrolled)")
    _need_dense(hw_out[0] * hw_out[1], ks[0] * ks[1], "the Conv windows")
    bias = np.zeros(m_out)
    if b is not None:
        bias = t.as_float(b, "Conv bias").ravel()
        if bias.size != m_out:
            raise t.error(f"Conv bias has {bias.size} entries, expected {m_out}")
    return [_apply_conv(t, x, w4, bias, (C,) + tuple(hw_in), hw_out, strides, dilations, begin,
                        groups, nsp, out_shape)]


def _apply_conv(t, x, w4, bias, in_shape, hw_out, strides, dilations, begin, groups, nsp,
                out_shape):
    """The pending value ``conv(x)`` carrying its :class:`ConvLayout`."""
    M = conv_matrix(w4, in_shape[1:], hw_out, strides, dilations, begin, groups)
    # the affine's columns: the source entries the convolution input reads (a Transpose or
    # Pad before the Conv is a selection, composed exactly), else the materialized input
    if x.perm is None or not x.bzero:
        x = t.fresh(t.materialize(x), x.shape)
    cols = np.full(x.n_src, -1, dtype=np.int64)
    reads = np.nonzero(x.perm >= 0)[0]
    cols[x.perm[reads]] = reads
    y = t.apply(x, _Lin(out_shape, matrix=M, offset=np.repeat(bias, hw_out[0] * hw_out[1])))
    y.layout = ConvLayout(w4, bias, in_shape, hw_out, strides, dilations, begin,
                          groups, nsp, np.arange(M.shape[0]), cols)
    return y


# ---------------------------------------------------------------------------
# Pad
# ---------------------------------------------------------------------------
def _op_pad(t, node, ins, attrs):
    x = ins[0]
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode != "constant":
        raise t.error(f"Pad mode {mode!r} is not supported (only 'constant')", UnsupportedOp)
    r = len(x.shape)
    if len(ins) > 1 and ins[1] is not None:  # opset >= 11: pads (and value, axes) are inputs
        if not _is_const(ins[1]):
            raise t.error("pads must be a constant, not a network value", UnsupportedOp)
        pads = [int(p) for p in np.asarray(ins[1]).ravel()]
        value = 0.0
        if len(ins) > 2 and ins[2] is not None:
            if not _is_const(ins[2]):
                raise t.error("the pad value must be a constant, not a network value",
                              UnsupportedOp)
            value = float(t.as_float(np.asarray(ins[2]), "pad value").ravel()[0]) \
                if np.asarray(ins[2]).size else 0.0
        axes = list(range(r))
        if len(ins) > 3 and ins[3] is not None:
            if not _is_const(ins[3]):
                raise t.error("axes must be a constant", UnsupportedOp)
            axes = [int(a) + r if int(a) < 0 else int(a) for a in np.asarray(ins[3]).ravel()]
    else:
        pads = [int(p) for p in attrs.get("pads", [])]
        value = float(attrs.get("value", 0.0))
        axes = list(range(r))
    if len(pads) != 2 * len(axes) or any(not 0 <= a < r for a in axes):
        raise t.error(f"pads {pads} do not fit axes {axes} of a tensor of rank {r}")
    if _is_const(x):
        full = [(0, 0)] * r
        for k, a in enumerate(axes):
            full[a] = (pads[k], pads[k + len(axes)])
        if any(p < 0 for pr in full for p in pr):
            raise t.error("negative pads of a constant are not supported", UnsupportedOp)
        return [np.pad(t.as_float(x, "Pad input"), full, constant_values=value)]
    begin = [0] * r
    end = [0] * r
    for k, a in enumerate(axes):
        begin[a], end[a] = pads[k], pads[k + len(axes)]
    out_shape = tuple(int(n) + b + e for n, b, e in zip(x.shape, begin, end))
    if any(n < 0 for n in out_shape):
        raise t.error(f"pads {pads} crop more than the tensor of shape {list(x.shape)} has")
    _need_value(out_shape, "the Pad output")
    # every output entry is one input entry (a row selection) or the pad value (a zero row)
    grids = np.meshgrid(*[np.arange(n) - b for n, b in zip(out_shape, begin)], indexing="ij")
    inside = np.ones(out_shape, dtype=bool)
    for g, n in zip(grids, x.shape):
        inside &= (g >= 0) & (g < n)
    src = np.zeros(out_shape, dtype=np.int64)
    for g, n in zip(grids, x.shape):
        src = src * int(n) + np.where(inside, g, 0)
    select = np.where(inside, src, -1).ravel()
    offset = None if value == 0.0 else np.where(inside, 0.0, value).ravel()
    return [t.apply(x, _Lin(out_shape, select=select, offset=offset))]


# ---------------------------------------------------------------------------
# pools
# ---------------------------------------------------------------------------
def _pool_setup(t, x, attrs, op: str, *, is_global: bool):
    """Channels, spatial dims in/out, the 2-D kernel, its geometry ``(strides, dilations,
    begin)``, the window positions ``(i, j, inside)`` and the output shape of a pool."""
    C, hw_in = _spatial(t, x, op)
    nsp = len(x.shape) - 2
    if is_global:
        ks = (1,) * (2 - nsp) + tuple(hw_in[2 - nsp:])
        strides, dilations, begin, hw_out = (1, 1), (1, 1), (0, 0), (1, 1)
    else:
        if "kernel_shape" not in attrs:
            raise t.error("missing attribute 'kernel_shape'")
        ks = _kernel2(t, attrs["kernel_shape"], nsp)
        strides, dilations, begin, hw_out = _geometry(t, attrs, hw_in, nsp, ks[2 - nsp:], pool=True)
    # a hostile kernel_shape (an attribute: no tensor bounds it) must not allocate the windows
    _need_dense(hw_out[0] * hw_out[1], ks[0] * ks[1], f"the {op} windows")
    i, j, inside = window_positions(hw_in, hw_out, ks, strides, dilations, begin)
    out_shape = (1, C) + tuple(hw_out[2 - nsp:])
    _need_value(out_shape, f"the {op} output")
    return C, hw_in, hw_out, ks, (strides, dilations, begin), i, j, inside, out_shape


def _window_lists(C, hw_in, hw_out, i, j, inside):
    """Per output unit (channel-major), the flat input indices of its window."""
    H, W = hw_in
    flat = i * W + j  # (Ho, Wo, kh, kw)
    per_pos = [flat[a, b][inside[a, b]] for a in range(hw_out[0]) for b in range(hw_out[1])]
    return [c * H * W + p for c in range(C) for p in per_pos]


def _avg_pool(t, node, ins, attrs, *, is_global: bool):
    x = ins[0]
    op = "GlobalAveragePool" if is_global else "AveragePool"
    C, hw_in, hw_out, ks, geom, i, j, inside, out_shape = _pool_setup(t, x, attrs, op,
                                                                     is_global=is_global)
    windows = _window_lists(C, hw_in, hw_out, i, j, inside)
    full = ks[0] * ks[1]
    include_pad = bool(attrs.get("count_include_pad", 0)) and not is_global
    if include_pad and (bool(attrs.get("ceil_mode", 0))):
        # positions past the padded input are not counted either (onnxruntime/PyTorch)
        raise t.error("AveragePool with count_include_pad=1 and ceil_mode=1 is not supported",
                      UnsupportedOp)
    div = np.array([full if include_pad else len(w) for w in windows], dtype=np.float64)
    n = len(windows)
    if _is_pow2(div) and np.all(div == full) and not is_global:
        # every window divides by the full kernel size, a power of two: a depthwise convolution
        # with weights 1/k (pads read zeros), emitted as a Conv
        _need_dense(n, x.size, f"this {op} (unrolled)")
        w4 = np.full((C, 1) + tuple(ks), 1.0 / full)
        return [_apply_conv(t, x, w4, np.zeros(C), (C,) + tuple(hw_in), hw_out, *geom, C,
                            len(x.shape) - 2, out_shape)]
    _need_dense(n, x.size, f"this {op} (unrolled)")
    S = np.zeros((n, x.size))
    for r, w in enumerate(windows):
        S[r, w] = 1.0
    if _is_pow2(div):  # 1/k is a float: one exact scaling
        S /= div[:, None]
        return [t.apply(x, _Lin(out_shape, matrix=S))]
    summed = t.apply(x, _Lin(out_shape, matrix=S))
    return [_exact_division(t, summed, np.arange(n), div, out_shape)]


def _op_average_pool(t, node, ins, attrs):
    return _avg_pool(t, node, ins, attrs, is_global=False)


def _op_global_average_pool(t, node, ins, attrs):
    return _avg_pool(t, node, ins, attrs, is_global=True)


def _max_pool(t, node, ins, attrs, *, is_global: bool):
    x = ins[0]
    op = "GlobalMaxPool" if is_global else "MaxPool"
    if len([o for o in node.output if o]) > 1:
        raise t.error(f"{op} with an Indices output is not supported", UnsupportedOp)
    if not is_global and int(attrs.get("storage_order", 0)) not in (0, 1):
        raise t.error(f"storage_order {attrs['storage_order']} is not 0 or 1")
    if _is_const(x):
        raise t.error(f"{op} of a constant is not supported", UnsupportedOp)
    C, hw_in, hw_out, ks, geom, i, j, inside, out_shape = _pool_setup(t, x, attrs, op,
                                                                     is_global=is_global)
    if inside.all() and ks[0] * ks[1] > 1:
        # no window reads the (-inf) padding: every level is a convolution (a 1x1 window has no
        # level: it is the selection below)
        return [_max_tree_conv(t, x, C, hw_in, hw_out, ks, geom, len(x.shape) - 2, out_shape)]
    cands = [list(w) for w in _window_lists(C, hw_in, hw_out, i, j, inside)]
    if any(not c for c in cands):  # pragma: no cover - pads < kernel keep windows non-empty
        raise t.error(f"{op} has an empty window")
    return [_max_tree(t, x, cands, out_shape)]


def _max_tree(t, z, cands: list, out_shape: tuple):
    """``max`` over each candidate list of entries of ``z``, by levels of
    ``max(a, b) = b + relu(a - b)``; returns the pending value of shape ``out_shape``."""
    level = 0
    while any(len(c) > 1 for c in cands):
        level += 1
        d_rows, pair_of, keep_src, new_cands = [], [], [], []
        for c in cands:
            mine = []
            for k in range(0, len(c) - 1, 2):
                # new entry: z[b] + relu(z[a] - z[b]) = max(z[a], z[b])
                mine.append(len(keep_src))
                pair_of.append(len(d_rows))
                d_rows.append((c[k], c[k + 1]))
                keep_src.append(c[k + 1])
            if len(c) % 2:
                mine.append(len(keep_src))
                pair_of.append(-1)  # passes through unchanged
                keep_src.append(c[-1])
            new_cands.append(mine)
        npairs, m = len(d_rows), len(keep_src)
        _need_dense(npairs, z.size, "a MaxPool level")
        _spend("neurons", npairs, "this MaxPool")
        D = np.zeros((npairs, z.size))
        a_idx = np.array([a for a, _ in d_rows])
        b_idx = np.array([b for _, b in d_rows])
        D[np.arange(npairs), a_idx] = 1.0
        D[np.arange(npairs), b_idx] -= 1.0
        diff = t.apply(z, _Lin((npairs,), matrix=D))
        src = t.materialize(diff)
        name = t.graph.fresh_name(f"{t.label}/max{level}")
        t.graph.add(name, Relu([neuron_id(name, k) for k in range(npairs)]), [src])
        relu = t.fresh(name, (npairs,))
        last = all(len(c) == 1 for c in new_cands)
        shape = out_shape if last else (m,)
        gains = t.apply(relu, _Lin(shape, select=np.array(pair_of, dtype=np.int64)))
        kept = t.apply(z, _Lin(shape, select=np.array(keep_src, dtype=np.int64)))
        z = _add_values(t, gains, kept, negate=False)
        cands = new_cands
    if level == 0:  # 1-element windows: a selection
        return t.apply(z, _Lin(out_shape, select=np.array([c[0] for c in cands], dtype=np.int64)))
    order = np.array([c[0] for c in cands], dtype=np.int64)
    if not np.array_equal(order, np.arange(len(order))):
        z = t.apply(z, _Lin(out_shape, select=order))
    return z.reshaped(out_shape) if z.shape != out_shape else z


def _max_tree_conv(t, x, C, hw_in, hw_out, ks, geom, nsp, out_shape):
    """The balanced ``max(a, b) = b + relu(a - b)`` tree of a pool whose windows all lie inside
    the input, every level a grouped convolution (one group per channel), so the writers emit
    ``Conv`` nodes with 0/+-1 kernels.  The candidates of level ``l`` are a tensor of
    ``C * m_l`` channels (channel ``c * m_l + r`` is candidate ``r`` of channel ``c``'s window):
    level 1 reads the input through the pool's window, later levels are 1x1 convolutions."""
    kh, kw = ks
    offsets = [(a, b) for a in range(kh) for b in range(kw)]
    howo = hw_out[0] * hw_out[1]
    src, m, level = x, len(offsets), 0
    strides, dilations, begin = geom
    in_shape = (C,) + tuple(hw_in)
    while m > 1:
        level += 1
        npairs, odd = m // 2, m % 2

        def kernel(entries):
            """A grouped kernel: output r of each channel's group sums coef * candidate q."""
            if level == 1:
                w = np.zeros((C * len(entries), 1, kh, kw))
            else:
                w = np.zeros((C * len(entries), m, 1, 1))
            for c in range(C):
                for r, terms in enumerate(entries):
                    for q, coef in terms:
                        if level == 1:
                            w[c * len(entries) + r, 0, offsets[q][0], offsets[q][1]] = coef
                        else:
                            w[c * len(entries) + r, q, 0, 0] = coef
            return w

        if level == 1:
            g = (strides, dilations, begin)
        else:
            g = ((1, 1), (1, 1), (0, 0))
            in_shape = (C * m,) + tuple(hw_out)
        _spend("neurons", C * npairs * howo, "this MaxPool")
        diff = _apply_conv(t, src, kernel([[(2 * p, 1.0), (2 * p + 1, -1.0)] for p in range(npairs)]),
                           np.zeros(C * npairs), in_shape, hw_out, *g, C, nsp,
                           (1, C * npairs) + tuple(hw_out))
        kept_terms = [[(2 * p + 1, 1.0)] for p in range(npairs)] + ([[(m - 1, 1.0)]] if odd else [])
        m_next = len(kept_terms)
        kept = _apply_conv(t, src, kernel(kept_terms), np.zeros(C * m_next), in_shape, hw_out, *g,
                           C, nsp, (1, C * m_next) + tuple(hw_out))
        name = t.graph.fresh_name(f"{t.label}/max{level}")
        t.graph.add(name, Relu([neuron_id(name, k) for k in range(C * npairs * howo)]),
                    [t.materialize(diff)])
        gains = t.fresh(name, (1, C * npairs) + tuple(hw_out))
        if odd:  # the leftover candidate gains nothing: place the pairs among m_next channels
            place = np.zeros((C * m_next, npairs, 1, 1))
            for c in range(C):
                for p in range(npairs):
                    place[c * m_next + p, p, 0, 0] = 1.0
            gains = _apply_conv(t, gains, place, np.zeros(C * m_next),
                                (C * npairs,) + tuple(hw_out), hw_out, (1, 1), (1, 1), (0, 0), C,
                                nsp, (1, C * m_next) + tuple(hw_out))
        src, m = _add_values(t, gains, kept, negate=False), m_next
    return src.reshaped(out_shape) if src.shape != out_shape else src


def _op_max_pool(t, node, ins, attrs):
    return _max_pool(t, node, ins, attrs, is_global=False)


def _op_global_max_pool(t, node, ins, attrs):
    return _max_pool(t, node, ins, attrs, is_global=True)


CONV_HANDLERS = {
    "Conv": _op_conv,
    "Pad": _op_pad,
    "AveragePool": _op_average_pool,
    "GlobalAveragePool": _op_global_average_pool,
    "MaxPool": _op_max_pool,
    "GlobalMaxPool": _op_global_max_pool,
}
