"""Runs last (file name order): no test of the suite left an output-folder ``.lock`` behind.

(That a refused ``compress`` creates no empty OUT/ is tested where the refusal happens,
``tests/test_cli_house.py``.)
"""
from __future__ import annotations

import os


def test_no_lock_file_is_left_by_the_suite(tmp_path_factory):
    root = str(tmp_path_factory.getbasetemp())
    # pytest keeps its own .lock in the base folder itself
    stale = [os.path.join(d, ".lock") for d, _, files in os.walk(root) if ".lock" in files and d != root]
    assert not stale, stale[:5]
