"""The proofs folder of a compression, and ``recheck``.

``OUT/proofs/`` holds everything an auditor needs besides the two networks:

``certificate.json``   schema ``leo_verify/kernel/schemas/certificate.schema.json``: the hashes of the
                       original and emitted networks, the domain (exact), every
                       obligation, the stability proofs (interval / LP multipliers
                       / branch-and-bound trees / piece trees), the bound lemmas
                       they use, the exact rewritten weights, and the index of
                       SMT-LIB files;
``claim_*.smt2``       for every claim whose proof needed case splits (branch and
                       bound, per-claim input splits; not the layer-wise piece trees),
                       the claim's negation over the network prefix in exact
                       rationals (QF_LRA; proven bounds of earlier layers asserted
                       as facts; ``If`` for the units a branch-and-bound split),
                       expected answer ``unsat``: ``z3 FILE`` re-checks it with
                       no leo_verify code involved.

The checker kernel (:func:`leo_verify.kernel.recheck.recheck`) re-runs every
obligation from the files alone; :func:`run_smt2` additionally runs z3 on the
``.smt2`` files (a prover, so it lives here and can only *fail* a recheck).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time

import numpy as np

from ..graph import Graph
from ..kernel.exact import fraction_str
from ..kernel.intervals import fraction_lists, node_bounds
from ..util import atomic_write_text, sha256_file
from .certificate import CERT_SCHEMA, Certificate
from .z3enc import claim_query, to_smt2

__all__ = ["write_proofs", "exact_weights_json", "smt2_name", "run_smt2"]


def exact_weights_json(graph: Graph) -> list:
    """The exact weights of every affine node, in graph order, as ``"p/q"`` strings, or
    ``{"from_file": true}`` when they are the float32 numbers every emitted file stores (a layer
    the rewrite left alone; an unrolled convolution would be millions of strings)."""
    out = []
    for name in graph.nodes():
        op = graph.op(name)
        if op.kind == "affine" and op.exact is None and _float32_exact(op):
            out.append({"node": name, "from_file": True})
        elif op.kind == "affine":
            w, b = op.rational()
            out.append({"node": name, "weight": [[fraction_str(v) for v in row] for row in w],
                        "bias": [fraction_str(v) for v in b]})
    return out


def _float32_exact(op) -> bool:
    """True when ``op``'s float64 weights are float32 numbers (a file of either dtype stores them
    unchanged)."""
    return all(np.array_equal(a.astype(np.float32).astype(np.float64), a)
               for a in (op.weight, op.bias))


def smt2_name(nid: str) -> str:
    """A safe, unique file name for the SMT-LIB file of neuron ``nid``.

    Node names come from the model file (TensorFlow exports use ``/``; a hostile
    file may use ``..``, ``:``, NUL, 300 characters or any unicode): only
    ``[A-Za-z0-9_-]`` of the name is kept (at most 60 characters), followed by
    a hash of the whole id, so distinct ids never share a file.
    """
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", nid).strip("_")[:60] or "unit"
    digest = hashlib.sha256(nid.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"claim_{stem}_{digest}.smt2"


def _layer_of(graph: Graph) -> dict:
    return {nid: (relu, graph.args(relu)[0], i) for relu, op in graph.relus()
            for i, nid in enumerate(op.neurons)}


def _smt2_files(folder: str, original: Graph, cert: Certificate, *, deadline: float | None = None,
                skipped: list | None = None) -> dict:
    """Write one SMT-LIB file per claim (and box) proven by branching; returns obligation id -> file.

    ``deadline`` (``time.monotonic()``, ``compress --budget``): files not started by then are
    not written (their obligation ids go to ``skipped``).  They are an independent re-check
    for an SMT solver, not part of the proof ``recheck`` verifies; the index lists the files
    written (as with ``--no-smt2``, which writes none).
    """
    from .certificate import stability_id
    where = _layer_of(original)
    order = [r for r, _ in original.relus()]
    regions = cert.data["regions"]
    files = {}
    for k, reg in enumerate(regions):
        proven = {c["neuron"]: c for c in reg["claims"] if c["status"] == "proven"}
        box_q = reg["box"].exact_bounds()
        for nid, c in proven.items():
            # interval and LP-dual claims are linear certificates checked exactly by
            # recheck; the claims that needed case splits get an SMT-LIB statement.
            # Not the crown-split ones: their proof is the piece tree (recomputed by
            # recheck), and their exact-ReLU statements are deep ACAS Xu queries
            # (~0.6 MB each, 130 per network) that z3 does not close anyway
            oid = stability_id(nid, k, len(regions))
            if c["method"] in ("interval", "lp-dual", "crown-split") or nid not in where or \
                    not any(o.id == oid for o in cert.obligations):
                continue
            if deadline is not None and time.monotonic() >= deadline:
                if skipped is not None:
                    skipped.append(oid)
                continue
            relu, pre, row = where[nid]
            earlier = set(order[:order.index(relu)])
            phase = {n: p["claim"] for n, p in proven.items() if where.get(n, ("",))[0] in earlier}
            lem = {n: v for n, v in reg["lemma_bounds"].items() if n != pre}
            b = node_bounds(original, box_q, lemmas=lem, phase=phase, upto=pre)
            s = claim_query(original, box_q, bounds=fraction_lists(b), phase=phase, pre=pre, row=row,
                            claim=c["claim"], relax=c["method"] == "lp-dual")
            name = smt2_name(nid if len(regions) == 1 else f"{nid}@{k}")
            text = to_smt2(s, comment=f"leo_verify obligation {oid}: the negation of "
                                      f"'{nid} is stably {c['claim']}' over the "
                                      f"{'domain' if len(regions) == 1 else f'box {k} of the domain'}; "
                                      f"{'triangle relaxation (no case split)' if c['method'] == 'lp-dual' else 'exact ReLU semantics'}",
                           expect="unsat")
            atomic_write_text(os.path.join(folder, name), text)
            files[oid] = name
    return files


def write_proofs(out_dir: str, cert: Certificate, *, original: Graph, compressed: Graph,
                 model_sha: str | None, emitted: dict, smt2: bool = True, deadline: float | None = None,
                 smt2_skipped: list | None = None) -> str:
    """Write ``out_dir/proofs/`` (see the module docstring); returns the folder.

    ``deadline`` / ``smt2_skipped``: see :func:`_smt2_files`.
    """
    from ..errors import DataError
    from ..kernel.binding import plain_name
    if not isinstance(model_sha, str) or len(model_sha) != 64:
        raise DataError("a certificate needs the sha256 of the original model file")
    bad = [n for n in emitted if not plain_name(n) or not n.startswith("compressed.")]
    if bad:
        raise DataError(f"emitted file {bad[0]!r}: certificates name emitted files by plain "
                        f"'compressed.<ext>' names inside the output folder")
    folder = os.path.join(out_dir, "proofs")
    os.makedirs(folder, exist_ok=True)
    files = _smt2_files(folder, original, cert, deadline=deadline, skipped=smt2_skipped) if smt2 else {}
    for ob in cert.obligations:
        ob.smt2 = files.get(ob.id)
    regions = []
    for reg in cert.data["regions"]:
        lo, hi = reg["box"].exact_bounds()
        regions.append({"lower": [fraction_str(v) for v in lo], "upper": [fraction_str(v) for v in hi],
                        "claims": reg["claims"], "lemmas": reg["lemmas"], "pieces": reg.get("pieces"),
                        "trees": reg.get("trees") or {}})
    doc = {
        "schema": CERT_SCHEMA,
        "verdict": cert.verdict,
        "original": {"sha256": model_sha},
        "emitted": {name: {"sha256": sha256_file(os.path.join(out_dir, name))} for name in emitted},
        "regions": regions,
        "obligations": [o.to_json() for o in cert.obligations],
        "epsilon": cert.epsilon,
        "smt2": [{"file": f, "obligation": k, "expected": "unsat"} for k, f in sorted(files.items())],
        "exact_weights": exact_weights_json(compressed),
    }
    atomic_write_text(os.path.join(folder, "certificate.json"), json.dumps(doc, indent=1) + "\n")
    return folder


def run_smt2(out_dir: str, doc: dict, *, timeout: float = 60.0) -> tuple[dict, dict]:
    """z3 on every SMT-LIB file of the index: ``({"smt2:<file>": (ok, why)}, {answer: count})``.

    ``unsat`` is expected; ``unknown`` (timeout) proves nothing either way and
    leaves the exact certificate to decide; ``sat`` fails the recheck.  File
    names are taken from the validated index and must be plain names.
    """
    import z3

    from ..kernel.binding import plain_name
    results, counts = {}, {}
    folder = os.path.join(out_dir, "proofs")
    for ent in doc.get("smt2", []):
        name = ent["file"]
        if not plain_name(name) or not os.path.isfile(os.path.join(folder, name)):
            results[f"smt2:{name}"] = (False, "missing or not a plain file name")
            continue
        s = z3.Solver()
        s.set("timeout", int(timeout * 1000))
        t = time.monotonic()
        try:
            s.from_file(os.path.join(folder, name))
        except z3.Z3Exception as e:
            results[f"smt2:{name}"] = (False, f"z3 cannot read it: {e}")
            continue
        ans = str(s.check())
        results[f"smt2:{name}"] = (ans != "sat", f"{ans} in {time.monotonic() - t:.1f} s")
        counts[ans] = counts.get(ans, 0) + 1
    return results, counts
