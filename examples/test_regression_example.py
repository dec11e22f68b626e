"""A regression test a user would write for a compressed network (pytest + hypothesis).

You ship ``model_small.onnx``, the output of ``leo-verify compress`` on
``model.onnx``, and want CI to fail if the two ever stop computing the same
function on the inputs you care about -- e.g. after re-running the
compression with a new leo_verify version, after an export step, or after
someone edits the file by hand.  ``leo_verify.testing`` gives you:

* ``assert_equivalent(f, g, domain, epsilon=...)``: a *proof* that
  ``|f(x) - g(x)| <= epsilon`` for every ``x`` in the domain (or a failure
  with a counterexample replayed in exact arithmetic);
* ``points_in(box)``: a hypothesis strategy drawing points of the box
  (corners, edges, midpoints and interior points), for cheap property tests
  that also document what is being promised.

Run it with::

    .venv/bin/pytest examples/test_regression_example.py -q

It uses the bundled 4-8-8-2 network ``examples/nets/tiny_mlp.onnx`` over
``[0, 1]^4`` and compresses it once per test session (a second or two); replace
``MODEL``, ``DOMAIN`` and the ``compressed`` fixture with your own files.
"""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings

from leo_verify.compressor import compress
from leo_verify.domain import parse_domain
from leo_verify.graph import Affine
from leo_verify.io import load
from leo_verify.semantics import evaluate, evaluate_exact
from leo_verify.testing import assert_equivalent, points_in

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "nets", "tiny_mlp.onnx")
DOMAIN = os.path.join(HERE, "nets", "tiny_mlp_domain.json")
BOX = parse_domain(DOMAIN, n=4)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """(original graph, compressed graph read back from its ONNX file, proven eps)."""
    res = compress(MODEL, BOX)
    assert res.report["certificate"]["verdict"] == "certified", res.report["certificate"]
    path = tmp_path_factory.mktemp("compressed") / "model_small.onnx"
    res.to_onnx(str(path))
    eps = Fraction(max((v["exact"] for v in res.report["certificate"]["epsilon"].values()),
                       key=Fraction, default="0"))
    return load(MODEL), load(str(path)), eps


def test_compression_is_smaller(compressed):
    original, small, _ = compressed
    assert small.summary()["neurons"] < original.summary()["neurons"]


def test_compression_is_proven_equivalent(compressed):
    """The proof: every input of the domain, not only the sampled ones."""
    original, small, eps = compressed
    # the compression has another structure: z3 or the structural prover proves it exactly,
    # without a certificate the checker kernel re-checks (in a test suite that is enough)
    assert_equivalent(original, small, BOX, epsilon=max(1e-6, float(eps)), accept_uncertified=True)


@settings(max_examples=200, deadline=None)
@given(x=points_in(BOX))
def test_outputs_agree_on_sampled_points(compressed, x):
    """The same promise, sampled: exact rational outputs differ by at most eps."""
    original, small, eps = compressed
    q = [Fraction(float(v)) for v in x]
    for a, b in zip(evaluate_exact(original, q), evaluate_exact(small, q)):
        assert abs(a - b) <= eps, (x, a, b)
    # and in float64, as your application computes it
    np.testing.assert_allclose(evaluate(small, x[None, :]), evaluate(original, x[None, :]),
                               rtol=0, atol=float(eps) + 1e-9)


def test_a_broken_file_is_caught(compressed):
    """What a regression looks like: one weight of the output layer off by 1e-3."""
    original, small, _ = compressed
    broken = small.copy()
    name = next(n for n, op in reversed(list(broken.items())) if op.kind == "affine")
    op = broken.op(name)
    w = np.array(op.weight, dtype=np.float64)
    w += 1e-3  # every weight into the outputs: visible wherever a unit is active
    broken.replace(name, Affine(w, np.array(op.bias, dtype=np.float64)))
    with pytest.raises(AssertionError, match="replayed exactly"):
        assert_equivalent(original, broken.lint(), BOX, epsilon=1e-6)
