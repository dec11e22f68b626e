"""Exact re-proofs of the differential prover's leaves: inline, or on a process pool.

The float search of :mod:`.diff_stage` finds leaves it believes proven; each is
re-proved by the kernel (:func:`leo_verify.kernel.diff_tree.prove_leaves`: forward
bounds ~20-30 ms per leaf on ACAS Xu, backward bounds 60-130 ms where those fall short).  With ``workers > 1``
the re-proofs run on a ``spawn`` process pool (fork after torch / solver threads
start is unsafe) while the search goes on; the pool starts only once
:data:`POOL_AFTER` leaves have queued (a one-leaf proof never pays the start-up).
Results come back in any order; :meth:`ExactQueue.poll` hands them over.
"""
from __future__ import annotations

import concurrent.futures as cf
import time
from fractions import Fraction

from ...kernel.diff_tree import prove_leaves

__all__ = ["ExactQueue", "BATCH", "POOL_AFTER"]

#: leaves per exact batch (one batched propagation)
BATCH = 8
#: start the pool only when this many leaves have been queued
POOL_AFTER = 24

_W: dict = {}


def _init(al, mode: str, eps: Fraction) -> None:
    _W.update(al=al, mode=mode, eps=eps)


def _check(boxes: list, forward: list) -> list:
    """In a worker: exact verdicts of a batch of leaf boxes ``[(lo, hi), ...]``."""
    return prove_leaves(_W["al"], boxes, _W["mode"], _W["eps"], forward=forward)


class ExactQueue:
    """Leaves waiting for (or under) exact re-proof."""

    def __init__(self, al, mode: str, eps: Fraction, *, workers: int = 1):
        self.al, self.mode, self.eps = al, mode, eps
        self.workers = max(1, int(workers))
        self.buf: list = []
        self.pending: dict = {}  # future -> nodes
        self.ready: list = []    # (node, ok) computed inline
        self.pool = None
        self.queued = 0
        self.seconds = 0.0       # inline exact time (the pool's runs in parallel)

    def busy(self) -> bool:
        return bool(self.buf or self.pending or self.ready)

    def add(self, node) -> None:
        self.buf.append(node)
        self.queued += 1
        if len(self.buf) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        nodes, self.buf = self.buf, []
        boxes = [(n.lo, n.hi) for n in nodes]
        # the forward bounds are tried first only where the float search expects them to prove
        forward = [n.forward for n in nodes]
        if self.workers > 1 and self.pool is None and self.queued >= POOL_AFTER:
            import multiprocessing as mp
            self.pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                               initializer=_init, initargs=(self.al, self.mode, self.eps))
        if self.pool is not None:
            self.pending[self.pool.submit(_check, boxes, forward)] = nodes
            return
        t0 = time.monotonic()
        oks = prove_leaves(self.al, boxes, self.mode, self.eps, forward=forward)
        self.seconds += time.monotonic() - t0
        self.ready.extend(zip(nodes, oks))

    def poll(self, *, block: bool = False, timeout: float | None = None) -> list:
        """Finished ``(node, ok)`` pairs; ``block``: wait for at least one (flushing the buffer)."""
        if block and not self.ready and not self.pending:
            self.flush()
        out, self.ready = self.ready, []
        if self.pending:
            if block and not out:
                done, _ = cf.wait(list(self.pending), timeout=timeout, return_when=cf.FIRST_COMPLETED)
            else:
                done = [f for f in self.pending if f.done()]
            for fut in done:
                nodes = self.pending.pop(fut)
                out.extend(zip(nodes, fut.result()))
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
