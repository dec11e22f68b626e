"""Runs last (file name order): no test of the suite left an output-folder ``.lock`` or an
empty folder behind (a refused ``compress`` must not create its OUT/).

Both sweeps walk the session's whole temporary tree.  Folders a test makes empty on
purpose are listed in :data:`DELIBERATE`.
"""
from __future__ import annotations

import os

#: empty folders tests create on purpose (e.g. a folder passed where a model file is expected)
DELIBERATE = {"dir.onnx"}


def test_no_lock_file_or_empty_folder_is_left_by_the_suite(tmp_path_factory):
    root = str(tmp_path_factory.getbasetemp())
    # pytest keeps its own .lock in the base folder itself
    stale = [os.path.join(d, ".lock") for d, _, files in os.walk(root) if ".lock" in files and d != root]
    assert not stale, stale[:5]
    # below each test's own tmp_path (which may be empty when a test wrote nothing)
    empty = [d for d, dirs, files in os.walk(root)
             if not dirs and not files and os.path.dirname(d) != root
             and os.path.basename(d) not in DELIBERATE]
    assert not empty, empty[:5]
