"""Stability over a union of boxes: analyse each box, then combine the facts.

A neuron is stable on the union only if it is stable *with the same
direction* on every box.  Combining per-box facts (each sound on its box):

* the same stable status on every box -> that status (its proven bounds are
  the hull of the per-box bounds, its evidence the strongest one used);
* otherwise, if some box gives a positive witness and some box a negative
  one -> ``unstable`` (the witnesses are exact points of the union);
* otherwise ``unknown`` (e.g. active on one box, undecided on another).
"""
from __future__ import annotations

from ..domain import Domain
from .facts import STABLY_ACTIVE, STABLY_INACTIVE, UNKNOWN, UNSTABLE, Facts, NeuronFact

__all__ = ["merge_facts", "analyze_union"]

_EVIDENCE_ORDER = ("interval", "symbolic", "lp", "milp", "witness", "none")


def _first(values):
    return next((v for v in values if v is not None), None)


def merge_facts(per_box: list, *, meta: dict | None = None) -> Facts:
    """The facts on the union of the boxes ``per_box`` (one :class:`Facts` each, same network)."""
    first = per_box[0]
    out = {}
    for nid, f0 in first.neurons.items():
        fs = [f.neurons[nid] for f in per_box]
        statuses = {f.status for f in fs}
        pos = _first(f.witness_pos for f in fs)
        neg = _first(f.witness_neg for f in fs)
        lows = [f.lower for f in fs]
        ups = [f.upper for f in fs]
        fact = NeuronFact(nid, f0.layer, lower=None if None in lows else min(lows),
                          upper=None if None in ups else max(ups), witness_pos=pos, witness_neg=neg,
                          stats={"boxes": {s: sum(1 for f in fs if f.status == s) for s in sorted(statuses)}})
        if len(statuses) == 1 and statuses <= {STABLY_ACTIVE, STABLY_INACTIVE}:
            fact.status = fs[0].status
            fact.evidence = max((f.evidence for f in fs), key=_EVIDENCE_ORDER.index)
        elif pos is not None and neg is not None:
            fact.status, fact.evidence = UNSTABLE, "witness"
        else:
            fact.status, fact.evidence = UNKNOWN, "none"
        out[nid] = fact
    return Facts(out, complete=all(f.complete for f in per_box), meta=dict(meta or {}))


def analyze_union(graph, domain: Domain, *, analyze, progress: bool = False, budget: float | None = None,
                  **options) -> Facts:
    """:func:`~leo_verify.analysis.analyze` on each box of ``domain``, merged.

    ``budget`` (seconds, for all boxes) is shared out: each box gets what is
    left divided by the boxes still to do.  A progress bar runs over the boxes.
    """
    import time
    t0 = time.monotonic()
    per_box = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(domain.boxes), desc="boxes", unit="box", leave=False)
    try:
        for k, box in enumerate(domain.boxes):
            left = None if budget is None else max(0.0, budget - (time.monotonic() - t0)) / (len(domain.boxes) - k)
            per_box.append(analyze(graph, box, budget=left, progress=False, **options))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    meta = dict(per_box[0].meta)
    meta["domain"] = domain.to_json()
    meta["boxes"] = [{"complete": f.complete, "counts": f.counts(),
                      "stopped": f.meta.get("stopped")} for f in per_box]
    meta["timings"] = {"wall": round(time.monotonic() - t0, 3)}
    return _opposite_witnesses(graph, domain, merge_facts(per_box, meta=meta), per_box)


def _opposite_witnesses(graph, domain: Domain, facts: Facts, per_box: list) -> Facts:
    """A unit stable in opposite directions on two boxes is unstable on the union: find the
    exact witnesses of both signs at the boxes' centres (re-evaluated exactly)."""
    from fractions import Fraction

    from ..semantics import evaluate_exact_all
    todo = [nid for nid, f in facts.neurons.items() if f.status == UNKNOWN and
            {pf.neurons[nid].status for pf in per_box} >= {STABLY_ACTIVE, STABLY_INACTIVE}]
    if not todo:
        return facts
    where = {nid: (graph.args(relu)[0], i) for relu, op in graph.relus() for i, nid in enumerate(op.neurons)}
    for box in domain.boxes:
        centre = [float(v) for v in (box.lower + box.upper) / 2]
        values = evaluate_exact_all(graph, [Fraction(v) for v in centre])
        for nid in todo:
            pre, i = where[nid]
            z = values[pre][i]
            f = facts.neurons[nid]
            if z > 0 and f.witness_pos is None:
                f.witness_pos = centre
            elif z < 0 and f.witness_neg is None:
                f.witness_neg = centre
    for nid in todo:
        f = facts.neurons[nid]
        if f.witness_pos is not None and f.witness_neg is not None:
            f.status, f.evidence = UNSTABLE, "witness"
    return facts
