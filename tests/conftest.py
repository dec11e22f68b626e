"""Test isolation: every test gets its own analysis checkpoint cache.

``analyze`` checkpoints decided facts under ``$LEO_VERIFY_CACHE`` (default
``~/.cache/leo_verify``) and resumes from them; a test must not resume from
another test's (or an earlier run's) facts, so each test -- and every
subprocess it starts, which inherits the environment -- uses a fresh folder.
"""
import pytest


@pytest.fixture(autouse=True)
def _isolated_checkpoint_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LEO_VERIFY_CACHE", str(tmp_path_factory.mktemp("leo_cache")))
