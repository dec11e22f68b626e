"""Input domains: boxes (per-input lower/upper bounds) and unions of boxes.

A domain spec is one of

* ``box:LO,HI``            every input in ``[LO, HI]``;
* ``PATH.json``            ``{"lower": [...], "upper": [...]}``, or a list of such
                           objects (a union of boxes; also ``{"boxes": [...]}``);
* ``PATH.vnnlib``          the input constraints of a VNNLIB property (a box,
                           or a disjunction of boxes);
* a :class:`Box` or ``(lower, upper)`` pair in the API.

Every check names the offending index and values.  JSON files over
:data:`leo_verify.io.limits.MAX_JSON_BYTES` are refused before parsing; wrong
types (strings, lists, null, booleans), NaN/Infinity, integers beyond float64,
missing keys, length mismatches and lower > upper are :class:`DomainError`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .box import Box
from .errors import DomainError, InputFileError
from .util import read_json

__all__ = ["Box", "Domain", "as_domain", "parse_domain", "parse_union", "load_domains"]


@dataclass(frozen=True, eq=False)
class Domain:
    """A finite union of boxes of the same dimension (one box is the common case).

    A neuron is stable on the union only if it is stable *with the same
    direction* on every box; proofs are made and checked box by box.
    """

    boxes: tuple
    source: str = ""

    def __post_init__(self):
        boxes = tuple(self.boxes)
        if not boxes or not all(isinstance(b, Box) for b in boxes):
            raise DomainError(f"domain {self.source}: expected one or more boxes")
        n = boxes[0].size
        for k, b in enumerate(boxes):
            if b.size != n:
                raise DomainError(f"domain {self.source}: box {k} has {b.size} inputs, box 0 has {n}")
        object.__setattr__(self, "boxes", boxes)

    @property
    def size(self) -> int:
        return self.boxes[0].size

    def __len__(self) -> int:
        return len(self.boxes)

    def check_size(self, n: int, *, what: str = "network") -> "Domain":
        for b in self.boxes:
            b.check_size(n, what=what)
        return self

    def contains(self, x, *, tol: float = 0.0) -> np.ndarray:
        return np.any([b.contains(x, tol=tol) for b in self.boxes], axis=0)

    def hull(self) -> Box:
        """The smallest box containing the union."""
        lo = np.min([b.lower for b in self.boxes], axis=0)
        hi = np.max([b.upper for b in self.boxes], axis=0)
        return Box(lo, hi, source=f"hull of {self.source or 'the domain'}")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points, spread over the boxes in turn (each box gets its share)."""
        k = len(self.boxes)
        parts = [b.sample(n // k + (1 if i < n % k else 0), rng) for i, b in enumerate(self.boxes)]
        return np.concatenate(parts) if parts else np.zeros((0, self.size))

    def exact_boxes(self) -> list:
        return [b.exact_bounds() for b in self.boxes]

    def to_json(self) -> dict:
        """One box: ``{"lower", "upper", "source"}`` (as before); several: ``{"boxes": [...], "source"}``."""
        if len(self.boxes) == 1:
            return {**self.boxes[0].to_json(), "source": self.source or self.boxes[0].source}
        return {"boxes": [{"lower": [float(v) for v in b.lower], "upper": [float(v) for v in b.upper]}
                          for b in self.boxes], "source": self.source}


def as_domain(domain, *, n: int | None = None) -> Domain:
    """A :class:`Domain` from a Box, a Domain, a spec or a list of specs (see :func:`parse_union`)."""
    if isinstance(domain, Domain):
        return domain.check_size(n) if n is not None else domain
    if isinstance(domain, Box):
        return Domain((domain,), source=domain.source).check_size(n) if n is not None else \
            Domain((domain,), source=domain.source)
    return parse_union(domain, n=n)


def parse_union(specs, *, n: int | None = None) -> Domain:
    """A union of boxes: one spec or a list of specs (several ``--domain`` flags), each a
    ``box:LO,HI``, a JSON file (one ``{lower, upper}`` object or a list of them) or a
    VNNLIB file (a box or a disjunction of boxes)."""
    if isinstance(specs, (list, tuple)) and not (len(specs) == 2 and all(
            isinstance(v, (list, tuple, np.ndarray)) and (len(v) == 0 or not isinstance(v[0], str))
            for v in specs)):
        boxes, names = [], []
        for s in specs:
            d = parse_union(s, n=n)
            boxes += d.boxes
            names.append(d.source)
        if not boxes:
            raise DomainError("domain: no box given")
        return Domain(tuple(boxes), source=" | ".join(names))
    boxes = load_domains(specs, n=n)
    src = os.fspath(specs) if isinstance(specs, (str, os.PathLike)) else (boxes[0].source if boxes else "")
    return Domain(tuple(boxes), source=src)


def _parse_box_spec(spec: str, n: int | None) -> Box:
    body = spec[len("box:"):]
    parts = body.split(",")
    if len(parts) != 2:
        raise DomainError(f"domain {spec!r}: expected box:LO,HI")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise DomainError(f"domain {spec!r}: LO and HI must be numbers") from None
    if n is None:
        raise DomainError(f"domain {spec!r}: the number of inputs is needed for box:LO,HI")
    return Box(np.full(n, lo), np.full(n, hi), source=spec)


def load_domains(spec, *, n: int | None = None) -> list[Box]:
    """All boxes of a domain spec (a VNNLIB disjunction gives several)."""
    if isinstance(spec, Box):
        boxes = [spec]
    elif isinstance(spec, (tuple, list)) and len(spec) == 2 and not isinstance(spec, str):
        boxes = [Box(spec[0], spec[1], source="api")]
    elif isinstance(spec, (str, os.PathLike)):
        s = os.fspath(spec)
        if s.startswith("box:"):
            boxes = [_parse_box_spec(s, n)]
        elif s.lower().endswith(".json"):
            data = read_json(s, what="domain file", error=DomainError)
            if isinstance(data, dict) and "boxes" in data:
                data = data["boxes"]
            if isinstance(data, list):  # a union: a list of {lower, upper} objects
                if not data:
                    raise DomainError(f"domain file {s!r}: the list of boxes is empty")
                from .io.vnnlib import MAX_BOXES
                if len(data) > MAX_BOXES:
                    raise DomainError(f"domain file {s!r}: {len(data)} boxes, more than {MAX_BOXES}")
                boxes = [Box.from_json(d, source=f"{s} box {k}") for k, d in enumerate(data)]
            else:
                boxes = [Box.from_json(data, source=s)]
        elif s.lower().endswith(".vnnlib"):
            from .io.vnnlib import read_vnnlib
            boxes = read_vnnlib(s).boxes
        else:
            raise DomainError(f"domain {s!r}: expected box:LO,HI, a .json or a .vnnlib file")
    else:
        raise DomainError(f"domain: cannot interpret {type(spec).__name__} as a domain")
    if n is not None:
        for b in boxes:
            b.check_size(n)
    return boxes


def parse_domain(spec, *, n: int | None = None) -> Box:
    """A single box; a disjunction of several boxes is an error (for now)."""
    boxes = load_domains(spec, n=n)
    if len(boxes) != 1:
        raise DomainError(f"domain {spec!s}: a disjunction of {len(boxes)} boxes is not supported "
                          f"here; analyse each box separately")
    return boxes[0]
