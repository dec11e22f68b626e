"""Where independent solver queries run: in-process, a process pool, or Dask.

Everything goes through :class:`TaskRunner`, which wraps any
``concurrent.futures.Executor``; a Dask ``distributed.Client`` provides one
through ``client.get_executor()``, so a large analysis spreads over a cluster
with no other change.  :meth:`TaskRunner.run_task` returns one answer per
query *in query order*, whatever the number of workers and whichever worker
finished first; each query is solved on a fresh solver copy
(:mod:`.backends`), so the answers -- and the facts -- do not depend on the
number of workers.

With a :class:`~.checkpoint.Journal`, a query already answered by an earlier
run of the same key takes its recorded answer, and every finished query is
recorded as soon as it is done (in-process: after each query; on a pool:
after each chunk).

A worker process that dies (a solver crash) breaks a process pool: the
queries it held become ``"error"`` answers (the neurons stay unknown, nothing
is claimed), an owned pool is rebuilt for the next tasks.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses

from ..errors import UsageError
from .queries import QueryOutcome, run_layer_task

__all__ = ["TaskRunner", "make_runner"]


def _is_worker_crash(exc: BaseException) -> bool:
    # a dead local worker, or a Dask worker that died on the task
    return isinstance(exc, cf.BrokenExecutor) or type(exc).__name__ == "KilledWorker"


def _error_outcome(task, q, exc: BaseException) -> QueryOutcome:
    return QueryOutcome(q.nid, q.sense, "error", None, None, None,
                        {"solver": task.backend, "status": "error", "time": 0.0, "nodes": 0,
                         "message": f"worker crashed: {type(exc).__name__}: {exc}"[:300]})


class TaskRunner:
    """Runs :class:`~.queries.LayerTask` s on an executor (or inline)."""

    def __init__(self, executor: cf.Executor | None = None, *, owned: bool = False,
                 label: str = "inline", workers: int = 1, factory=None):
        self.executor = executor
        self.owned = owned
        self.label = label
        self.workers = max(1, int(workers or 1))
        self._factory = factory  # rebuilds an owned pool after a worker crash
        self.journal = None      # a checkpoint Journal, set by analyze()
        self._run_key = None

    # -- the one entry point of the methods --------------------------------
    def run_task(self, task, *, kind: str | None = None) -> list:
        """Answers to ``task.queries``, in order (see the module docstring)."""
        n = len(task.queries)
        out: list = [None] * n
        j = self.journal
        kind = kind or ("lp" if task.relax else "milp")
        keys = None
        todo = list(range(n))
        if j is not None:
            from .checkpoint import query_key, task_digest
            digest = task_digest(task, j.key)
            keys = [query_key(digest, q) for q in task.queries]
            todo = []
            for i, k in enumerate(keys):
                rec = j.lookup(k)
                if rec is None:
                    todo.append(i)
                else:
                    out[i] = rec

        def done(idx, outcomes):
            for i, o in zip(idx, outcomes):
                out[i] = o
                if j is not None:
                    if j.finished(task, o):
                        j.record(keys[i], kind, o)
                    else:
                        j.executed += 1

        if not todo:
            return out
        if self.executor is None or len(todo) == 1:
            sub = dataclasses.replace(task, queries=[task.queries[i] for i in todo])
            run_layer_task(sub, on_outcome=lambda k, o: done([todo[k]], [o]))
            return out
        k = min(len(todo), self.workers * 4)
        chunks = [todo[i::k] for i in range(k)]
        futures = {}
        broken = False
        for c in chunks:
            sub = dataclasses.replace(task, queries=[task.queries[i] for i in c])
            try:
                futures[self.executor.submit(run_layer_task, sub)] = c
            except Exception as exc:  # noqa: BLE001 - a broken pool refuses new work
                if not _is_worker_crash(exc):
                    raise
                broken = True
                done(c, [_error_outcome(task, task.queries[i], exc) for i in c])
        try:
            for f in cf.as_completed(futures):
                c = futures[f]
                try:
                    res = f.result()
                except Exception as exc:  # noqa: BLE001
                    if not _is_worker_crash(exc):
                        raise
                    broken = True
                    res = [_error_outcome(task, task.queries[i], exc) for i in c]
                done(c, res)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        if broken:
            self._rebuild()
        return out

    def map_tasks(self, tasks):
        """Answers of several tasks (lists in task order, answers in query order)."""
        return [self.run_task(t) for t in tasks]

    def _rebuild(self):
        if self.owned and self._factory is not None:
            try:
                self.executor.shutdown(wait=False, cancel_futures=True)
            except Exception:  # noqa: BLE001 - it is broken already
                pass
            self.executor = self._factory()

    def close(self):
        if self.owned and self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
        self.executor = None
        client = getattr(self, "_client", None)
        if client is not None:  # a Dask client we opened for --scheduler
            client.close()
            self._client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_runner(*, workers: int = 1, scheduler: str | None = None, executor: cf.Executor | None = None):
    """A runner for ``workers`` local processes, a Dask scheduler address, or a given executor."""
    if executor is not None:
        return TaskRunner(executor, owned=False, label=type(executor).__name__, workers=workers)
    if scheduler is not None:
        try:
            from distributed import Client
        except ImportError:
            raise UsageError("--scheduler needs the optional Dask extra: pip install 'leo-verify[dask]'") from None
        try:
            client = Client(scheduler, timeout=10)
        except OSError as exc:
            raise UsageError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
        n = max(1, len(client.scheduler_info().get("workers", {})) or workers)
        runner = TaskRunner(client.get_executor(), owned=False, label=f"dask:{scheduler}", workers=n)
        runner._client = client
        return runner
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if workers == 1:
        return TaskRunner(None, label="inline")
    import multiprocessing as mp
    ctx = mp.get_context("spawn")  # fork after torch/solver threads start is unsafe

    def factory():
        return cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    return TaskRunner(factory(), owned=True, label=f"processes:{workers}", workers=workers,
                      factory=factory)
