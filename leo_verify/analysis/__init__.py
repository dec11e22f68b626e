"""Stability analysis: which ReLUs are always on / always off over a box.

``analyze(graph, domain, method=...)`` returns :class:`Facts`; it never
changes the graph.  See :mod:`.fast`, :mod:`.leo`, :mod:`.isa` for the methods.
"""
from __future__ import annotations

import os
import platform
import sys
import time

from ..domain import Box, as_domain
from ..errors import UsageError
from ..graph import Graph
from .facts import Facts, NeuronFact
from .state import TAU_REL, AnalysisOptions, AnalysisState, BudgetExceeded

__all__ = ["analyze", "Facts", "NeuronFact", "AnalysisOptions", "METHODS", "solver_versions"]

METHODS = ("fast", "leo", "isa")
SOLVERS = ("scip", "highs")


#: the versions that can change an analysis' answer (they are in a checkpoint's key)
ANSWER_VERSIONS = ("leo_verify", "python", "numpy", "networkx", "ortools", "scip", "highs")

_VERSIONS_CACHE: dict = {}


def solver_versions() -> dict:
    """Versions of leo_verify, Python and every library or solver that computes a
    result (analysis: numpy, networkx, OR-Tools/SCIP, HiGHS; certification: z3;
    files: onnx, torch -- read from the installed metadata, torch is not imported)."""
    if not _VERSIONS_CACHE:
        import importlib.metadata as md

        import networkx
        import numpy
        import ortools

        from .._version import __version__
        from .backends import backend_version
        out = {"leo_verify": __version__, "python": platform.python_version(),
               "numpy": numpy.__version__, "networkx": networkx.__version__,
               "ortools": ortools.__version__, "scip": backend_version("scip"),
               "highs": backend_version("highs")}
        try:
            import z3
            out["z3"] = z3.get_version_string()
        except ImportError:  # pragma: no cover - a dependency
            out["z3"] = None
        for dist in ("onnx", "onnxruntime", "torch"):
            try:
                out[dist] = md.version(dist)
            except md.PackageNotFoundError:
                out[dist] = None
        _VERSIONS_CACHE.update(out)
    return dict(_VERSIONS_CACHE)


def _open_journal(checkpoint, graph, box, options, data, log):
    """The run's checkpoint journal, or None (see :mod:`.checkpoint`)."""
    from ..errors import InputFileError
    from .checkpoint import Journal, default_dir, run_material
    folder = default_dir() if checkpoint is True else os.fspath(checkpoint)
    versions = solver_versions()
    material = run_material(graph, box, options, data=data, tau_rel=TAU_REL,
                            versions={k: versions.get(k) for k in ANSWER_VERSIONS})
    try:
        return Journal(folder, material, query_time_limit=options.query_time_limit)
    except OSError as exc:
        msg = f"checkpoint folder {folder!r} cannot be used: {exc.strerror or exc}"
        if checkpoint is True:  # the default cache: go on without it
            if log is not None:
                log(f"warning: {msg}; running without a checkpoint")
            return None
        raise InputFileError(msg) from None


def _progress_cb(state: AnalysisState, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    bar = tqdm(total=len(state.graph.relus()), unit="layer", file=sys.stderr, leave=False)

    def cb(st, layer):
        layer_facts = [f for f in st.facts.values() if f.layer == layer]
        settled = sum(f.status != "unknown" for f in layer_facts)
        bar.set_postfix_str(f"{layer}: settled {settled}/{len(layer_facts)}, "
                            f"open {len(layer_facts) - settled}, {time.monotonic() - st.started:.1f}s")
        bar.update(1)
    cb.close = bar.close
    return cb


def analyze(graph: Graph, domain, *, method: str = "fast", solver: str = "scip",
            query_time_limit: float | None = 60.0, budget: float | None = None,
            workers: int = 1, threads: int = 1, seed: int = 0, data=None,
            scheduler: str | None = None, executor=None, progress: bool = False,
            checkpoint=None, log=None, **tuning) -> Facts:
    """Classify every hidden neuron of ``graph`` over ``domain``.

    Parameters
    ----------
    graph : the network.
    domain : a :class:`Box`, a :class:`~leo_verify.domain.Domain` (a union of boxes: each box is
        analysed and the facts merged, :mod:`.union`) or a domain spec.
    method : ``"fast"`` (default), ``"leo"`` or ``"isa"``.
    solver : ``"scip"`` (OR-Tools) or ``"highs"`` (highspy).
    query_time_limit : seconds per MILP query; a timeout leaves the neuron unknown.
    budget : seconds for the whole analysis; when spent, the facts are
        returned marked incomplete (every decided neuron kept).
    workers, scheduler, executor : where independent MILP queries run
        (local processes, a Dask scheduler address, or any
        ``concurrent.futures.Executor``).
    data : optional points (e.g. training inputs); those inside the box
        serve as witness candidates (and as ISA's stability candidates).
    checkpoint : ``None`` (default: none), ``True`` (the cache folder,
        :func:`.checkpoint.default_dir`) or a folder: decided facts and every
        finished solver query are journaled there under the run's key; a run
        with the same key resumes from it (see :mod:`.checkpoint`).  An
        unusable default cache only gives a warning; an unusable given folder
        is an :class:`~leo_verify.errors.InputFileError`.
    log : called with one-line messages (resumed checkpoint, warnings).
    tuning : further :class:`AnalysisOptions` fields (``n_random``, ...).

    Returns
    -------
    Facts
        keyed by neuron id; ``complete`` is False if the run was cut short.
    """
    from .executor import make_runner
    from .fast import run_fast
    from .isa import run_isa
    from .leo import run_leo

    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if solver not in SOLVERS:
        raise UsageError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if not isinstance(domain, Box):
        union = as_domain(domain, n=graph.input_size)
        if len(union) > 1:
            from .union import analyze_union
            return analyze_union(graph, union, analyze=analyze, progress=progress, budget=budget, method=method,
                                 solver=solver, query_time_limit=query_time_limit, workers=workers,
                                 threads=threads, seed=seed, data=data, scheduler=scheduler, executor=executor,
                                 checkpoint=checkpoint, log=log, **tuning)
        domain = union.boxes[0]
    box = domain
    graph.lint(where="analyze input")
    if method == "leo":
        # LEO as published: bounds come from its own MILPs, not from CROWN.
        tuning.setdefault("use_symbolic", False)
    options = AnalysisOptions(method=method, solver=solver, query_time_limit=query_time_limit,
                              budget=budget, workers=workers, threads=threads, seed=seed,
                              progress=progress, **tuning)
    state = AnalysisState(graph, box, options)
    run = {"fast": run_fast, "leo": run_leo, "isa": run_isa}[method]
    complete, stopped = True, None
    journal = _open_journal(checkpoint, graph, box, options, data, log) if checkpoint else None
    resumed = dict(journal.facts) if journal is not None else {}
    if journal is not None:
        state.journal = journal
        state._journaled = set(resumed)
        if log is not None and (journal.loaded_facts or journal.loaded_queries):
            log(f"note: reusing an earlier run with the same inputs: {journal.loaded_facts} facts resumed, "
                f"{journal.loaded_queries} finished solver queries not run again (checkpoint {journal.path}; "
                f"--no-checkpoint starts afresh)")
    cb = _progress_cb(state, progress)
    try:
        with make_runner(workers=workers, scheduler=scheduler, executor=executor) as runner:
            runner.journal = journal
            try:
                run(state, runner, data=data, progress=cb)
            except BudgetExceeded:
                complete, stopped = False, "budget"
            except KeyboardInterrupt:
                complete, stopped = False, "interrupted"
            finally:
                if cb is not None:
                    cb.close()
        ckpt = None
        if journal is not None:
            state.flush_facts()
            journal.record_end(complete=complete, stopped=stopped)
            # the replay must reproduce what the journal says was decided
            differ = sorted(n for n, rec in resumed.items()
                            if n in state.facts and state.facts[n].status != "unknown"
                            and (state.facts[n].status, state.facts[n].evidence)
                            != (rec.get("status"), rec.get("evidence")))
            if differ and log is not None:
                log(f"warning: checkpoint: {len(differ)} resumed facts came out differently "
                    f"this time (e.g. {differ[0]}); the facts of this run are kept")
            ckpt = {"journal": journal.path, "key": journal.key, "resumed_facts": len(resumed),
                    "replayed_queries": journal.replayed, "executed_queries": journal.executed,
                    "differing_facts": len(differ)}
    finally:
        if journal is not None:
            journal.close()
    meta = {
        "method": method,
        "solver": solver,
        "settings": {"query_time_limit": query_time_limit, "budget": budget, "seed": seed,
                     "n_random": options.n_random, "n_corners": options.n_corners,
                     "gradient_steps": options.gradient_steps, "symbolic": options.use_symbolic,
                     "threads": threads, "tau_rel": TAU_REL},
        "model": {k: graph.metadata.get(k) for k in ("source", "sha256", "format")
                  if graph.metadata.get(k) is not None},
        "domain": box.to_json(),
        "versions": solver_versions(),
        "stopped": stopped,
        "counters": {"milp_queries": state.counters["milp"], "lp_queries": state.counters["lp"],
                     "witness_points": state.counters["witness_points"]},
        "timings": {"wall": round(time.monotonic() - state.started, 3),
                    "milp": round(state.counters["milp_time"], 3)},
        # about this run, not the network (like the timings): where it was checkpointed
        "run": {"checkpoint": ckpt},
    }
    return state.to_facts(complete=complete, meta=meta)
