"""Stability facts: neuron id -> (status, evidence, proven bounds, witnesses).

Analyses return a :class:`Facts`; they never mutate the graph.  The JSON form
is stable (sorted keys, neurons in graph order) so two runs diff cleanly.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ..errors import DataError, InputFileError

__all__ = ["NeuronFact", "Facts", "STATUSES", "EVIDENCE", "SCHEMA", "canonical_facts"]

SCHEMA = "leo_verify.facts/1"

STABLY_ACTIVE = "stably_active"
STABLY_INACTIVE = "stably_inactive"
UNSTABLE = "unstable"
UNKNOWN = "unknown"
STATUSES = (STABLY_ACTIVE, STABLY_INACTIVE, UNSTABLE, UNKNOWN)
#: what decided a status.  "witness" decides only `unstable`.
EVIDENCE = ("interval", "symbolic", "lp", "milp", "witness", "none")


def canonical_facts(data: Mapping) -> dict:
    """Facts JSON without what describes the run rather than the network: the
    timing fields (``meta.timings``, each query's ``time``; see
    :data:`leo_verify.util.TIMING_KEYS`) and ``meta.run`` (the checkpoint
    journal used, facts resumed, queries replayed / executed).  Two analyses
    with the same inputs, options (seed) and tool versions give equal
    canonical facts, byte for byte once dumped; resumed runs included."""
    from ..util import strip_timing_fields
    out = strip_timing_fields(dict(data))
    out["meta"] = {k: v for k, v in out.get("meta", {}).items() if k != "run"}
    return out


@dataclass
class NeuronFact:
    """What is known about one ReLU unit over the domain.

    ``lower``/``upper`` are *proven* bounds on the pre-activation (None if
    none was computed).  ``witness_pos``/``witness_neg`` are input points at
    which the pre-activation was re-evaluated exactly and is > 0 / < 0.
    """

    neuron: str
    layer: str
    status: str = UNKNOWN
    evidence: str = "none"
    lower: float | None = None
    upper: float | None = None
    witness_pos: list | None = None
    witness_neg: list | None = None
    stats: dict = field(default_factory=dict)

    @property
    def stable(self) -> bool:
        return self.status in (STABLY_ACTIVE, STABLY_INACTIVE)

    def to_json(self, points: dict | None = None) -> dict:
        """The fact as JSON; with ``points`` (point tuple -> index, filled as met), witness
        points are written as indices into the file's shared ``points`` table: one point
        witnesses many units, and a 3,072-input point is 3,072 numbers."""
        d = {"neuron": self.neuron, "layer": self.layer, "status": self.status,
             "evidence": self.evidence, "lower": self.lower, "upper": self.upper}
        for key in ("witness_pos", "witness_neg"):
            w = getattr(self, key)
            if w is not None and points is not None:
                w = points.setdefault(tuple(w), len(points))
            elif w is not None:
                w = list(w)
            d[key] = w
        d["stats"] = dict(sorted(self.stats.items()))
        return d

    @classmethod
    def from_json(cls, d: Mapping, *, where: str = "facts") -> "NeuronFact":
        try:
            fact = cls(**{k: d[k] for k in ("neuron", "layer")},
                       **{k: d[k] for k in ("status", "evidence", "lower", "upper",
                                            "witness_pos", "witness_neg", "stats") if k in d})
        except (KeyError, TypeError) as exc:
            raise DataError(f"{where}: malformed neuron entry ({exc})") from None
        if fact.status not in STATUSES:
            raise DataError(f"{where}: neuron {fact.neuron!r} has unknown status {fact.status!r}")
        if fact.evidence not in EVIDENCE:
            raise DataError(f"{where}: neuron {fact.neuron!r} has unknown evidence {fact.evidence!r}")
        return fact


def _resolve(d, points: list, where: str):
    """``d`` with witness point indices replaced by the points of the ``points`` table."""
    if not isinstance(d, Mapping):
        return d
    out = dict(d)
    for key in ("witness_pos", "witness_neg"):
        w = out.get(key)
        if isinstance(w, int) and not isinstance(w, bool):
            if not 0 <= w < len(points):
                raise DataError(f"{where}: neuron {out.get('neuron')!r}: {key} refers to point {w}, "
                                f"but the file has {len(points)} points")
            out[key] = points[w]
    return out


@dataclass
class Facts:
    """The result of a stability analysis."""

    neurons: dict  # neuron id -> NeuronFact, in graph order
    complete: bool = True
    meta: dict = field(default_factory=dict)

    def __getitem__(self, nid: str) -> NeuronFact:
        return self.neurons[nid]

    def __iter__(self):
        return iter(self.neurons.values())

    def __len__(self) -> int:
        return len(self.neurons)

    def status(self, nid: str) -> str:
        return self.neurons[nid].status

    def with_status(self, *statuses: str) -> list[str]:
        return [n for n, f in self.neurons.items() if f.status in statuses]

    def counts(self) -> dict:
        out = {s: 0 for s in STATUSES}
        for f in self.neurons.values():
            out[f.status] += 1
        return out

    def counts_by_layer(self) -> dict:
        out: dict = {}
        for f in self.neurons.values():
            out.setdefault(f.layer, {s: 0 for s in STATUSES})[f.status] += 1
        return out

    def stable_map(self) -> dict:
        """neuron id -> "active" | "inactive" for proven-stable neurons only."""
        return {n: ("active" if f.status == STABLY_ACTIVE else "inactive")
                for n, f in self.neurons.items() if f.stable}

    def to_json(self) -> dict:
        points: dict = {}
        neurons = {n: f.to_json(points) for n, f in self.neurons.items()}
        return {
            "schema": SCHEMA,
            "complete": self.complete,
            "meta": self.meta,
            "summary": {"total": len(self.neurons), **self.counts(),
                        "by_layer": self.counts_by_layer()},
            "neurons": neurons,
            "points": [list(p) for p in points],  # witness points, referenced by index
        }

    def dumps(self) -> str:
        data = self.to_json()
        points = data.pop("points")
        text = json.dumps(data, indent=1, sort_keys=False, allow_nan=False)
        # one line per witness point: the table diffs by point, and stays small to read
        rows = ",\n  ".join(json.dumps(p, allow_nan=False) for p in points)
        return text[:-2] + ',\n "points": [' + ("\n  " + rows + "\n " if rows else "") + "]\n}"

    @classmethod
    def from_json(cls, data: Mapping, *, where: str = "facts") -> "Facts":
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            raise DataError(f"{where}: not a leo_verify facts file (schema {SCHEMA!r} expected)")
        neurons = data.get("neurons")
        if not isinstance(neurons, Mapping):
            raise DataError(f"{where}: 'neurons' must be an object")
        points = data.get("points", [])
        if not isinstance(points, list) or not all(isinstance(p, list) for p in points):
            raise DataError(f"{where}: 'points' must be a list of points")
        facts = {n: NeuronFact.from_json(_resolve(d, points, where), where=where)
                 for n, d in neurons.items()}
        return cls(facts, complete=bool(data.get("complete", False)), meta=dict(data.get("meta", {})))

    @classmethod
    def load(cls, path: str) -> "Facts":
        from ..util import read_json
        data = read_json(path, what="facts file", error=DataError)
        return cls.from_json(data, where=f"facts file {path!r}")

    def save(self, path: str) -> None:
        from ..util import atomic_write_text
        atomic_write_text(path, self.dumps() + "\n")
