"""Stability analysis: which ReLUs are always on / always off over a box.

``analyze(graph, domain, method=...)`` returns :class:`Facts`; it never
changes the graph.  See :mod:`.fast`, :mod:`.leo`, :mod:`.isa` for the methods.
"""
from __future__ import annotations

import platform
import sys
import time

from ..domain import Box, parse_domain
from ..errors import UsageError
from ..graph import Graph
from .facts import Facts, NeuronFact
from .state import TAU_REL, AnalysisOptions, AnalysisState, BudgetExceeded

__all__ = ["analyze", "Facts", "NeuronFact", "AnalysisOptions", "METHODS", "solver_versions"]

METHODS = ("fast", "leo", "isa")
SOLVERS = ("scip", "highs")


def solver_versions() -> dict:
    """Versions of everything that can change an analysis' answer."""
    import networkx
    import numpy

    from .. import __version__
    out = {"leo_verify": __version__, "python": platform.python_version(),
           "numpy": numpy.__version__, "networkx": networkx.__version__}
    import ortools

    from .backends import backend_version
    out["ortools"] = ortools.__version__
    out["scip"] = backend_version("scip")
    out["highs"] = backend_version("highs")
    return out


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
            **tuning) -> Facts:
    """Classify every hidden neuron of ``graph`` over ``domain``.

    Parameters
    ----------
    graph : the network.
    domain : a :class:`Box` or a domain spec (see :func:`leo_verify.domain.parse_domain`).
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
    box = domain if isinstance(domain, Box) else parse_domain(domain, n=graph.input_size)
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
    cb = _progress_cb(state, progress)
    with make_runner(workers=workers, scheduler=scheduler, executor=executor) as runner:
        try:
            run(state, runner, data=data, progress=cb)
        except BudgetExceeded:
            complete, stopped = False, "budget"
        except KeyboardInterrupt:
            complete, stopped = False, "interrupted"
        finally:
            if cb is not None:
                cb.close()
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
    }
    return state.to_facts(complete=complete, meta=meta)
