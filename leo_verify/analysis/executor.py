"""Where independent solver queries run: in-process, a process pool, or Dask.

Everything goes through :class:`TaskRunner`, which wraps any
``concurrent.futures.Executor``; a Dask ``distributed.Client`` provides one
through ``client.get_executor()``, so a large analysis spreads over a cluster
with no other change.  Results come back in submission order, so the facts
do not depend on which worker finished first.
"""
from __future__ import annotations

import concurrent.futures as cf

from ..errors import UsageError
from .queries import run_layer_task

__all__ = ["TaskRunner", "make_runner"]


class TaskRunner:
    """Runs :class:`~.queries.LayerTask` s, in order, on an executor (or inline)."""

    def __init__(self, executor: cf.Executor | None = None, *, owned: bool = False, label: str = "inline"):
        self.executor = executor
        self.owned = owned
        self.label = label

    def map_tasks(self, tasks):
        if self.executor is None or len(tasks) <= 1:
            return [run_layer_task(t) for t in tasks]
        futures = [self.executor.submit(run_layer_task, t) for t in tasks]
        return [f.result() for f in futures]

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
        return TaskRunner(executor, owned=False, label=type(executor).__name__)
    if scheduler is not None:
        try:
            from distributed import Client
        except ImportError:
            raise UsageError("--scheduler needs the optional Dask extra: pip install 'leo-verify[dask]'") from None
        try:
            client = Client(scheduler, timeout=10)
        except OSError as exc:
            raise UsageError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
        runner = TaskRunner(client.get_executor(), owned=False, label=f"dask:{scheduler}")
        runner._client = client
        return runner
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if workers == 1:
        return TaskRunner(None, label="inline")
    import multiprocessing as mp
    ctx = mp.get_context("spawn")  # fork after torch/solver threads start is unsafe
    return TaskRunner(cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx), owned=True,
                      label=f"processes:{workers}")
