"""Mutation testing of the checker kernel: hundreds of hostile edits, none accepted, none crashing.

``LEO_MUTATIONS`` sets the number of mutations (default 300 in CI; the slow
suite: ``LEO_MUTATIONS=10000 pytest tests/test_kernel_mutations.py``).  The
campaign itself is :mod:`kernel_mutations` (also a benchmark script).
"""
from __future__ import annotations

import os

import pytest

from kernel_cases import honest_folders
from kernel_mutations import campaign

N = int(os.environ.get("LEO_MUTATIONS", "300"))


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    return honest_folders(tmp_path_factory.mktemp("honest_mut"))


def test_no_mutation_is_accepted_and_none_crashes(honest):
    tally = campaign(honest, N, strict=True)
    assert tally.n >= N * 0.9
    assert tally.accepted_bad == 0 and tally.crashes == 0, tally.examples
    # the campaign is not vacuous: most mutations are rejected (not certified or a one-line error)
    assert tally.rejected + tally.errors >= 0.5 * tally.n, vars(tally)


def test_the_same_function_oracle_sees_a_live_weight_edit(honest, tmp_path):
    """A re-hashed ONNX edit counts as harmless only if the file still computes the same outputs
    (a weight on a dead channel); an edit of a live weight is a change."""
    import json
    import shutil
    from fractions import Fraction

    import onnx
    from onnx import numpy_helper

    from kernel_mutations import CERT, _same_function
    folder = honest["conv"]
    cert = json.load(open(os.path.join(folder, CERT)))
    box = [([Fraction(v) for v in r["lower"]], [Fraction(v) for v in r["upper"]]) for r in cert["regions"]]
    assert _same_function(folder, folder, box)
    for init, delta in (("c.weight", 1.0), ("c.weight", -(2.0 ** -10)), ("y.weight", 0.5)):
        edited = tmp_path / f"{init}{delta}"
        shutil.copytree(folder, edited)
        path = edited / "compressed.onnx"
        m = onnx.load(path)
        t = next(t for t in m.graph.initializer if t.name == init)
        arr = numpy_helper.to_array(t).copy()
        arr.flat[4] += delta  # the centre tap of the first kernel / a live output weight
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
        onnx.save(m, path)
        assert not _same_function(folder, str(edited), box), (init, delta)
