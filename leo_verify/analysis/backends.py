"""MILP/LP solver backends for :class:`~leo_verify.analysis.milp.Program`.

Two backends, both giving the same :class:`SolveResult`:

``"scip"``   SCIP through OR-Tools ``pywraplp`` (``Objective().BestBound()`` is
             SCIP's global dual bound; early stops use SCIP's own
             ``limits/primal`` and ``limits/dual`` parameters);
``"highs"``  HiGHS through ``highspy`` directly.  Not through ``pywraplp``:
             there ``BestBound()`` returns the primal value (see
             ``/work/shared/notes/solvers.md``), which would turn a time-out
             into a false stability claim.  Early stops use a MIP-interrupt
             callback, not ``objective_bound``: a cutoff voids the bounds
             HiGHS reports, an interrupt keeps them valid.

Soundness contract: ``SolveResult.dual`` is either ``None`` or a bound the
solver proved on the optimum (``>=`` it for ``"max"``, ``<=`` it for
``"min"``), within the solver's floating-point tolerances (feasibility
1e-6); results meant as certificates must be re-checked exactly elsewhere.
A crash, an error status or a non-finite number becomes ``status="error"``
with ``dual=None``: this module never raises on solver trouble and never
reports a bound it did not get from a finished or cleanly stopped search.
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .milp import Program

__all__ = ["SolveResult", "Session", "solve", "BACKENDS", "backend_version"]

BACKENDS = ("scip", "highs")
SENSES = ("max", "min")
STATUSES = ("optimal", "feasible", "infeasible", "timeout", "error")

# SCIP's infinity; its limits treat +-1e20 as "no limit" in the right direction.
_SCIP_INF = 1e20


@dataclass
class SolveResult:
    """The outcome of one solve.

    Attributes
    ----------
    status : ``"optimal"``, ``"feasible"`` (stopped with an incumbent: time
        limit or early stop), ``"infeasible"``, ``"timeout"`` (stopped without
        an incumbent) or ``"error"``.
    primal : objective value of the incumbent, or ``None``.
    dual : a valid bound on the optimum in the objective's sense (an upper
        bound for ``"max"``), or ``None`` when none is known to be valid.
    x : the incumbent (one value per program variable), or ``None``.
    time : wall-clock seconds of the solve call.
    nodes : branch-and-bound nodes (``None`` if unknown).
    backend, version : solver name and version string.
    sense : ``"max"`` or ``"min"``.
    stopped_by : ``"primal_stop"``, ``"dual_stop"``, ``"time_limit"``,
        ``"unknown"`` (a stop the backend cannot attribute) or ``None``.
    message : why the status is ``"error"`` (or other solver remarks).
    """

    status: str
    primal: float | None = None
    dual: float | None = None
    x: np.ndarray | None = None
    time: float = 0.0
    nodes: int | None = None
    backend: str = ""
    version: str = ""
    sense: str = "max"
    stopped_by: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        """True unless the solver failed."""
        return self.status != "error"

    def to_json(self) -> dict:
        """A JSON-ready summary (without ``x``)."""
        return {"status": self.status, "primal": self.primal, "dual": self.dual,
                "time": self.time, "nodes": self.nodes, "backend": self.backend,
                "version": self.version, "sense": self.sense, "stopped_by": self.stopped_by,
                "message": self.message}


# -- shared helpers -----------------------------------------------------------

def _better_or_equal(a: float, b: float, sense: str) -> bool:
    """``a`` is at least as good as ``b`` for the sense (``>=`` for max)."""
    return a >= b if sense == "max" else a <= b


def _finite_or_none(v) -> float | None:
    """``v`` as a float, or ``None`` if it is not a real bound.

    SCIP reports "no bound" as its infinity 1e20 (measured: ``BestBound()``
    after a ``limits/primal`` stop), not as ``inf``.
    """
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) and abs(v) < _SCIP_INF else None


def _objective_arrays(objective: Mapping[int, float], n: int) -> np.ndarray:
    c = np.zeros(n, dtype=np.float64)
    for v, coef in objective.items():
        v = int(v)
        if not 0 <= v < n:
            raise ValueError(f"objective: variable {v} is not in the program (0..{n - 1})")
        c[v] += float(coef)
    if not np.all(np.isfinite(c)):
        raise ValueError("objective: non-finite coefficient")
    return c


def _check_options(sense, time_limit, threads, primal_stop, dual_stop):
    # Bad options are the caller's bug: raise (unlike solver trouble).
    if sense not in SENSES:
        raise ValueError(f"sense must be one of {SENSES}, got {sense!r}")
    if time_limit is not None and not (time_limit > 0 and math.isfinite(time_limit)):
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads!r}")
    for label, v in (("primal_stop", primal_stop), ("dual_stop", dual_stop)):
        if v is not None and not math.isfinite(v):
            raise ValueError(f"{label} must be finite, got {v!r}")


def _finish(res: SolveResult, c: np.ndarray, *, primal_stop, dual_stop) -> SolveResult:
    """Validate a raw result: inconsistent or non-finite numbers become errors.

    Also names the stop reason when the backend did not.
    """
    if res.status in ("optimal", "feasible"):
        if res.x is None or not np.all(np.isfinite(res.x)) or res.primal is None \
                or not math.isfinite(res.primal):
            return _error(res, "solver reported a solution with missing or non-finite values")
        # Cheap cross-checks against a misreading of the solver's answer
        # (wrong sign convention, a bound that is really the primal value...).
        scale = 1.0 + float(np.abs(c) @ np.abs(res.x))
        if abs(float(c @ res.x) - res.primal) > 1e-6 * scale:
            return _error(res, f"objective {res.primal!r} does not match the solution "
                               f"({float(c @ res.x)!r})")
        if res.dual is not None:
            # a valid bound is at least as good as any incumbent: dual >= primal for max
            gap = res.dual - res.primal if res.sense == "max" else res.primal - res.dual
            if gap < -1e-5 * scale:
                return _error(res, f"dual bound {res.dual!r} undercuts the incumbent "
                                   f"{res.primal!r}")
    else:
        res.x, res.primal = None, None
    if res.status in ("infeasible", "error"):
        res.dual = None
    if res.dual is not None and not math.isfinite(res.dual):
        res.dual = None  # an infinite bound says nothing
    if res.status == "optimal" and res.dual is None:
        return _error(res, "optimal status without a finite dual bound")
    if res.status in ("feasible", "timeout") and res.stopped_by is None:
        if primal_stop is not None and res.primal is not None \
                and _better_or_equal(res.primal, primal_stop, res.sense):
            res.stopped_by = "primal_stop"
        elif dual_stop is not None and res.dual is not None \
                and _better_or_equal(dual_stop, res.dual, res.sense):
            res.stopped_by = "dual_stop"
        else:
            res.stopped_by = "time_limit"
    return res


def _error(res: SolveResult, message: str) -> SolveResult:
    res.status, res.primal, res.dual, res.x, res.message = "error", None, None, None, message
    return res


# -- SCIP through pywraplp ----------------------------------------------------

_VERSIONS: dict = {}


def _scip_solver():
    from ortools.linear_solver import pywraplp
    solver = pywraplp.Solver.CreateSolver("SCIP")
    if solver is None:
        raise RuntimeError("OR-Tools was built without SCIP")
    _VERSIONS.setdefault("scip", solver.SolverVersion())
    return solver


class _ScipModel:
    """A pywraplp SCIP model of a program; re-solvable with new objectives."""

    name = "scip"

    def __init__(self, program: Program, *, relax: bool, threads: int):
        from ortools.linear_solver import pywraplp
        self._pywraplp = pywraplp
        s = self.solver = _scip_solver()
        self.version = _VERSIONS["scip"]
        inf = s.infinity()

        def clip(v):
            return max(-inf, min(inf, v))

        self.vars = [s.Var(clip(v.lb), clip(v.ub), bool(v.integer and not relax), f"x{i}")
                     for i, v in enumerate(program.variables)]
        for r in program.rows:
            ct = s.RowConstraint(clip(r.lb), clip(r.ub), "")
            for v, coef in r.coefs.items():
                ct.SetCoefficient(self.vars[v], coef)
        if threads != 1 and not s.SetNumThreads(int(threads)):
            raise RuntimeError(f"SCIP refused threads={threads}")
        self.threads = int(threads)
        self.n = program.num_vars
        # Every solve runs on a fresh SCIP loaded (in C++) from this proto:
        # a pywraplp model re-solved with a new objective keeps SCIP's earlier
        # solutions, which steer the next search (measured: 22 of 24 queries
        # of one layer gave other bounds / nodes / points than the same query
        # solved alone).  A fresh copy makes each answer a function of the
        # query only, so resumed runs and any number of workers reproduce an
        # uninterrupted single-process run (~6-9 ms per query).
        from ortools.linear_solver import linear_solver_pb2
        self._proto = linear_solver_pb2.MPModelProto()
        s.ExportModelToProto(self._proto)
        self.solver = None
        self.vars = None

    def _fresh(self):
        s = self._pywraplp.Solver.CreateSolver("SCIP")
        if s is None:
            raise RuntimeError("OR-Tools was built without SCIP")
        err = s.LoadModelFromProto(self._proto)
        if err:
            raise RuntimeError(f"SCIP could not load the model: {err}")
        if self.threads != 1 and not s.SetNumThreads(self.threads):
            raise RuntimeError(f"SCIP refused threads={self.threads}")
        return s, s.variables()

    def _params(self, sense, time_limit, primal_stop, dual_stop) -> str:
        # Every limit is set on every solve: SCIP keeps parameters between
        # solves of one model, so a stop left over from the last query would
        # silently cut the next one short.  Values are in the objective's
        # own sense ("at least as good as"); +-1e20 is SCIP's "never".
        never_primal = _SCIP_INF if sense == "max" else -_SCIP_INF
        never_dual = -_SCIP_INF if sense == "max" else _SCIP_INF
        p = never_primal if primal_stop is None else float(primal_stop)
        d = never_dual if dual_stop is None else float(dual_stop)
        t = _SCIP_INF if time_limit is None else float(time_limit)
        # misc/catchctrlc = FALSE: SCIP's own SIGINT handler would end only the
        # current solve and swallow the Ctrl-C, so a user's interrupt would
        # turn into one "timeout" and the analysis would go on as complete.
        # Without it Python raises KeyboardInterrupt when the solve returns.
        return (f"limits/primal = {p!r}\nlimits/dual = {d!r}\nlimits/time = {t!r}\n"
                f"misc/catchctrlc = FALSE\n")

    def run(self, c, *, sense, time_limit, primal_stop, dual_stop, hint) -> SolveResult:
        lp = self._pywraplp
        # drop the previous copy first: one SCIP instance in memory at a time
        self.solver = self.vars = None
        s, self.vars = self._fresh()
        self.solver = s
        obj = s.Objective()
        for v in np.flatnonzero(c):
            obj.SetCoefficient(self.vars[v], float(c[v]))
        obj.SetMaximization() if sense == "max" else obj.SetMinimization()
        params = self._params(sense, time_limit, primal_stop, dual_stop)
        if not s.SetSolverSpecificParametersAsString(params):
            raise RuntimeError(f"SCIP rejected parameters {params!r}")
        s.SetTimeLimit(0 if time_limit is None else max(1, int(math.ceil(time_limit * 1000))))
        s.SetHint([], []) if hint is None else s.SetHint(self.vars, [float(v) for v in hint])
        start = time.perf_counter()
        code = s.Solve()
        elapsed = time.perf_counter() - start
        res = SolveResult("error", backend=self.name, version=self.version, sense=sense)
        res.nodes = int(s.nodes())
        res.status, res.stopped_by, res.message = self._status(code, elapsed, time_limit,
                                                               primal_stop, dual_stop)
        if code in (lp.Solver.OPTIMAL, lp.Solver.FEASIBLE) and res.status != "error":
            res.primal = obj.Value()
            res.x = np.array([v.solution_value() for v in self.vars], dtype=np.float64)
            # Only with an incumbent: pywraplp's BestBound() without one is
            # not SCIP's bound (measured: 0.0 after a time-out while the true
            # maximum was 0.798).
            res.dual = _finite_or_none(obj.BestBound())
        return res

    def _status(self, code, elapsed, time_limit, primal_stop, dual_stop):
        """(status, stopped_by, message) of a pywraplp result code."""
        lp = self._pywraplp.Solver
        if code == lp.OPTIMAL:
            return "optimal", None, ""
        if code == lp.FEASIBLE:
            return "feasible", None, ""  # _finish names the stop
        if code == lp.INFEASIBLE:
            return "infeasible", None, ""
        if code == lp.NOT_SOLVED:  # pywraplp: time or node limit, no incumbent
            return "timeout", "time_limit", ""
        timed_out = time_limit is not None and elapsed >= 0.9 * time_limit
        if code == lp.ABNORMAL and (timed_out or primal_stop is not None or dual_stop is not None):
            # A SCIP stop without an incumbent surfaces as ABNORMAL; its dual
            # bound is not readable through pywraplp, so nothing is claimed.
            return ("timeout", "time_limit" if timed_out else "unknown",
                    "SCIP stopped without an incumbent (no readable dual bound)")
        return "error", None, f"pywraplp result status {code}"


# -- HiGHS through highspy ----------------------------------------------------

_BANNER_LOCK = threading.Lock()
_BANNER_DONE = False


def highs_time_limit(h, seconds: float | None) -> int:
    """Limit the *next* ``h.run()`` to ``seconds`` (``None``: no limit); returns the HiGHS status.

    HiGHS (1.x, measured on 1.16) compares ``time_limit`` with the *cumulative*
    run time of the ``Highs`` object (ERGO-Code/HiGHS#1477): on a reused
    model every run after the first ``time_limit`` seconds in total stops at
    once with ``kTimeLimit``.  So the limit is set relative to the run time
    already spent.
    """
    if seconds is None:
        return h.setOptionValue("time_limit", math.inf)
    return h.setOptionValue("time_limit", float(h.getRunTime()) + float(seconds))


def _new_highs():
    """A silent ``highspy.Highs``.

    HiGHS prints its banner on stdout at the first construction in a process,
    before any option can be set; that would corrupt machine-readable output
    on stdout, so the first construction runs with fd 1 pointed at fd 2.
    """
    global _BANNER_DONE
    import highspy
    with _BANNER_LOCK:
        if _BANNER_DONE:
            h = highspy.Highs()
        else:
            sys.stdout.flush()
            saved = os.dup(1)
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                # the banner is noise on both streams (the CLI's stderr is for
                # errors, one line each): send it nowhere
                os.dup2(devnull, 1)
                h = highspy.Highs()
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
                os.close(saved)
                os.close(devnull)
            _BANNER_DONE = True
    h.silent()
    _VERSIONS.setdefault("highs", f"HiGHS {h.version()} (highspy)")
    return h


# HiGHS sizes one global thread scheduler per process at its first run; a
# later run asking another ``threads`` fails with kError (measured) unless the
# scheduler is reset, which is only safe while no HiGHS solve is running.
_SCHED_LOCK = threading.Lock()
_SCHED = {"threads": None, "running": 0}


def _enter_highs(threads: int) -> None:
    import highspy
    with _SCHED_LOCK:
        if _SCHED["threads"] != threads:
            if _SCHED["running"]:
                raise RuntimeError(f"HiGHS is running with threads={_SCHED['threads']} in this "
                                   f"process; threads={threads} must wait until it is done")
            highspy.Highs.resetGlobalScheduler(True)
            _SCHED["threads"] = threads
        _SCHED["running"] += 1


def _leave_highs() -> None:
    with _SCHED_LOCK:
        _SCHED["running"] -= 1


def _ok(status, what: str):
    import highspy
    if status != highspy.HighsStatus.kOk:
        raise RuntimeError(f"HiGHS {what}: status {status}")


class _HighsModel:
    """A highspy model of a program; re-solvable with new objectives."""

    name = "highs"

    def __init__(self, program: Program, *, relax: bool, threads: int):
        import highspy
        self._hs = highspy
        h = self.h = _new_highs()
        self.version = _VERSIONS["highs"]
        n = self.n = program.num_vars
        lb, ub = program.bounds()
        inf = h.getInfinity()
        _ok(h.addVars(n, np.clip(lb, -inf, inf), np.clip(ub, -inf, inf)), "addVars")
        row_lb, row_ub, starts, index, value = program.csr()
        if program.num_rows:
            _ok(h.addRows(program.num_rows, np.clip(row_lb, -inf, inf), np.clip(row_ub, -inf, inf),
                          len(index), starts[:-1], index, value), "addRows")
        ints = np.array([i for i, v in enumerate(program.variables) if v.integer], dtype=np.int32)
        self.mip = bool(ints.size) and not relax
        if self.mip:
            kinds = np.full(ints.size, int(highspy.HighsVarType.kInteger), dtype=np.uint8)
            _ok(h.changeColsIntegrality(ints.size, ints, kinds), "changeColsIntegrality")
        # HiGHS's default 1e-4 relative gap would call a solve "optimal" that
        # SCIP (gap 0) would not; match SCIP so both backends mean the same.
        self.threads = int(threads)
        for opt, val in (("threads", self.threads), ("mip_rel_gap", 0.0), ("mip_abs_gap", 1e-6)):
            _ok(h.setOptionValue(opt, val), f"option {opt}")
        self._stop = None
        h.cbMipInterrupt.subscribe(self._interrupt)

    def _interrupt(self, e):
        # Called by HiGHS during the MIP search: stop as soon as the incumbent
        # reaches primal_stop or the dual bound passes dual_stop.  An
        # interrupt leaves the reported bound valid, unlike objective_bound.
        # The interrupt flag persists in HiGHS between runs (measured: after
        # one early stop every later run stopped at once), so it is written
        # explicitly on every call.
        stop = self._stop
        e.interrupt(False)
        if stop is None:
            return
        sense, primal_stop, dual_stop = stop
        out = e.data_out
        if primal_stop is not None and math.isfinite(out.mip_primal_bound) \
                and _better_or_equal(out.mip_primal_bound, primal_stop, sense):
            self._stopped = "primal_stop"
            e.interrupt()
        elif dual_stop is not None and math.isfinite(out.mip_dual_bound) \
                and _better_or_equal(dual_stop, out.mip_dual_bound, sense):
            self._stopped = "dual_stop"
            e.interrupt()

    def run(self, c, *, sense, time_limit, primal_stop, dual_stop, hint) -> SolveResult:
        hs, h = self._hs, self.h
        # forget the last run's basis and solution: warm starts make an answer
        # depend on the queries before it (measured on LPs), see _ScipModel
        _ok(h.clearSolver(), "clearSolver")
        _ok(h.changeColsCost(self.n, np.arange(self.n, dtype=np.int32), c), "changeColsCost")
        _ok(h.changeObjectiveSense(hs.ObjSense.kMaximize if sense == "max"
                                   else hs.ObjSense.kMinimize), "changeObjectiveSense")
        _ok(highs_time_limit(h, time_limit), "option time_limit")
        if hint is not None and self.mip:
            # A start solution; HiGHS checks it and ignores it if infeasible.
            _ok(h.setSolution(self.n, np.arange(self.n, dtype=np.int32),
                              np.asarray(hint, dtype=np.float64)), "setSolution")
        self._stop = (sense, primal_stop, dual_stop) if (primal_stop, dual_stop) != (None, None) \
            else None
        self._stopped = None
        _enter_highs(self.threads)
        try:
            run_status = h.run()
        finally:
            self._stop = None
            _leave_highs()
        res = SolveResult("error", backend=self.name, version=self.version, sense=sense)
        if run_status == hs.HighsStatus.kError:
            res.message = "HiGHS run returned kError"
            return res
        info = h.getInfo()
        model = h.getModelStatus()
        has_sol = info.primal_solution_status == hs.SolutionStatus.kSolutionStatusFeasible
        res.nodes = int(info.mip_node_count) if self.mip else 0
        M = hs.HighsModelStatus
        if model == M.kOptimal:
            res.status = "optimal"
        elif model == M.kInfeasible:
            res.status = "infeasible"
        elif model == M.kTimeLimit or (model == M.kInterrupt and self._stopped):
            res.status = "feasible" if has_sol else "timeout"
            res.stopped_by = self._stopped or "time_limit"
        else:
            res.message = f"HiGHS model status {h.modelStatusToString(model)}"
            return res
        if res.status in ("optimal", "feasible"):
            res.primal = float(info.objective_function_value)
            res.x = np.array(h.getSolution().col_value, dtype=np.float64)
        if self.mip:
            if res.status != "infeasible":
                res.dual = _finite_or_none(info.mip_dual_bound)
        elif res.status == "optimal":
            # An LP stopped early has no dual bound we could trust; an optimal
            # one has primal = dual up to tolerances.
            res.dual = res.primal
        return res


_MODELS = {"scip": _ScipModel, "highs": _HighsModel}


def backend_version(backend: str) -> str:
    """The version string of a backend's solver (builds a throw-away model)."""
    if backend not in _VERSIONS:
        _MODELS[backend](Program(), relax=True, threads=1)
    return _VERSIONS[backend]


# -- public API ---------------------------------------------------------------

def _guarded(backend: str, fn, *, sense: str) -> SolveResult | object:
    """Run ``fn``; a solver exception becomes an ``"error"`` result (the one broad except)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - solver crashes must not escape as claims
        return SolveResult("error", backend=backend, version=_VERSIONS.get(backend, ""),
                           sense=sense, message=f"{type(exc).__name__}: {exc}")


class Session:
    """A solver model of one program, re-solved with changing objectives.

    The program is translated into the solver's model once; each query then
    runs on a clean copy of it (SCIP: a fresh instance loaded from the model's
    proto in C++, ~6-9 ms; HiGHS: ``clearSolver()``), so its answer does not
    depend on the queries solved before it.  Translating from Python per query
    would cost 20-65 ms (measured on a 5-50x6 net, the MILP below hidden
    layer 3), 2-3x the time of an LP-relaxation query.

    Parameters
    ----------
    program : the MILP.
    backend : ``"scip"`` or ``"highs"``.
    threads : solver threads.
    relax : treat integer variables as continuous (the LP relaxation).
    hint : a default start solution for every query (one value per variable,
        e.g. :meth:`Encoding.assignment` of a point of the box).  With SCIP
        it matters beyond speed: pywraplp reports SCIP's dual bound only when
        an incumbent exists, and a feasible hint guarantees one.
    """

    def __init__(self, program: Program, *, backend: str = "scip", threads: int = 1,
                 relax: bool = False, hint=None):
        if backend not in _MODELS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        _check_options("max", None, threads, None, None)
        self.program = program
        self.backend = backend
        self.relax = relax
        self.threads = int(threads)
        self.hint = _check_hint(hint, program.num_vars)
        self._lock = threading.Lock()  # solver models are not re-entrant
        built = _guarded(backend, lambda: _MODELS[backend](program, relax=relax,
                                                           threads=self.threads), sense="max")
        self._model = None if isinstance(built, SolveResult) else built
        self._build_error = built if isinstance(built, SolveResult) else None

    def solve(self, objective: Mapping[int, float], *, sense: str = "max",
              time_limit: float | None = None, primal_stop: float | None = None,
              dual_stop: float | None = None, hint=None) -> SolveResult:
        """Optimise ``objective`` (variable -> coefficient) over the program.

        Parameters
        ----------
        objective : variable index -> coefficient.
        sense : ``"max"`` or ``"min"``.
        time_limit : seconds, or ``None`` for none.
        primal_stop : stop once an incumbent at least this good is found
            (``>=`` for max, ``<=`` for min): a witness is enough.
        dual_stop : stop once the dual bound is at least this good
            (``<=`` for max, ``>=`` for min): a proof is enough.  Ignored by
            pure LPs, which are fast anyway.
        hint : a start solution for this query (default: the session's).

        Returns
        -------
        SolveResult
        """
        _check_options(sense, time_limit, 1, primal_stop, dual_stop)
        c = _objective_arrays(objective, self.program.num_vars)
        hint = self.hint if hint is None else _check_hint(hint, self.program.num_vars)
        start = time.perf_counter()
        if self._model is None:
            res = SolveResult("error", backend=self.backend, sense=sense,
                              message=self._build_error.message)
        else:
            with self._lock:
                res = _guarded(self.backend, lambda: self._model.run(
                    c, sense=sense, time_limit=time_limit, primal_stop=primal_stop,
                    dual_stop=dual_stop, hint=hint), sense=sense)
        res.time = time.perf_counter() - start
        return _finish(res, c, primal_stop=primal_stop, dual_stop=dual_stop)


def _check_hint(hint, n: int):
    if hint is None:
        return None
    arr = np.asarray(hint, dtype=np.float64).ravel()
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"hint: expected {n} finite values, got shape {np.shape(hint)}")
    return arr


def solve(program: Program, objective: Mapping[int, float], *, sense: str = "max",
          backend: str = "scip", time_limit: float | None = None, threads: int = 1,
          primal_stop: float | None = None, dual_stop: float | None = None,
          relax: bool = False, hint=None) -> SolveResult:
    """Optimise ``objective`` over ``program`` once (see :meth:`Session.solve`).

    ``relax=True`` solves the LP relaxation (integer variables continuous).
    The reported ``time`` includes building the solver model.  For many
    queries on one program, a :class:`Session` is faster.
    """
    _check_options(sense, time_limit, threads, primal_stop, dual_stop)
    start = time.perf_counter()
    res = Session(program, backend=backend, threads=threads, relax=relax, hint=hint).solve(
        objective, sense=sense, time_limit=time_limit, primal_stop=primal_stop,
        dual_stop=dual_stop)
    res.time = time.perf_counter() - start
    return res
