"""``check`` over a union of boxes: each box in turn, one combined verdict.

Two networks agree on a union exactly when they agree on every box: the
verdict is ``equivalent`` only if every box is proven equivalent (the weakest
proof level is reported), ``counterexample`` as soon as one box has a replayed
counterexample (the remaining boxes are not checked), else ``unknown``.  The
time limit is shared: each box gets what is left divided by the boxes still to
check.
"""
from __future__ import annotations

import time

from ..domain import Domain
from .equivalence import CheckResult, check_equivalence

__all__ = ["check_union"]

#: weakest first: an "equivalent" over the union is only as strong as its weakest box
_PROOF_ORDER = ("milp-float", "sound-float", "exact")


def check_union(f, g, domain: Domain, *, time_limit: float = 60.0, progress=None, **options) -> CheckResult:
    """:func:`~.equivalence.check_equivalence` on every box of ``domain``, combined.

    ``progress``: an object with ``update(n, **info)`` (:func:`leo_verify.progress.phase`), told of
    each finished stage (its outcome, e.g. the current bound) and of each box done."""
    if progress is None:
        return _check_union(f, g, domain, time_limit=time_limit, progress=None, **options)
    from .equivalence.context import STAGE_LISTENER
    token = STAGE_LISTENER.set(lambda e: progress.update(0, stage=e["stage"], outcome=str(e["outcome"])[:60]))
    try:
        return _check_union(f, g, domain, time_limit=time_limit, progress=progress, **options)
    finally:
        STAGE_LISTENER.reset(token)


def _check_union(f, g, domain: Domain, *, time_limit: float, progress, **options) -> CheckResult:
    if len(domain.boxes) == 1:
        r = check_equivalence(f, g, domain.boxes[0], time_limit=time_limit, **options)
        if progress is not None:
            progress.update(1, verdict=r.verdict, bound=f"{r.best_bound:.3g}" if r.best_bound is not None else "-")
        return r
    t0 = time.monotonic()
    results = []
    for k, box in enumerate(domain.boxes):
        left = max(0.1, time_limit - (time.monotonic() - t0)) / (len(domain.boxes) - k)
        r = check_equivalence(f, g, box, time_limit=left, **options)
        for s in r.stages:
            s.setdefault("box", k)
        results.append(r)
        if progress is not None:
            progress.update(1, box=k, verdict=r.verdict)
        if r.verdict == "counterexample":
            break
    stages = [s for r in results for s in r.stages]
    worst = max((r.max_diff_seen for r in results), default=0.0)
    bounds = [r.best_bound for r in results]
    bound = None if any(b is None for b in bounds) or len(results) < len(domain.boxes) else max(bounds)
    first = results[0]
    common = dict(mode=first.mode, epsilon=first.epsilon, max_diff_seen=worst, best_bound=bound,
                  stages=stages, discarded=[d for r in results for d in r.discarded],
                  time=round(time.monotonic() - t0, 3), solver=first.solver, seed=first.seed)
    cx = next((k for k, r in enumerate(results) if r.verdict == "counterexample"), None)
    if cx is not None:
        r = results[cx]
        return CheckResult("counterexample", method=r.method, proof=r.proof, counterexample=r.counterexample,
                           reason=f"box {cx} of {len(domain.boxes)}: {r.reason}", **common)
    if all(r.verdict == "equivalent" for r in results):
        proof = min((r.proof for r in results), key=lambda p: _PROOF_ORDER.index(p) if p in _PROOF_ORDER else -1)
        methods = sorted({r.method for r in results if r.method})
        certs = [r.certificate for r in results]
        cert = None
        if all(c is not None and (c["mode"], c["epsilon"]) == (certs[0]["mode"], certs[0]["epsilon"])
               for c in certs):
            cert = {**certs[0], "regions": [reg for c in certs for reg in c["regions"]]}
        return CheckResult("equivalent", method="+".join(methods), proof=proof, certificate=cert,
                           reason=f"every one of the {len(domain.boxes)} boxes is proven equivalent "
                                  f"(weakest proof: {proof})", **common)
    open_ = [k for k, r in enumerate(results) if r.verdict != "equivalent"]
    return CheckResult("unknown", reason=f"box {open_[0]} of {len(domain.boxes)} is not decided: "
                                         f"{results[open_[0]].reason}", **common)
