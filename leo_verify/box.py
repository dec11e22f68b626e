"""An input box: per-input lower/upper float64 bounds (:class:`Box`).

Its own small module so that the readers (``io/vnnlib``) and :mod:`leo_verify.domain`
(which parses domain specs, reading VNNLIB files through ``io/vnnlib``) both use
it without importing each other; :mod:`leo_verify.domain` re-exports it.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .errors import DomainError

__all__ = ["Box"]


@dataclass(frozen=True, eq=False)
class Box:
    """``{x : lower <= x <= upper}`` with float64 bounds (taken exactly as rationals)."""

    lower: np.ndarray
    upper: np.ndarray
    source: str = ""

    def __post_init__(self):
        where = f" ({self.source})" if self.source else ""
        try:
            lo = np.array(self.lower, dtype=np.float64, copy=True).ravel()
            hi = np.array(self.upper, dtype=np.float64, copy=True).ravel()
        except (TypeError, ValueError, OverflowError) as exc:
            raise DomainError(f"domain{where}: bounds must be numbers ({exc})") from None
        if lo.shape != hi.shape:
            raise DomainError(f"domain{where}: {lo.size} lower bounds but {hi.size} upper bounds")
        if lo.size == 0:
            raise DomainError(f"domain{where}: no bounds given")
        # vectorised: a box may have 10^6 inputs; the loop only runs up to the first bad one
        bad = ~(np.isfinite(lo) & np.isfinite(hi)) | ~(lo <= hi)
        for i in np.flatnonzero(bad)[:1].tolist():
            if not (math.isfinite(lo[i]) and math.isfinite(hi[i])):
                raise DomainError(f"domain{where}: input {i} has non-finite bounds "
                                  f"[{float(lo[i])}, {float(hi[i])}]")
            if lo[i] > hi[i]:
                raise DomainError(f"domain{where}: input {i} has lower {float(lo[i])!r} > "
                                  f"upper {float(hi[i])!r}")
        lo.setflags(write=False)
        hi.setflags(write=False)
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)

    @property
    def size(self) -> int:
        return int(self.lower.size)

    def check_size(self, n: int, *, what: str = "network") -> "Box":
        if self.size != n:
            where = f" ({self.source})" if self.source else ""
            raise DomainError(f"domain{where} has {self.size} inputs but the {what} has {n}")
        return self

    def contains(self, x, *, tol: float = 0.0) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        return np.all((x >= self.lower - tol) & (x <= self.upper + tol), axis=1)

    def clip(self, x) -> np.ndarray:
        return np.clip(x, self.lower, self.upper)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.lower + rng.random((n, self.size)) * (self.upper - self.lower)

    def exact_bounds(self) -> tuple[list, list]:
        return ([Fraction(float(v)) for v in self.lower], [Fraction(float(v)) for v in self.upper])

    def to_json(self) -> dict:
        return {"lower": [float(v) for v in self.lower], "upper": [float(v) for v in self.upper],
                "source": self.source}

    @classmethod
    def from_json(cls, data, *, source: str = "") -> "Box":
        source = str(source)
        where = f"domain {source}" if source else "domain"
        if not isinstance(data, dict) or "lower" not in data or "upper" not in data:
            raise DomainError(f"{where}: expected an object with 'lower' and 'upper' lists")
        lo, hi = data["lower"], data["upper"]
        for key, vals in (("lower", lo), ("upper", hi)):
            if not isinstance(vals, list):
                raise DomainError(f"{where}: {key!r} must be a list of numbers, "
                                  f"got {type(vals).__name__}")
            for i, v in enumerate(vals):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise DomainError(f"{where}: {key}[{i}] = {_short(v)} is not a number")
                if isinstance(v, int) and abs(v) > sys.float_info.max:
                    raise DomainError(f"{where}: {key}[{i}] = {_short(v)} is not finite in "
                                      f"float64")
        return cls(np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64),
                   source=source or str(data.get("source", "")))


def _short(v, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "..."
