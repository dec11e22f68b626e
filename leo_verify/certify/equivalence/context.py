"""The running check (:class:`_Ctx`): deadline, stages run, discarded candidates, the
replay of every candidate; :func:`_stage` runs one stage.
"""
from __future__ import annotations

import time
from contextvars import ContextVar
from fractions import Fraction
from typing import Callable

import numpy as np

from ..fuzz import FuzzResult
from .result import _to_fraction, CheckResult, replay


# -- the check --------------------------------------------------------------------------

class _Decided(Exception):
    """Raised inside a stage to return a final result."""

    def __init__(self, result: CheckResult):
        self.result = result


class _Ctx:
    def __init__(self, f, g, box, mode, epsilon, time_limit, solver, seed):
        self.f, self.g, self.box = f, g, box
        self.mode, self.epsilon = mode, float(epsilon)
        self.solver, self.seed = solver, seed
        self.start = time.monotonic()
        self.deadline = self.start + float(time_limit)
        self.stages: list = []
        self.discarded: list = []
        self.max_seen = 0.0
        self.best_bound: float | None = None
        self.fuzz: FuzzResult | None = None
        self._joint = None
        self._canon = None
        self.share = True
        self._replayed: set = set()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def result(self, verdict, *, method=None, proof=None, reason="", cex=None,
               certificate=None) -> CheckResult:
        return CheckResult(verdict, mode=self.mode, epsilon=self.epsilon, method=method,
                           proof=proof, reason=reason, counterexample=cex,
                           max_diff_seen=self.max_seen, best_bound=self.best_bound,
                           stages=self.stages, discarded=self.discarded,
                           time=time.monotonic() - self.start, solver=self.solver,
                           seed=self.seed, certificate=certificate,
                           fuzz=None if self.fuzz is None else self.fuzz.to_json())

    def candidate(self, point, source: str) -> None:
        """Replay a candidate; raise :class:`_Decided` with the counterexample if it holds."""
        key = tuple(str(_to_fraction(v)) for v in np.asarray(point, dtype=object).ravel())
        if key in self._replayed:
            return
        self._replayed.add(key)
        cex, check = replay(self.f, self.g, self.box, point, mode=self.mode, epsilon=self.epsilon)
        if self.mode not in ("top1", "top1-confidence"):
            self.max_seen = max(self.max_seen, check["difference"])
        if cex is None:
            self.discarded.append({"source": source, **check})
            return
        cex["found_by"] = source
        if self.mode not in ("top1", "top1-confidence"):
            self.max_seen = max(self.max_seen, cex["float_difference"], cex["difference"])
        raise _Decided(self.result(
            "counterexample", method=source, proof="replayed",
            reason=f"{source} found a point where {_describe(cex, self.mode, self.epsilon)} "
                   f"(replayed exactly)", cex=cex))

    def rational_candidate(self, q: list, source: str) -> None:
        """A candidate with rational coordinates: try its float rounding first."""
        rounded = [Fraction(float(v)) for v in q]
        if rounded != q:
            self.candidate(rounded, source)
        self.candidate(q, source)


def _describe(cex: dict, mode: str, epsilon: float) -> str:
    if mode == "top1":
        return f"argmax f = {cex['argmax_f']} but argmax g = {cex['argmax_g']}"
    if mode == "top1-confidence":
        return (f"softmax(f) is above delta = {epsilon:g} at class {cex['argmax_f']} but argmax g = "
                f"{cex['argmax_g']}")
    i = cex["output"]
    if mode == "exact":
        return f"output {i} differs by {cex['difference']:.6g}"
    return f"|f_{i} - g_{i}| = {cex['difference']:.6g} > epsilon = {epsilon:g}"


#: called with each finished stage's log entry (``stage``, ``outcome``, ``time``, ...): the
#: progress display of ``leo-verify check`` sets it for the duration of a check
STAGE_LISTENER: ContextVar = ContextVar("leo_verify_check_stage_listener", default=None)


def _stage(ctx: _Ctx, name: str, fn: Callable) -> None:
    """Run one stage, log its outcome; a decision propagates as :class:`_Decided`."""
    t0 = time.monotonic()
    entry = {"stage": name, "outcome": "unknown", "time": 0.0}
    ctx.stages.append(entry)
    try:
        outcome = fn(ctx, entry)
        if outcome:
            entry["outcome"] = outcome
    except _Decided as d:
        entry["outcome"] = d.result.verdict
        entry["time"] = time.monotonic() - t0
        d.result.time = time.monotonic() - ctx.start
        _tell(entry)
        raise
    entry["time"] = time.monotonic() - t0
    _tell(entry)


def _tell(entry: dict) -> None:
    listener = STAGE_LISTENER.get()
    if listener is not None:
        listener(entry)
