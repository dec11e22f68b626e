"""Witness search: input points showing a neuron can be on (z > 0) or off (z < 0).

A float evaluation only proposes.  A witness is accepted only when the exact
rational evaluation (:func:`evaluate_exact_all`) of the point confirms the
sign: that is the proof.  Proposals are filtered by a relative margin so that
points whose float value sits within rounding distance of 0 are not offered
(they would rarely survive the exact check).

Points are chosen greedily so that few distinct points (each re-evaluated
exactly once) cover as many neurons as possible; a point whose exact check
refutes a proposal is dropped for that column and the column stays open.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from ..domain import Box
from ..graph import Graph
from ..semantics import backprop, evaluate_all, evaluate_exact_all

__all__ = ["neuron_index", "candidate_points", "search_witnesses",
           "gradient_search", "WitnessSet"]


def neuron_index(graph: Graph) -> dict:
    """neuron id -> (pre-activation node, row, relu node)."""
    out = {}
    for name, op in graph.relus():
        pre = graph.args(name)[0]
        for i, nid in enumerate(op.neurons):
            out[nid] = (pre, i, name)
    return out


def candidate_points(box: Box, rng: np.random.Generator, *, n_random: int = 2000,
                     n_corners: int = 2000, data=None) -> np.ndarray:
    """Centre, corners (all of them if few), edge midpoints, uniform points and the
    user's data points that lie inside the box."""
    n = box.size
    lo, hi = box.lower, box.upper
    pts = [(lo + hi) / 2]
    if n <= 11 and 2 ** n <= n_corners:
        bits = np.array(list(itertools.product((0, 1), repeat=n)), dtype=float)
    else:
        bits = rng.integers(0, 2, size=(n_corners, n)).astype(float)
    pts.extend(lo + bits * (hi - lo))
    if n_random:
        pts.extend(box.sample(n_random, rng))
    arr = np.array(pts)
    if data is not None:
        d = np.asarray(data, dtype=np.float64).reshape(-1, n)
        arr = np.vstack([arr, d[box.contains(d)]])
    return arr


class WitnessSet:
    """Verified witnesses: neuron id -> point for each side."""

    def __init__(self):
        self.pos: dict = {}
        self.neg: dict = {}

    def settled(self, nid: str) -> bool:
        return nid in self.pos and nid in self.neg


#: a float value must clear this fraction of its column's magnitude to be proposed
PROPOSE_REL = 1e-9


def search_witnesses(graph: Graph, points: np.ndarray, neurons: Sequence[str], *,
                     found: WitnessSet | None = None) -> WitnessSet:
    """Add to ``found`` every witness that ``points`` give for ``neurons``.

    Greedy set cover over the proposed signs keeps the number of distinct
    points (each re-checked in exact arithmetic) small.
    """
    found = found if found is not None else WitnessSet()
    idx = neuron_index(graph)
    need_pos = [n for n in neurons if n not in found.pos]
    need_neg = [n for n in neurons if n not in found.neg]
    if not (need_pos or need_neg) or len(points) == 0:
        return found
    pre_nodes = sorted({idx[n][0] for n in set(need_pos) | set(need_neg)})
    # one float pass proposes (point_enclosures' rigorous margins cost 3x and only
    # filtered: the exact replay below is what accepts a witness)
    vals = evaluate_all(graph, points)
    scale = {p: PROPOSE_REL * np.maximum(1.0, np.abs(vals[p]).max(axis=0)) for p in pre_nodes}
    cols = [(n, "pos") for n in need_pos] + [(n, "neg") for n in need_neg]
    cover = np.empty((len(points), len(cols)), dtype=bool)
    for j, (n, side) in enumerate(cols):
        pre, row, _ = idx[n]
        z = vals[pre][:, row]
        cover[:, j] = z > scale[pre][row] if side == "pos" else z < -scale[pre][row]
    open_cols = np.ones(len(cols), dtype=bool)
    while True:
        gain = (cover & open_cols).sum(axis=1)
        best = int(np.argmax(gain))
        if gain[best] == 0:
            break
        point = points[best]
        hit = np.flatnonzero(cover[best] & open_cols)
        proposed = [cols[j] for j in hit]
        confirmed = set(_confirm(graph, point, proposed, idx))
        for j, (n, side) in zip(hit, proposed):
            if (n, side) in confirmed:
                (found.pos if side == "pos" else found.neg)[n] = [float(v) for v in point]
                open_cols[j] = False
        cover[best] = False  # refuted columns stay open for the other points
    return found


def _confirm(graph: Graph, point, claims, idx) -> list:
    vals = evaluate_exact_all(graph, point)
    ok = []
    for n, side in claims:
        pre, row, _ = idx[n]
        z = vals[pre][row]
        if (side == "pos" and z > 0) or (side == "neg" and z < 0):
            ok.append((n, side))
    return ok


def _input_gradients(graph: Graph, x: np.ndarray, target: str, rows: np.ndarray):
    """d value(target)[rows[b]] / d x for each point x[b] (one backward pass)."""
    vals = evaluate_all(graph, x)
    seed = np.zeros((x.shape[0], graph.size_of(target)))
    seed[np.arange(x.shape[0]), rows] = 1.0
    return vals[target][np.arange(x.shape[0]), rows], backprop(graph, vals, seed, start=target)


def gradient_search(graph: Graph, box: Box, targets: Sequence[tuple[str, str]], starts: np.ndarray,
                    *, steps: int = 30, rng: np.random.Generator | None = None) -> np.ndarray:
    """Projected sign-gradient search, one trajectory per (neuron id, side).

    ``side == "pos"`` maximises the pre-activation, ``"neg"`` minimises it.
    Returns the best point of each trajectory (B, n); verification is the
    caller's job (:func:`search_witnesses`).
    """
    idx = neuron_index(graph)
    width = box.upper - box.lower
    x = box.clip(np.array(starts, dtype=np.float64))
    best = x.copy()
    by_node: dict = {}
    for b, (nid, side) in enumerate(targets):
        pre, row, _ = idx[nid]
        by_node.setdefault(pre, []).append((b, row, 1.0 if side == "pos" else -1.0))
    best_val = np.full(len(targets), -np.inf)
    for step in range(steps + 1):
        for pre, items in by_node.items():
            b = np.array([i[0] for i in items])
            rows = np.array([i[1] for i in items])
            sign = np.array([i[2] for i in items])
            val, grad = _input_gradients(graph, x[b], pre, rows)
            val = val * sign
            better = val > best_val[b]
            best_val[b[better]] = val[better]
            best[b[better]] = x[b[better]]
            if step == steps:
                continue
            # step size shrinks from half the box to a small fraction of it
            lr = 0.5 * (1.0 - step / steps) + 0.01
            direction = np.sign(grad * sign[:, None])
            if rng is not None:  # break ties / flat regions with a little noise
                direction = np.where(direction == 0, rng.choice([-1.0, 1.0], size=direction.shape), direction)
            x[b] = box.clip(x[b] + lr * width * direction)
    return best
