"""The certificate of a compression: obligations, verdict, proof files, re-check.

Obligations (each ``proven``, ``open`` or ``refuted``):

``stability:<neuron>``  the claim "pre-activation <= 0 (inactive) / >= 0 (active)
                        on the domain", re-proved exactly (:mod:`.claims`);
``rewrite:<layer>``     each ReLU layer of the compressed network computes, on the
                        domain, exactly the pre-activations of units of the original
                        (:mod:`.identity`), and ``rewrite:output`` the same outputs;
``rounding:<file>``     every weight in the emitted file is within half an ulp of
                        the exact rewritten weight (:mod:`.deviation`);
``deviation:<file>``    ``|emitted(x) - original(x)| <= eps`` on the domain, eps
                        computed exactly (:mod:`.deviation`); proven when the
                        rewrite is;
``fuzz:<file>``         a falsification campaign (:mod:`.fuzz`) found no point where the
                        emitted network differs from the original by more than eps
                        (a candidate is replayed in exact arithmetic; one beyond
                        eps *refutes* the certificate).  Not a proof; it can only fail.

The verdict is ``certified`` only when every obligation is ``proven`` (fuzz:
``passed``).  Anything else is ``not certified`` with the open list.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Mapping

import numpy as np

from ..domain import Box
from ..graph import Graph
from ..semantics import evaluate_exact, to_fractions
from ..kernel.deviation import check_rounding, deviation_bound
from ..kernel.exact import fraction_str
from ..kernel.binding import float_up as _float_up
from ..kernel.identity import check_identity
from .claims import proven_on_every_box
# one spelling of the schema id and the verdict words: the checker kernel's
from ..kernel.recheck import CERT_SCHEMA, CERTIFIED, NOT_CERTIFIED

__all__ = ["Obligation", "Certificate", "certify", "stability_id", "CERT_SCHEMA", "CERTIFIED", "NOT_CERTIFIED"]



@dataclass
class Obligation:
    id: str
    kind: str
    statement: str
    status: str = "open"  # proven | open | refuted | passed (fuzz)
    method: str = ""
    time: float = 0.0
    detail: str = ""
    smt2: str | None = None

    def to_json(self) -> dict:
        d = {"id": self.id, "kind": self.kind, "statement": self.statement, "status": self.status,
             "method": self.method, "time": round(self.time, 3), "detail": self.detail}
        if self.smt2:
            d["smt2"] = self.smt2
        return d

    @property
    def ok(self) -> bool:
        return self.status in ("proven", "passed")


@dataclass
class Certificate:
    obligations: list = field(default_factory=list)
    epsilon: dict = field(default_factory=dict)  # file -> exact eps string
    fuzz: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # proof data (claims, lemmas, identity)
    timings: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return CERTIFIED if self.obligations and all(o.ok for o in self.obligations) else NOT_CERTIFIED

    @property
    def open(self) -> list:
        return [o for o in self.obligations if not o.ok]

    def counts(self) -> dict:
        c = {"total": len(self.obligations), "proven": 0, "passed": 0, "open": 0, "refuted": 0}
        for o in self.obligations:
            c[o.status] = c.get(o.status, 0) + 1
        return c

    def summary(self) -> dict:
        """The report's ``certificate`` section (small; the proofs are in the proofs folder)."""
        return {"verdict": self.verdict, "obligations": self.counts(),
                "open": [{"id": o.id, "status": o.status, "detail": o.detail} for o in self.open],
                "epsilon": {k: {"exact": v, "float": _float_up(Fraction(v))} for k, v in self.epsilon.items()},
                "fuzz": self.fuzz, "timings": {k: round(v, 3) for k, v in self.timings.items()}}


def _statement(nid: str, claim: str) -> str:
    rel = "<= 0" if claim == "inactive" else ">= 0"
    return f"pre-activation of {nid} {rel} for every input in the domain ({'stably ' + claim})"


def _infer_dtype(g: Graph) -> str:
    for _, op in g.items():
        if op.kind == "affine":
            for a in (op.weight, op.bias):
                if not np.all(a.astype(np.float32).astype(np.float64) == a):
                    return "float64"
    return "float32"


def stability_id(nid: str, k: int, n_boxes: int) -> str:
    """The obligation id of ``nid``'s claim on box ``k`` (``@k`` only for unions of boxes)."""
    return f"stability:{nid}" if n_boxes == 1 else f"stability:{nid}@{k}"


def certify(original: Graph, compressed: Graph, box, claims: Mapping[str, str], *,
            emitted: Mapping[str, Graph] | None = None, dtype: str | None = None,
            time_limit: float = 5.0, max_nodes: int = 2000, fuzz: bool = True, seed: int = 0,
            fuzz_points: int = 10000, witnesses=None, progress=None, claims_result=None,
            pieces_budget: float = 300.0, deadline: float | None = None) -> Certificate:
    """Certify that ``compressed`` equals ``original`` on ``box``.

    Parameters
    ----------
    original, compressed : the networks (``compressed`` with its exact rewritten weights).
    box : a :class:`Box` or a :class:`~leo_verify.domain.Domain` (a union of boxes: every
        claim is proven on every box, each box with its own proof data).
    claims : neuron id -> ``"active"``/``"inactive"``: the stability facts the
        rewrite used (all of them are re-proved; nothing else is trusted).
    emitted : file name -> the network *read back* from each emitted file.
    dtype : the emitted files' float type (default: inferred from their weights).
    time_limit, max_nodes : per-claim branch-and-bound budget.
    pieces_budget : seconds for piece-wise proofs (networks with <= 16 inputs),
        see :func:`~.pieces.prove_claims_with_pieces`.
    fuzz, seed, fuzz_points, witnesses : the falsification campaign (points shared
        among the boxes).
    deadline : a ``time.monotonic()`` value (``compress --budget``): the falsification
        campaign stops by then (it is evidence, not proof: a shorter one only sees fewer
        points); the proof obligations run to the end whatever the clock says, since an
        obligation cut short would leave the certificate open.
    claims_result : proofs of ``claims`` already made (by ``compress`` before
        rewriting): one ``ClaimsResult`` or a list, one per box.
    """
    from ..domain import as_domain
    domain = as_domain(box)
    boxes = domain.boxes
    cert = Certificate()
    t0 = time.monotonic()
    given = claims_result if isinstance(claims_result, list) else [claims_result] * len(boxes)
    results = []
    for k, b in enumerate(boxes):
        res = given[k] if k < len(given) else None
        if res is None or not all(res.proofs.get(n) is not None and res.proofs[n].claim == c
                                  for n, c in claims.items()):
            # the same prover compress uses (piece trees for networks with few inputs)
            from .pieces import prove_claims_with_pieces
            res = prove_claims_with_pieces(original, b, claims, time_limit=time_limit, max_nodes=max_nodes,
                                           pieces_budget=pieces_budget / len(boxes), progress=progress)
        results.append(res)
        for nid in claims:
            p = res.proofs[nid]
            cert.obligations.append(Obligation(
                stability_id(nid, k, len(boxes)), "stability",
                _statement(nid, p.claim) + (f" (box {k})" if len(boxes) > 1 else ""), p.status, p.method,
                p.time, p.reason if p.status != "proven" else (f"bound {p.bound}" if p.bound else "")))
    cert.timings["stability"] = sum(getattr(r, "time", 0.0) or 0.0 for r in results) \
        if claims_result is not None else time.monotonic() - t0
    # per box: all claim proofs (for recheck), lemmas, piece trees
    cert.data["regions"] = [{"box": b, "claims": [p.to_json() for p in r.proofs.values()], "lemmas": r.lemmas,
                             "pieces": getattr(r, "pieces", None), "trees": getattr(r, "trees", {}),
                             "lemma_bounds": r.lemma_bounds}  # lemma_bounds: for the SMT-LIB files (not JSON)
                            for b, r in zip(boxes, results)]
    proven = proven_on_every_box(results, claims)

    t1 = time.monotonic()
    ident = check_identity(original, compressed, proven)
    cert.timings["rewrite"] = time.monotonic() - t1
    for layer, info in ident.layers.items():
        cert.obligations.append(Obligation(
            f"rewrite:{layer}", "rewrite",
            f"every unit of compressed layer {layer!r} has, on the domain, the pre-activation of a unit "
            f"of the original", info["status"], "exact affine forms", detail=info["detail"]))
    cert.obligations.append(Obligation(
        "rewrite:output", "rewrite", "the compressed network's outputs equal the original's on the domain "
        "(exact rationals)", ident.output.get("status", "open"), "exact affine forms",
        detail=ident.output.get("detail", "")))
    cert.data["identity"] = ident.to_json()

    for name, g in (emitted or {}).items():
        t2 = time.monotonic()
        dt = dtype or _infer_dtype(g)
        ok, why = check_rounding(compressed, g, dtype=np.float32 if dt == "float32" else np.float64)
        cert.obligations.append(Obligation(
            f"rounding:{name}", "rounding", f"every weight of {name} is within half an ulp ({dt}) of the "
            f"exact rewritten weight", "proven" if ok else "open", "exact comparison", time.monotonic() - t2,
            why))
        eps, why = None, ""
        for b in boxes:  # eps on the union: the largest per box
            e, why = deviation_bound(compressed, g, b.exact_bounds())
            if e is None:
                eps = None
                break
            eps = e if eps is None else max(eps, e)
        cert.timings[f"deviation:{name}"] = time.monotonic() - t2
        if eps is not None:
            cert.epsilon[name] = fraction_str(eps)
        status = "proven" if eps is not None and ident.proven else "open"
        cert.obligations.append(Obligation(
            f"deviation:{name}", "deviation",
            f"|{name}(x) - original(x)| <= eps for every input in the domain (real arithmetic, "
            f"the file's weights)", status, "exact error propagation",
            detail=(f"eps = {_float_up(eps):.3e}" if eps is not None else why) +
                   ("" if ident.proven else "; rests on the rewrite identity, which is open")))
        if fuzz:
            t3 = time.monotonic()
            budget = None
            if deadline is not None:  # share what is left among the files and boxes still to fuzz
                files_left = len(emitted) - list(emitted).index(name)
                # half of what is left: the SMT-LIB statements written after this share the rest
                budget = max(_FUZZ_MIN_SECONDS, 0.5 * (deadline - t3) / (files_left * len(boxes)))
            runs = [_fuzz(original, g, b, name, eps, seed=seed + k, points=max(500, fuzz_points // len(boxes)),
                          witnesses=witnesses, budget=budget) for k, b in enumerate(boxes)]
            obs = [o for o, _ in runs]
            worst = next((o for o in obs if o.status == "refuted"), None) or next(
                (o for o in obs if o.status == "open"), None) or obs[0]
            if len(boxes) > 1 and worst.status == "passed":
                worst.detail = f"{len(boxes)} boxes: " + "; ".join(o.detail for o in obs[:3]) + \
                    (" ..." if len(obs) > 3 else "")
            cert.obligations.append(worst)
            cert.obligations[-1].time = time.monotonic() - t3
            cert.fuzz[name] = _fuzz_summary([sm for _, sm in runs], boxes)
            cert.timings[f"fuzz:{name}"] = time.monotonic() - t3
    cert.timings["total"] = time.monotonic() - t0
    return cert


def _fuzz_summary(summaries: list, boxes) -> dict:
    """One fuzz summary over all boxes."""
    if len(summaries) == 1:
        return summaries[0]
    out = {"max_diff_float64": max(s["max_diff_float64"] for s in summaries),
           "points": sum(s["points"] for s in summaries), "seed": summaries[0]["seed"], "boxes": len(boxes)}
    cx = next((s for s in summaries if "counterexample" in s), None)
    if cx is not None:
        out["counterexample"] = cx["counterexample"]
    return out


#: a budget that is spent still leaves the campaign this long per file and box
_FUZZ_MIN_SECONDS = 0.5


def _fuzz(original: Graph, g: Graph, box: Box, name: str, eps: Fraction | None, *, seed, points,
          witnesses, budget=None) -> tuple[Obligation, dict]:
    from .fuzz import falsify
    r = falsify(original, g, box, seed=seed, points=points, extra=witnesses, budget=budget)
    ob = Obligation(f"fuzz:{name}", "fuzz",
                    f"no input found where {name} and the original differ by more than eps",
                    "passed", "falsification campaign (corners, edges, uniform, ReLU boundaries, "
                              "hypothesis, gradient ascent)")
    summary = {"max_diff_float64": float(r.max_diff), "points": int(r.evaluated), "seed": seed}
    if r.point is not None and eps is not None:
        # the float64 difference includes evaluation rounding: replay exactly
        px = to_fractions([float(v) for v in r.point])
        fo = evaluate_exact(original, px)
        go = evaluate_exact(g, px)
        exact = max((abs(a - b) for a, b in zip(fo, go)), default=Fraction(0))
        summary["max_diff_exact_at_worst_point"] = fraction_str(exact)
        if exact > eps:
            ob.status = "refuted"
            ob.detail = (f"COUNTEREXAMPLE: at x = {[float(v) for v in r.point]} the outputs differ by "
                         f"{float(exact):.6g} > eps = {float(eps):.6g} (exact arithmetic)")
            summary["counterexample"] = [float(v) for v in r.point]
    elif eps is None:
        ob.status = "open"
        ob.detail = "no eps to compare with"
    ob.detail = ob.detail or (f"largest difference seen {r.max_diff:.3e} (float64) over {r.evaluated} points"
                              + (" (campaign cut short by the budget)" if r.stopped else ""))
    return ob, summary
