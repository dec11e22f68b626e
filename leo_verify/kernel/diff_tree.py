"""Split trees of the differential prover: the checker's side.

A proof that two aligned chains agree (in the sense of a mode, see
:mod:`.diff`) over a box is a *split tree*: an inner node
``{"dim": i, "at": "p/q", "children": [left, right]}`` cuts the box at
``x_i = at`` (strictly inside), a leaf is ``{}`` and must prove the claim on its
sub-box.  A leaf is proven (:func:`prove_leaves`) by the forward symbolic
bounds of :func:`.diff.propagate` (batched, cheap) or, where they fall short, by
the backward bounds of :func:`.diff_back.back_bounds` (tighter, ~10x the cost):
both are exact and sound, so either suffices.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Mapping

from .diff import Aligned, leaf_proves, leaf_proves_batch, propagate, stack_boxes, _MODES
from .diff_back import back_bounds
from .exact import ProofInvalid, Q, parse_rational

__all__ = ["prove_leaves", "check_tree", "BATCH", "MAX_DEPTH", "MAX_NODES"]

#: leaves whose forward bounds are computed together (one batched propagation)
BATCH = 32
#: a split tree deeper than this, or with more nodes, is refused (a hostile file must not hang recheck)
MAX_DEPTH = 64
MAX_NODES = 200_000


def prove_leaves(al: Aligned, boxes: list, mode: str, epsilon: Fraction, *, forward: list | None = None) -> list:
    """Exact verdicts (``True``: proven) for leaf boxes ``[(lo, hi), ...]`` (lists of Fractions).

    ``forward``: per box, try the (batched, cheap) forward bounds first (default: all); the
    backward bounds are tried wherever the forward ones are skipped or fall short."""
    forward = [True] * len(boxes) if forward is None else list(forward)
    out = [False] * len(boxes)
    first = [i for i, f in enumerate(forward) if f]
    for k in range(0, len(first), BATCH):
        part = first[k:k + BATCH]
        lo_q, hi_q = stack_boxes([boxes[i] for i in part])
        for i, ok in zip(part, leaf_proves_batch(propagate(al, lo_q, hi_q), mode, epsilon)):
            out[i] = ok
    for i, (lo, hi) in enumerate(boxes):
        if not out[i]:
            out[i] = leaf_proves(back_bounds(al, Q.of(lo), Q.of(hi)), mode, epsilon)
    return out


def check_tree(al: Aligned, lower: list, upper: list, tree: Mapping, mode: str, epsilon: Fraction) -> int:
    """Check a split tree over ``[lower, upper]`` (exact rationals); return its number of leaves.

    Raises :class:`ProofInvalid` naming the first node that fails.
    """
    if mode not in _MODES:
        raise ProofInvalid(f"unknown mode {mode!r}")
    n = al.n_in
    if len(lower) != n or len(upper) != n:
        raise ProofInvalid(f"the region has {len(lower)}/{len(upper)} bounds, the networks {n} inputs")
    bad = [i for i in range(n) if Fraction(lower[i]) > Fraction(upper[i])]
    if bad:
        raise ProofInvalid(f"the region's input {bad[0]} has lower {lower[bad[0]]} > upper {upper[bad[0]]}")
    count = {"nodes": 0, "leaves": 0}
    leaves: list = []

    def walk(node, lo: list, hi: list, depth: int, path: str) -> None:
        count["nodes"] += 1
        if count["nodes"] > MAX_NODES:
            raise ProofInvalid(f"split tree has more than {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise ProofInvalid(f"split tree deeper than {MAX_DEPTH} at {path}")
        if not isinstance(node, Mapping):
            raise ProofInvalid(f"tree node {path} is not an object")
        if not node:
            leaves.append((lo, hi, path))
            count["leaves"] += 1
            return
        if set(node) != {"dim", "at", "children"}:
            raise ProofInvalid(f"tree node {path} has fields {sorted(node)}; expected dim, at, children")
        dim = node["dim"]
        if not isinstance(dim, int) or isinstance(dim, bool) or not 0 <= dim < n:
            raise ProofInvalid(f"tree node {path}: dim {dim!r} is not an input index below {n}")
        at = parse_rational(node["at"])
        if not lo[dim] < at < hi[dim]:
            raise ProofInvalid(f"tree node {path}: cut {at} not strictly inside [{lo[dim]}, {hi[dim]}] of input {dim}")
        kids = node["children"]
        if not isinstance(kids, list) or len(kids) != 2:
            raise ProofInvalid(f"tree node {path}: children must be a list of two nodes")
        left_hi, right_lo = list(hi), list(lo)
        left_hi[dim] = at
        right_lo[dim] = at
        walk(kids[0], lo, left_hi, depth + 1, path + ".0")
        walk(kids[1], right_lo, hi, depth + 1, path + ".1")

    walk(tree, [Fraction(v) for v in lower], [Fraction(v) for v in upper], 0, "root")
    for k in range(0, len(leaves), BATCH):  # batch by batch: stop at the first leaf that fails
        part = leaves[k:k + BATCH]
        for (lo, hi, path), ok in zip(part, prove_leaves(al, [(lo, hi) for lo, hi, _ in part], mode, epsilon)):
            if not ok:
                raise ProofInvalid(f"leaf {path} (box {_box_text(lo, hi)}) does not prove the {mode} claim")
    return count["leaves"]


def _box_text(lo: list, hi: list) -> str:
    parts = [f"[{float(a):.6g}, {float(b):.6g}]" for a, b in zip(lo[:4], hi[:4])]
    return " x ".join(parts) + (" x ..." if len(lo) > 4 else "")
