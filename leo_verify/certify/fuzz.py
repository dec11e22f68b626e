"""Falsification: search an input box for a point where two networks differ.

:func:`falsify` runs a campaign of cheap searches and reports the largest
difference it saw; it proves nothing (a difference of 0 means "not found").
Every point is evaluated in float64 (:func:`leo_verify.semantics.evaluate`);
callers that want to *report* a counterexample replay it exactly
(:func:`leo_verify.certify.equivalence.replay`).

Stages, in order (each adds points; the best ones seed the later stages):

``corners``    every corner if ``2^n <= 4096``, else random corners;
``centre``     the box centre;
``edges``      points on the box's edges (one coordinate free, the others at bounds);
``uniform``    uniform random points;
``extra``      the caller's points (e.g. an analysis' witnesses), clipped into the box;
``boundary``   points next to ReLU boundaries of either network: bisection along
               segments between two points where a pre-activation changes sign;
``hypothesis`` a seeded, targeted hypothesis search over :func:`leo_verify.sampling.points_in`
               (skipped inside a running hypothesis test: nesting ``@given`` is refused
               by hypothesis' health check);
``gradient``   projected sign-gradient ascent on ``+-(f_i - g_i)`` for every output ``i``
               (mode ``"max"``) or on the disagreement margin of every ordered pair of
               classes (mode ``"top1"``), from the best points found so far.

The quantity maximised:

* mode ``"max"``: ``max_i |f_i(x) - g_i(x)|``;
* mode ``"top1"``: ``max_j g_j(x) - g_{a}(x)`` with ``a`` the (first) argmax of
  ``f(x)``; it is ``> 0`` exactly when ``g`` strictly prefers some class to
  ``f``'s top class, so ``argmax g != argmax f``.

The campaign is deterministic for a given ``seed`` (numpy and hypothesis are
both seeded) unless ``budget`` cuts it short.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..domain import Box
from ..errors import DataError
from ..graph import Graph
from ..semantics import backprop, evaluate, evaluate_all

__all__ = ["falsify", "FuzzResult", "MODES", "check_sizes", "output_gradients", "score"]

MODES = ("max", "top1")
#: all corners are enumerated up to this many
MAX_ALL_CORNERS = 4096


def check_sizes(f: Graph, g: Graph) -> None:
    """Two networks to compare must have the same input and output sizes (:class:`DataError`)."""
    if f.input_size != g.input_size:
        raise DataError(f"the networks have different input sizes: {f.input_size} "
                        f"({f.name!r}) vs {g.input_size} ({g.name!r})")
    if f.output_size != g.output_size:
        raise DataError(f"the networks have different output sizes: {f.output_size} "
                        f"({f.name!r}) vs {g.output_size} ({g.name!r})")


@dataclass
class FuzzResult:
    """What a falsification campaign saw.

    Attributes
    ----------
    mode : ``"max"`` or ``"top1"``.
    max_diff : the largest quantity seen (see the module docstring); ``0.0``
        for identical float outputs.
    point : the input where it was seen (float64 array), or ``None`` if no
        point was evaluated.
    per_output : mode ``"max"``: per output ``i``, the largest ``|f_i - g_i|``
        seen; mode ``"top1"``: per class ``i``, the largest ``max_j g_j - g_i``
        seen at a point where ``f``'s top class is ``i`` (``-inf`` if never).
    best_points : ``{(i, +1 | -1): point}`` mode ``"max"``: where ``f_i - g_i``
        was largest (``+1``) / smallest (``-1``); mode ``"top1"``:
        ``{(i, j): point}`` where ``g_j - g_i`` was largest with ``f``'s top at ``i``.
    best_values : the value of each entry of ``best_points`` (signed difference
        or margin).
    evaluated : number of points evaluated (both networks).
    stages : per stage, points evaluated and best quantity after it.
    seed, time : the seed, and wall-clock seconds.
    stopped : ``"budget"`` if the budget cut the campaign short, else ``None``.
    """

    mode: str
    max_diff: float
    point: np.ndarray | None
    per_output: list
    best_points: dict = field(default_factory=dict)
    best_values: dict = field(default_factory=dict)
    evaluated: int = 0
    stages: dict = field(default_factory=dict)
    seed: int = 0
    time: float = 0.0
    stopped: str | None = None

    @property
    def found(self) -> bool:
        """True if some point showed a difference (max: ``> 0``; top1: a disagreement)."""
        return self.max_diff > 0.0

    def to_json(self) -> dict:
        """JSON-safe; equal for equal seeds except the ``"time"`` field."""
        def num(v):
            v = float(v)
            return v if math.isfinite(v) else None

        return {
            "mode": self.mode,
            "max_diff": num(self.max_diff),
            "point": None if self.point is None else [float(v) for v in self.point],
            "per_output": [num(v) for v in self.per_output],
            "best": [{"key": [int(k[0]), int(k[1])], "value": num(self.best_values[k]),
                      "point": [float(v) for v in p]}
                     for k, p in sorted(self.best_points.items())],
            "evaluated": int(self.evaluated),
            "stages": {k: dict(v) for k, v in self.stages.items()},
            "seed": int(self.seed),
            "stopped": self.stopped,
            "time": float(self.time),
        }


# -- the quantity -------------------------------------------------------------

def score(yf: np.ndarray, yg: np.ndarray, mode: str) -> np.ndarray:
    """The per-point quantity of ``mode`` from outputs ``yf``, ``yg`` (B, m)."""
    if mode == "max":
        return np.max(np.abs(yf - yg), axis=1) if yf.shape[1] else np.zeros(len(yf))
    a = np.argmax(yf, axis=1)
    return np.max(yg, axis=1) - yg[np.arange(len(yg)), a]


class _Tracker:
    """Evaluates batches of points and keeps the bests (the campaign's memory)."""

    def __init__(self, f: Graph, g: Graph, box: Box, mode: str, deadline: float | None):
        self.f, self.g, self.box, self.mode = f, g, box, mode
        self.m = f.output_size
        self.deadline = deadline
        self.evaluated = 0
        self.best = -math.inf
        self.best_point = None
        self.per_output = np.full(self.m, -math.inf if mode == "top1" else 0.0)
        if mode == "top1":
            self.keys = [(i, j) for i in range(self.m) for j in range(self.m) if i != j]
        else:
            self.keys = [(i, s) for i in range(self.m) for s in (1, -1)]
        self.best_values = {k: -math.inf for k in self.keys}
        self.best_points: dict = {}
        self.pool: list = []  # (points, key values) kept for choosing gradient starts
        self.stopped = None

    def out_of_time(self) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.stopped = "budget"
            return True
        return False

    def key_values(self, yf, yg) -> np.ndarray:
        """(B, len(keys)): the signed value of each key at each point."""
        if self.mode == "max":
            d = yf - yg
            return np.stack([s * d[:, i] for i, s in self.keys], axis=1) if self.keys \
                else np.zeros((len(d), 0))
        a = np.argmax(yf, axis=1)
        cols = []
        for i, j in self.keys:
            v = yg[:, j] - yg[:, i]
            cols.append(np.where(a == i, v, -math.inf))
        return np.stack(cols, axis=1) if cols else np.zeros((len(yf), 0))

    def add(self, pts) -> np.ndarray:
        """Evaluate ``pts`` (clipped into the box); returns their quantities."""
        pts = self.box.clip(np.atleast_2d(np.asarray(pts, dtype=np.float64)))
        if len(pts) == 0:
            return np.zeros(0)
        yf, yg = evaluate(self.f, pts), evaluate(self.g, pts)
        q = score(yf, yg, self.mode)
        q = np.where(np.isnan(q), -math.inf, q)
        self.evaluated += len(pts)
        k = int(np.argmax(q))
        if q[k] > self.best:
            self.best, self.best_point = float(q[k]), pts[k].copy()
        kv = self.key_values(yf, yg)
        for c, key in enumerate(self.keys):
            r = int(np.argmax(kv[:, c]))
            if kv[r, c] > self.best_values[key]:
                self.best_values[key] = float(kv[r, c])
                self.best_points[key] = pts[r].copy()
        if self.mode == "max":
            self.per_output = np.maximum(self.per_output, np.max(np.abs(yf - yg), axis=0))
        else:
            a = np.argmax(yf, axis=1)
            for i in range(self.m):
                sel = a == i
                if np.any(sel):
                    self.per_output[i] = max(self.per_output[i], float(np.max(q[sel])))
        self.pool.append((pts, kv))
        return q

    def starts(self, key_index: int, k: int) -> np.ndarray:
        """The ``k`` best points seen for one key (distinct), best first."""
        pts = np.vstack([p for p, _ in self.pool])
        vals = np.concatenate([v[:, key_index] for _, v in self.pool])
        order = np.argsort(-vals, kind="stable")
        out, seen = [], set()
        for r in order:
            t = pts[r].tobytes()
            if t in seen:
                continue
            seen.add(t)
            out.append(pts[r])
            if len(out) == k:
                break
        return np.array(out)

    def top_points(self, k: int) -> np.ndarray:
        """The ``k`` points with the largest quantity seen (distinct), best first."""
        if not self.pool:
            return np.zeros((0, self.box.size))
        pts = np.vstack([p for p, _ in self.pool])
        kv = np.vstack([v for _, v in self.pool])
        q = np.max(kv, axis=1) if kv.shape[1] else np.zeros(len(kv))
        out, seen = [], set()
        for r in np.argsort(-q, kind="stable"):
            t = pts[r].tobytes()
            if t not in seen:
                seen.add(t)
                out.append(pts[r])
                if len(out) == k:
                    break
        return np.array(out)

    def compact(self, keep: int = 64) -> None:
        """Keep only the best ``keep`` points per key in the pool (memory)."""
        if not self.pool:
            return
        pts = np.vstack([p for p, _ in self.pool])
        kv = np.vstack([v for _, v in self.pool])
        rows = set()
        for c in range(kv.shape[1]):
            rows.update(np.argsort(-kv[:, c], kind="stable")[:keep].tolist())
        q = np.max(kv, axis=1) if kv.shape[1] else np.zeros(len(kv))
        rows.update(np.argsort(-q, kind="stable")[:keep].tolist())
        rows = sorted(rows)
        self.pool = [(pts[rows], kv[rows])]


# -- gradients ------------------------------------------------------------------

def _backprop(graph: Graph, vals: dict, seeds: np.ndarray) -> np.ndarray:
    """d (seeds . output) / d x for each point, given the forward values ``vals``."""
    return backprop(graph, vals, seeds)


def output_gradients(graph: Graph, x, seeds) -> tuple[np.ndarray, np.ndarray]:
    """Outputs at ``x`` (B, n) and the gradient of ``seeds[b] . output`` wrt ``x[b]``.

    A generalisation of the analysis' per-neuron gradients to any linear
    combination of the outputs; ReLU derivatives at exactly 0 are taken as 0.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    vals = evaluate_all(graph, x)
    return vals[graph.output_name], _backprop(graph, vals, np.asarray(seeds, dtype=np.float64))


def _objective_and_seeds(tr: _Tracker, keys, vf, vg):
    """Per row: the objective of its key and the output seeds for f and g."""
    yf, yg = vf[tr.f.output_name], vg[tr.g.output_name]
    B, m = yf.shape
    sf, sg = np.zeros((B, m)), np.zeros((B, m))
    obj = np.zeros(B)
    for b, key in enumerate(keys):
        if tr.mode == "max":
            i, s = key
            obj[b] = s * (yf[b, i] - yg[b, i])
            sf[b, i], sg[b, i] = s, -s
        else:
            i, j = key
            others = [k for k in range(m) if k != i]
            kstar = others[int(np.argmax(yf[b, others]))]
            keep_top = yf[b, i] - yf[b, kstar]   # > 0: f's top class is i
            push = yg[b, j] - yg[b, i]            # > 0: g prefers j to i
            obj[b] = min(keep_top, push)
            if keep_top < push:
                sf[b, i], sf[b, kstar] = 1.0, -1.0
            else:
                sg[b, j], sg[b, i] = 1.0, -1.0
    return obj, sf, sg


def _gradient_stage(tr: _Tracker, rng: np.random.Generator, steps: int, starts_per_key: int):
    if steps <= 0 or not tr.keys:
        return
    keys, starts = [], []
    for c, key in enumerate(tr.keys):
        pts = tr.starts(c, starts_per_key)
        for p in pts:
            keys.append(key)
            starts.append(p)
        if tr.best_point is not None:  # also the overall best point, for every key
            keys.append(key)
            starts.append(tr.best_point)
    if not starts:
        return
    box = tr.box
    width = box.upper - box.lower
    x = box.clip(np.array(starts))
    for step in range(steps):
        if tr.out_of_time():
            return
        vf = evaluate_all(tr.f, x)
        vg = evaluate_all(tr.g, x)
        _, sf, sg = _objective_and_seeds(tr, keys, vf, vg)
        grad = _backprop(tr.f, vf, sf) + _backprop(tr.g, vg, sg)
        direction = np.sign(grad)
        direction = np.where(direction == 0, rng.choice([-1.0, 1.0], size=direction.shape) * 0.25,
                             direction)
        lr = 0.5 * (1.0 - step / steps) ** 2 + 1e-3
        x = box.clip(x + lr * width * direction)
        tr.add(x)


# -- point generators -------------------------------------------------------------

def _corners(box: Box, rng, k: int) -> np.ndarray:
    n = box.size
    if n <= 12 and 2 ** n <= MAX_ALL_CORNERS:
        bits = np.array(list(itertools.product((0.0, 1.0), repeat=n)))
    else:
        bits = rng.integers(0, 2, size=(k, n)).astype(np.float64)
    return box.lower + bits * (box.upper - box.lower)


def _edges(box: Box, rng, k: int) -> np.ndarray:
    n = box.size
    bits = rng.integers(0, 2, size=(k, n)).astype(np.float64)
    pts = box.lower + bits * (box.upper - box.lower)
    free = rng.integers(0, n, size=k)
    t = rng.random(k)
    pts[np.arange(k), free] = box.lower[free] + t * (box.upper[free] - box.lower[free])
    return pts


def _preacts(graph: Graph, vals: dict) -> list:
    """(pre-activation node, (B, size) values) of every ReLU of ``graph``."""
    return [(graph.args(r)[0], vals[graph.args(r)[0]]) for r, _ in graph.relus()]


def _boundary_points(tr: _Tracker, rng, k: int, iters: int = 32) -> np.ndarray:
    """Points on both sides of ReLU boundaries of f and g.

    For ``k`` segments (between good points and random points of the box) we
    pick a neuron of either network whose pre-activation has opposite signs at
    the ends and bisect the segment to its sign change.
    """
    box = tr.box
    nets = [n for n in (tr.f, tr.g) if n.relus()]
    if not nets or k <= 0:
        return np.zeros((0, box.size))
    good = tr.top_points(min(k, 16))
    a = np.vstack([good[rng.integers(0, len(good), size=k // 2)] if len(good) else
                   box.sample(k // 2, rng), box.sample(k - k // 2, rng)])
    b = box.sample(k, rng)
    # choose, per segment, one sign-changing neuron (net index, node, row)
    choice = [None] * k
    cands_per_seg = [[] for _ in range(k)]
    for ni, net in enumerate(nets):
        va, vb = evaluate_all(net, a), evaluate_all(net, b)
        for node, za in _preacts(net, va):
            zb = vb[node]
            change = (za > 0) != (zb > 0)
            for s, r in zip(*np.nonzero(change)):
                cands_per_seg[s].append((ni, node, int(r)))
    for s in range(k):
        c = cands_per_seg[s]
        if c:
            choice[s] = c[int(rng.integers(0, len(c)))]
    segs = [s for s in range(k) if choice[s] is not None]
    if not segs:
        return np.zeros((0, box.size))
    a, b = a[segs], b[segs]
    choice = [choice[s] for s in segs]
    lo_t, hi_t = np.zeros(len(segs)), np.ones(len(segs))

    def side(t):
        pts = a + t[:, None] * (b - a)
        out = np.zeros(len(segs), dtype=bool)
        vals = [evaluate_all(net, pts) for net in nets]
        for s, (ni, node, r) in enumerate(choice):
            out[s] = vals[ni][node][s, r] > 0
        return out

    at_a = side(lo_t)
    for _ in range(iters):
        if tr.out_of_time():
            break
        mid = (lo_t + hi_t) / 2
        same = side(mid) == at_a
        lo_t = np.where(same, mid, lo_t)
        hi_t = np.where(same, hi_t, mid)
    p_lo = a + lo_t[:, None] * (b - a)
    p_hi = a + hi_t[:, None] * (b - a)
    return np.vstack([p_lo, p_hi])


class _OutOfTime(BaseException):
    """Ends the hypothesis search at once (hypothesis would replay an ``Exception``
    as a failing example; a ``BaseException`` passes straight through)."""


def _hypothesis_stage(tr: _Tracker, seed: int, examples: int, stop: float | None) -> str:
    """A seeded, targeted hypothesis search until ``stop``; returns what happened."""
    import hypothesis
    from hypothesis import HealthCheck, Phase, given, settings, target

    from ..sampling import points_in
    if examples <= 0:
        return "off"
    if hypothesis.currently_in_test_context():
        # hypothesis refuses a nested @given (health check of the outer test)
        return "skipped: called inside a hypothesis test"

    @hypothesis.seed(int(seed))
    @settings(max_examples=int(examples), database=None, deadline=None, derandomize=False,
              phases=[Phase.generate, Phase.target], suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False, print_blob=False)
    @given(points_in(tr.box))
    def search(x):
        if tr.out_of_time() or (stop is not None and time.monotonic() > stop):
            raise _OutOfTime
        q = tr.add(x[None, :])
        target(float(q[0]) if math.isfinite(q[0]) else -1e300, label="difference")

    try:
        search()
    except _OutOfTime:
        return "stopped: time share spent"
    return "ran"


# -- the campaign -------------------------------------------------------------------

def falsify(f: Graph, g: Graph, box: Box, *, seed: int = 0, points: int = 10000, extra=None,
            gradient_steps: int = 40, hypothesis_examples: int = 300,
            budget: float | None = None, mode: str = "max",
            boundary_segments: int = 200, starts_per_key: int = 2) -> FuzzResult:
    """Look for inputs in ``box`` where ``f`` and ``g`` differ.

    Parameters
    ----------
    f, g : networks with equal input and output sizes (else :class:`DataError`).
    box : the input box (its size must be the networks' input size).
    seed : seeds numpy and hypothesis: equal seeds give equal results (unless
        ``budget`` stops the campaign).
    points : size of the sampled stages (corners, edges, uniform).
    extra : more points to try (clipped into the box), e.g. witnesses.
    gradient_steps : projected sign-gradient steps per trajectory (0: off).
    hypothesis_examples : examples of the targeted hypothesis search (0: off).
    budget : seconds; the campaign stops between batches when spent.
    mode : ``"max"`` (largest ``|f_i - g_i|``) or ``"top1"`` (argmax disagreement).
    boundary_segments : segments bisected to ReLU boundaries.
    starts_per_key : gradient trajectories per (output, sign) or class pair.

    Returns
    -------
    FuzzResult
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    check_sizes(f, g)
    box.check_size(f.input_size)
    start = time.monotonic()
    deadline = None if budget is None else start + float(budget)
    rng = np.random.default_rng(seed)
    tr = _Tracker(f, g, box, mode, deadline)
    stages: dict = {}

    def stage(name, pts_fn):
        if tr.out_of_time():
            return
        before = tr.evaluated
        pts = pts_fn()
        if pts is not None and len(pts):
            tr.add(pts)
        stages[name] = {"points": tr.evaluated - before, "best": _num(tr.best)}

    points = max(int(points), 0)
    n_corners = min(points // 4, MAX_ALL_CORNERS)
    stage("centre", lambda: ((box.lower + box.upper) / 2)[None, :])
    stage("corners", lambda: _corners(box, rng, n_corners) if points else None)
    stage("edges", lambda: _edges(box, rng, points // 4) if points // 4 else None)
    # the uniform stage fills up to ``points`` (fewer corners than asked when all are enumerated)
    n_uniform = max(points - tr.evaluated, 0)
    stage("uniform", lambda: box.sample(n_uniform, rng) if n_uniform else None)
    if extra is not None:
        ex = np.asarray(extra, dtype=np.float64).reshape(-1, box.size)
        ex = ex[np.all(np.isfinite(ex), axis=1)]
        stage("extra", lambda: ex)
    tr.compact()
    stage("boundary", lambda: _boundary_points(tr, rng, boundary_segments))
    if not tr.out_of_time():
        before = tr.evaluated
        # at most a third of what is left: drawing a point costs ~n draws, and the
        # gradient stage after it matters more in high dimensions
        stop = None if deadline is None else time.monotonic() + (deadline - time.monotonic()) / 3
        how = _hypothesis_stage(tr, seed, hypothesis_examples, stop)
        stages["hypothesis"] = {"points": tr.evaluated - before, "best": _num(tr.best), "run": how}
    tr.compact()
    if not tr.out_of_time():
        before = tr.evaluated
        _gradient_stage(tr, rng, gradient_steps, starts_per_key)
        stages["gradient"] = {"points": tr.evaluated - before, "best": _num(tr.best)}
    tr.out_of_time()
    best = tr.best if math.isfinite(tr.best) else 0.0
    if mode == "max":
        best = max(best, 0.0)
    return FuzzResult(mode=mode, max_diff=float(best), point=tr.best_point,
                      per_output=[float(v) for v in tr.per_output],
                      best_points=dict(tr.best_points),
                      best_values={k: v for k, v in tr.best_values.items() if k in tr.best_points},
                      evaluated=tr.evaluated, stages=stages, seed=int(seed),
                      time=time.monotonic() - start, stopped=tr.stopped)


def _num(v):
    v = float(v)
    return v if math.isfinite(v) else None
