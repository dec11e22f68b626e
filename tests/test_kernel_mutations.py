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
