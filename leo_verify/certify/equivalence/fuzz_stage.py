"""Stages: the falsification campaign (:mod:`leo_verify.certify.fuzz`) and the hook provers.
"""
from __future__ import annotations

from ..fuzz import falsify
from .context import _Ctx, _Decided
from .result import VERDICTS


#: a hook prover is not started with less time than this left
HOOK_MIN_SECONDS = 2.0

#: the falsification campaign's share of the whole time limit (it stops early on a counterexample)
FUZZ_SHARE = 0.1


# -- stage: fuzz --------------------------------------------------------------------

def _fuzz_stage(options: dict):
    def run(ctx: _Ctx, entry: dict):
        kw = dict(seed=ctx.seed, budget=max(0.05, min(ctx.left(), FUZZ_SHARE * (ctx.deadline - ctx.start))))
        kw.update(options)
        fmode = "top1" if ctx.mode in ("top1", "top1-confidence") else "max"
        res = falsify(ctx.f, ctx.g, ctx.box, mode=fmode, **kw)
        ctx.fuzz = res
        ctx.max_seen = max(ctx.max_seen, res.max_diff)
        entry.update(max_diff=res.max_diff, evaluated=res.evaluated, stopped=res.stopped)
        thr = ctx.epsilon if ctx.mode == "epsilon" else 0.0
        cands = []
        if res.point is not None and res.max_diff > thr:
            cands.append((res.max_diff, res.point))
        for key, v in res.best_values.items():
            if v > thr:
                cands.append((v, res.best_points[key]))
        cands.sort(key=lambda c: -c[0])
        for _, p in cands[:8]:
            ctx.candidate(p, "fuzz")
        if not cands:
            return f"no counterexample (max difference seen {res.max_diff:.3g})"
        return (f"no counterexample: the best {min(len(cands), 8)} of {len(cands)} float "
                f"candidate(s) did not replay exactly")
    return run


# -- stage: hook provers --------------------------------------------------------------------

def _hook_stage(prover, share: float = 0.5):
    """A hook prover, given ``share`` of the time left (its own deadline)."""
    def run(ctx: _Ctx, entry: dict):
        if ctx.left() <= HOOK_MIN_SECONDS:
            # a hook's exact steps cannot be cut short: it would overrun the limit
            return "skipped: out of time"
        import time
        deadline = min(ctx.deadline, time.monotonic() + share * ctx.left())
        res = prover(ctx.f, ctx.g, ctx.box, ctx.mode, ctx.epsilon, deadline)
        if res is None or res.verdict == "unknown":
            return "unknown" + (f": {res.reason}" if res is not None and res.reason else "")
        if res.verdict == "counterexample":
            cex = res.counterexample or {}
            point = cex.get("point_exact") or cex.get("point")
            if point is None:
                ctx.discarded.append({"source": entry["stage"], "replayed": False,
                                      "why": "no point given"})
                return "counterexample without a point (discarded)"
            ctx.candidate(point, entry["stage"])
            return "counterexample did not replay (discarded)"
        if res.verdict == "equivalent":
            raise _Decided(ctx.result("equivalent", method=res.method or entry["stage"],
                                      proof=res.proof or "exact",
                                      reason=res.reason or f"{entry['stage']} proved equivalence"))
        raise ValueError(f"prover {entry['stage']!r} returned verdict {res.verdict!r}; "
                         f"expected one of {VERDICTS}")
    return run


def _prover_name(p) -> str:
    return str(getattr(p, "name", None) or getattr(p, "__name__", None) or type(p).__name__)
