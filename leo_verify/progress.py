"""One progress display for the long phases (analysis, exact claims, certification, recheck, check).

:func:`phase` is a context manager yielding an object with ``update(n=1,
**info)``: a ``tqdm`` bar on stderr when stderr is a terminal and progress is
enabled; otherwise nothing while it runs and one summary line at the end
(``leo-verify: <phase>: <done>/<total> in 12.3 s``) when the phase took more
than :data:`QUIET_SECONDS`, so logs of long runs still say where time went.
``--no-progress`` (``enabled=False``) silences both.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager

__all__ = ["phase", "enabled_for", "QUIET_SECONDS"]

#: phases shorter than this print no summary line when there is no bar
QUIET_SECONDS = 2.0


def enabled_for(no_progress: bool = False) -> bool:
    """The default: progress unless ``--no-progress``."""
    return not no_progress


class _Phase:
    def __init__(self, name: str, total: int | None, enabled: bool, unit: str):
        self.name, self.total, self.unit = name, total, unit
        self.done = 0
        self.info = ""
        self.t0 = time.monotonic()
        self.bar = None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=name, unit=unit, leave=False, file=sys.stderr)

    def update(self, n: int = 1, **info) -> None:
        self.done += n
        if info:
            self.info = ", ".join(f"{k} {v}" for k, v in info.items())
        if self.bar is not None:
            self.bar.update(n)
            if info:
                self.bar.set_postfix_str(self.info)

    def close(self) -> None:
        dt = time.monotonic() - self.t0
        if self.bar is not None:
            self.bar.close()
        if self.enabled and dt >= QUIET_SECONDS:
            count = f"{self.done}/{self.total} {self.unit}" if self.total is not None else f"{self.done} {self.unit}"
            sys.stderr.write(f"leo-verify: {self.name}: {count} in {dt:.1f} s"
                             + (f" ({self.info})" if self.info else "") + "\n")


@contextmanager
def phase(name: str, *, total: int | None = None, enabled: bool = True, unit: str = "steps"):
    """A progress display for one phase (see the module docstring)."""
    p = _Phase(name, total, enabled, unit)
    try:
        yield p
    finally:
        p.close()
