"""Stage ``diff``: differential bounds with input splitting, every leaf re-proved exactly.

The search mirrors the kernel's forward (:mod:`leo_verify.kernel.diff`) and
backward (:mod:`leo_verify.kernel.diff_back`) differential bounds in float64
(:mod:`.diff_float`: fast, not sound) to decide where to split; a leaf it
believes proven is then re-proved by the kernel in exact arithmetic
(:func:`leo_verify.kernel.diff_tree.prove_leaves`), and only those leaves enter
the proof.  A leaf the exact check rejects goes back into the
queue and is split further.  The result is a split tree that
:func:`leo_verify.kernel.diff_tree.check_tree` re-checks from scratch (``recheck``).

Splitting: best-first on the leaves' float *excess* (how far the bound is from
proving), cutting the input dimension with the largest *smear* (width times
the absolute coefficient of that input in the open output bounds) at its
midpoint (a dyadic rational of two floats: exact).  Networks with many inputs
get a single root check (splitting 784 dimensions does not converge).

Falsification on the way: every leaf evaluates its centre and six random points
(``top1-confidence``: a point is a candidate only where ``f``'s softmax exceeds
delta at a class ``g`` does not pick); in ``top1`` mode a
leaf where ``f``'s argmax changes is *bisected* along the segment between two
points with different argmaxes of ``f``, where ``g``'s decision boundary, if it
is not exactly ``f``'s, leaves points whose argmaxes differ.  Candidates are
replayed exactly by the check (:meth:`_Ctx.candidate`).

The stage stops early when it *stalls* (no leaf proven for a while: a claim
that is false, or too close to call, keeps splitting without end), leaving the
time to the other provers.  It is *anytime*: the share of the box (by volume) settled so far and the
open leaves are reported to the progress display.
"""
from __future__ import annotations

import heapq
import time
from fractions import Fraction

import numpy as np

from ...kernel import diff as kdiff
from ...kernel.exact import fraction_str
from ...semantics import evaluate
from .context import _Ctx, _Decided, _tell
from .diff_float import FloatNets, float_back_bounds, float_bounds, rng_rows
from .exact_leaves import ExactQueue

__all__ = ["diff_stage", "MAX_SPLIT_INPUTS"]

#: input splitting only for networks with at most this many inputs
MAX_SPLIT_INPUTS = 16
#: past its share, the search continues (once) for EXTEND_SHARE of the time left when at least
#: EXTEND_SETTLED of the box (by volume) is proven
EXTEND_SETTLED = 0.5
EXTEND_SHARE = 0.85
#: the search stops when no leaf was proven (or believed proven by the float search, and queued
#: for its exact re-proof) for max(STALL_SECONDS, STALL_SHARE * its time so far)
STALL_SECONDS = 2.0
STALL_SHARE = 0.5


def _excess(b: dict, lo, hi, mode: str, eps: float) -> tuple[float, np.ndarray]:
    """How far the float bounds are from proving (<= 0: believed proven), and the smear weights."""
    if mode in ("epsilon", "exact"):
        e = 0.0 if mode == "exact" else eps
        top, bot = rng_rows(b["Ud"], lo, hi, True), rng_rows(b["Ld"], lo, hi, False)
        # no float margin: a bound that meets epsilon exactly (a dyadic difference, identical parts
        # in exact mode) is a proof in the kernel's exact arithmetic; a leaf the float search is too
        # optimistic about comes back from the kernel and is split
        over = np.maximum(top - e, -e - bot)
        rows = over > 0
        sens = np.abs(b["Ud"][rows, :-1]).sum(0) + np.abs(b["Ld"][rows, :-1]).sum(0)
        return float(over.max()), sens
    lf, uf, lg, ug, ld, ud = (b[k] for k in ("Lf", "Uf", "Lg", "Ug", "Ld", "Ud"))
    if rng_rows(ud, lo, hi, True).max() <= 0 and rng_rows(ld, lo, hi, False).min() >= 0:
        return -1.0, np.zeros(lf.shape[1] - 1)  # no difference at all on the leaf
    if mode == "top1-confidence":
        return _confidence_excess(b, lo, hi, eps)
    best, sens = None, None
    for c in range(lf.shape[0]):
        worst, s = -np.inf, np.zeros(lf.shape[1] - 1)
        for j in range(lf.shape[0]):
            if j == c:
                continue
            a = lf[c] - uf[j]
            own, via = lg[c] - ug[j], a - ud[c] + ld[j]
            va = rng_rows(a[None], lo, hi, False)[0]
            vb = max(rng_rows(own[None], lo, hi, False)[0], rng_rows(via[None], lo, hi, False)[0])
            v = -min(va, vb) + 1e-12
            if v > worst:
                worst = v
            if v > 0:
                s += np.abs(a[:-1]) + np.abs(via[:-1])
        if best is None or worst < best:
            best, sens = worst, s
    return float(best), sens


def _confidence_excess(b: dict, lo, hi, delta: float) -> tuple[float, np.ndarray]:
    """Float mirror of the kernel's delta-top-1 leaf rule: every class is either below the
    confidence delta in f or wins strictly in g."""
    lf, uf, lg, ug, ld, ud = (b[k] for k in ("Lf", "Uf", "Lg", "Ug", "Ld", "Ud"))
    m = lf.shape[0]
    need = (1.0 / delta - 1.0) if 0 < delta < 1 else (-np.inf if delta >= 1 else np.inf)
    worst, sens = -np.inf, np.zeros(lf.shape[1] - 1)
    for c in range(m):
        tot, rows = 0.0, []
        for j in range(m):
            if j != c:
                e = lf[j] - uf[c]
                t = rng_rows(e[None], lo, hi, False)[0]
                tot += max(0.0, 1 + t / 8) ** 8
                rows.append(e)
        if tot >= need * (1 + 1e-9):
            continue
        win = np.inf
        for j in range(m):
            if j == c:
                continue
            own, via = lg[c] - ug[j], lf[c] - uf[j] - ud[c] + ld[j]
            v = max(rng_rows(own[None], lo, hi, False)[0], rng_rows(via[None], lo, hi, False)[0])
            if v < win:
                win = v
            if v <= 0:
                sens += np.abs(via[:-1])
        if win > 1e-12:
            continue
        for e in rows:
            sens += np.abs(e[:-1])
        worst = max(worst, -win + 1e-12)
    return (float(worst) if worst > -np.inf else -1.0), sens


# -- the search ----------------------------------------------------------------------------

class _Node:
    __slots__ = ("lo", "hi", "dim", "at", "kids", "proved", "volume", "forward")

    def __init__(self, lo: list, hi: list, volume: float):
        self.lo, self.hi = lo, hi  # exact Fractions
        self.dim = self.at = None
        self.kids = None
        self.proved = False
        self.volume = volume
        self.forward = True  # the float search expects the forward bounds to prove this leaf


def _tree_json(node: _Node) -> dict:
    if node.kids is None:
        return {}
    return {"dim": node.dim, "at": fraction_str(node.at),
            "children": [_tree_json(node.kids[0]), _tree_json(node.kids[1])]}


def _bisect_top1(ctx: _Ctx, p: np.ndarray, q: np.ndarray, steps: int = 40) -> None:
    """Points on [p, q] where argmax f changes: bisect to f's boundary, try g there (replayed)."""
    af = int(np.argmax(evaluate(ctx.f, p[None])[0]))
    for _ in range(steps):
        m = 0.5 * (p + q)
        fm = evaluate(ctx.f, m[None])[0]
        gm = evaluate(ctx.g, m[None])[0]
        if int(np.argmax(fm)) != int(np.argmax(gm)):
            ctx.candidate(m, "diff")
        if int(np.argmax(fm)) == af:
            p = m
        else:
            q = m
    for x in (p, q):
        if int(np.argmax(evaluate(ctx.f, x[None])[0])) != int(np.argmax(evaluate(ctx.g, x[None])[0])):
            ctx.candidate(x, "diff")


def _probe(ctx: _Ctx, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> None:
    """Evaluate a few points of the leaf; replay the float candidates."""
    pts = np.vstack([0.5 * (lo + hi), rng.uniform(lo, hi, size=(6, lo.size))])
    fo, go = evaluate(ctx.f, pts), evaluate(ctx.g, pts)
    if ctx.mode in ("top1", "top1-confidence"):
        af, ag = fo.argmax(1), go.argmax(1)
        if ctx.mode == "top1-confidence":
            # a violation needs a class A is confident about (softmax > delta) that B does not pick;
            # near A's decision boundary A is not confident, so there is nothing to bisect to
            p = np.exp(fo - fo.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            bad = ((p > ctx.epsilon) & (np.arange(fo.shape[1])[None, :] != ag[:, None])).any(1)
        else:
            bad = af != ag
        for i in np.flatnonzero(bad)[:2]:
            ctx.candidate(pts[i], "diff")
        if ctx.mode == "top1" and len(set(af.tolist())) > 1:
            i = int(np.flatnonzero(af != af[0])[0])
            _bisect_top1(ctx, pts[0].copy(), pts[i].copy())
        return
    d = np.abs(fo - go).max(1)
    ctx.max_seen = max(ctx.max_seen, float(d.max()))
    thr = 0.0 if ctx.mode == "exact" else ctx.epsilon
    for i in np.argsort(-d)[:2]:
        if d[i] > thr:
            ctx.candidate(pts[i], "diff")


def diff_stage(share: float = 0.6, *, workers: int = 1):
    """The stage function: runs for at most ``share`` of the time left (see the module docstring);
    ``workers > 1``: exact re-proofs on that many processes (:mod:`.exact_leaves`)."""
    def run(ctx: _Ctx, entry: dict):
        al = kdiff.align(ctx.f, ctx.g)
        if isinstance(al, str):
            return f"not applicable: {al}"
        queue = ExactQueue(al, ctx.mode, Fraction(ctx.epsilon), workers=workers)
        try:
            return _search(ctx, entry, al, queue, share)
        finally:
            queue.close()
    return run


def _search(ctx: _Ctx, entry: dict, al, queue: ExactQueue, share: float):
    deadline = time.monotonic() + share * ctx.left()
    nets = FloatNets(al)
    eps = Fraction(ctx.epsilon)
    split = ctx.box.size <= MAX_SPLIT_INPUTS
    rng = np.random.default_rng(ctx.seed)
    lo0 = [Fraction(float(v)) for v in ctx.box.lower]
    hi0 = [Fraction(float(v)) for v in ctx.box.upper]
    root = _Node(lo0, hi0, 1.0)
    heap: list = []
    st = {"tick": 0, "settled": 0.0, "leaves": 0, "last_tell": time.monotonic()}

    def push(node: _Node, *, force_split: bool = False) -> None:
        lo, hi = np.array([float(v) for v in node.lo]), np.array([float(v) for v in node.hi])
        ex, sens = _excess(float_bounds(nets, lo, hi), lo, hi, ctx.mode, ctx.epsilon)
        node.forward = ex <= 0
        if ex > 0:  # the forward bounds fall short: the backward ones (the kernel tries both)
            ex2, sens2 = _excess(float_back_bounds(nets, lo, hi), lo, hi, ctx.mode, ctx.epsilon)
            if ex2 < ex:
                ex, sens = ex2, sens2
        if force_split:
            ex = max(ex, 1.0)  # the float search was too optimistic here: split it
        st["tick"] += 1
        heapq.heappush(heap, (0 if ex <= 0 else 1, -node.volume, st["tick"], node, ex, sens))

    def take(results) -> None:
        for node, ok in results:
            if ok:
                node.proved = True
                st["last_proof"] = time.monotonic()
                st["settled"] += node.volume
                st["leaves"] += 1
            else:
                push(node, force_split=True)
        if time.monotonic() - st["last_tell"] > 1.0:
            st["last_tell"] = time.monotonic()
            _tell({"stage": "diff", "outcome": f"{100 * st['settled']:.1f} % of the box proven, "
                                                f"{len(heap)} open", "time": 0.0, "running": True})

    push(root)
    start = st["last_proof"] = time.monotonic()
    stalled = extended = stuck = False
    while (heap or queue.busy()) and ctx.left() > 0:
        now = time.monotonic()
        if now >= deadline:
            # anytime and fair: past its share, the search goes on only while it is more than
            # half way through the box and still proving leaves (EXTEND_SHARE of what is left);
            # when nothing is left to split and only exact re-proofs are pending, they may finish
            # within the overall limit
            if not heap and queue.busy() and st["settled"] >= EXTEND_SETTLED and ctx.left() > 1.0:
                take(queue.poll(block=True, timeout=max(0.01, ctx.left() - 1.0)))
                continue
            if extended or st["settled"] < EXTEND_SETTLED:
                break
            extended = True
            deadline = now + EXTEND_SHARE * ctx.left()
        if now - st["last_proof"] > max(STALL_SECONDS, STALL_SHARE * (now - start)):
            stalled = True  # no leaf proven for a while: leave the time to the other provers
            break
        take(queue.poll())
        if not heap:
            take(queue.poll(block=True, timeout=max(0.01, min(deadline, ctx.deadline) - now)))
            continue
        _, _, _, node, ex, sens = heapq.heappop(heap)
        if ex <= 0:
            queue.add(node)
            st["last_proof"] = time.monotonic()  # progress: the float search believes this leaf proven
            continue
        lo = np.array([float(v) for v in node.lo])
        hi = np.array([float(v) for v in node.hi])
        _probe(ctx, lo, hi, rng)
        if not split:
            stuck = True
            break
        width = hi - lo
        score = width * (sens + 1e-12) if sens is not None and sens.size else width
        dim = int(np.argmax(score))
        at = (node.lo[dim] + node.hi[dim]) / 2
        if not node.lo[dim] < at < node.hi[dim]:
            stuck = True
            break  # cannot split further (the box is a point in that dimension)
        node.dim, node.at = dim, at
        left_hi, right_lo = list(node.hi), list(node.lo)
        left_hi[dim] = at
        right_lo[dim] = at
        node.kids = (_Node(node.lo, left_hi, node.volume / 2), _Node(right_lo, node.hi, node.volume / 2))
        for kid in node.kids:
            push(kid)
    settled, leaves = st["settled"], st["leaves"]
    entry.update(leaves=leaves, settled=round(settled, 6), exact_seconds=round(queue.seconds, 3),
                 open=len(heap), stalled=stalled, workers=queue.workers if queue.pool is not None else 1)
    if not stuck and not heap and not queue.busy() and _all_proved(root):
        tree = _tree_json(root)
        raise _Decided(ctx.result(
            "equivalent", method="diff", proof="exact",
            reason=(f"differential bounds (symbolic, input splitting) prove the {ctx.mode} claim on "
                    f"all {leaves} leaves of a split tree, each re-proved in exact arithmetic"),
            certificate={"mode": ctx.mode, "epsilon": fraction_str(eps if ctx.mode == "epsilon" else Fraction(0)),
                         **({"delta": fraction_str(eps)} if ctx.mode == "top1-confidence" else {}),
                         "regions": [
                {"lower": [fraction_str(v) for v in lo0], "upper": [fraction_str(v) for v in hi0],
                 "method": "diff-tree", "leaves": leaves, "tree": tree}]}))
    return (f"{100 * settled:.1f} % of the box proven ({leaves} exact leaves), {len(heap)} open"
            + (", leaves awaiting their exact re-proof at the time limit" if queue.busy() else "")
            + (" (stalled: no leaf proven lately)" if stalled else "")
            + ("" if split else f"; no input splitting above {MAX_SPLIT_INPUTS} inputs"))


def _all_proved(node: _Node) -> bool:
    stack = [node]
    while stack:
        n = stack.pop()
        if n.kids is None:
            if not n.proved:
                return False
        else:
            stack.extend(n.kids)
    return True
