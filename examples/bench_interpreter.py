"""Throughput of the float64 interpreter on ACAS Xu (target: >= 1e5 points/s on one core).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python examples/bench_interpreter.py
"""
import os
import sys
import time

import numpy as np

from leo_verify.io import load
from leo_verify.semantics import evaluate

NET = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "benchmarks", "acasxu",
                   "ACASXU_run2a_1_1_batch_2000.onnx")


def main() -> int:
    g = load(sys.argv[1] if len(sys.argv) > 1 else NET)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (100_000, g.input_size))
    evaluate(g, x[:1000])
    best = min(_time(g, x) for _ in range(3))
    print(f"{len(x) / best:,.0f} points/s ({best:.3f} s for {len(x):,} points)")
    return 0


def _time(g, x):
    t = time.perf_counter()
    evaluate(g, x)
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
