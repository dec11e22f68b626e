"""The proofs folder of a compression, and ``recheck``.

``OUT/proofs/`` holds everything an auditor needs besides the two networks:

``certificate.json``   schema :data:`~.certificate.CERT_SCHEMA`: the hashes of the
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

:func:`recheck` re-runs every obligation from the files alone: hashes, the
stability proofs (exact weak duality for each stored multiplier vector; exact
CROWN bounds recomputed on every piece of a piece tree), the
rewrite identity, rounding and eps; with ``smt=True`` also z3 on every
``.smt2`` file.
"""
from __future__ import annotations

import json
import os
import time
from fractions import Fraction

import numpy as np

from ..domain import Box
from ..errors import DataError
from ..graph import Affine, Graph
from ..util import atomic_write_text, read_json, sha256_file
from .certificate import CERT_SCHEMA, CERTIFIED, NOT_CERTIFIED, Certificate
from .exact import Q, fraction_str
from .intervals import fraction_lists, node_bounds
from .z3enc import claim_query, to_smt2

__all__ = ["write_proofs", "recheck", "exact_weights_json", "graph_with_exact_weights"]


def exact_weights_json(graph: Graph) -> list:
    """The exact weights of every affine node, in graph order, as ``"p/q"`` strings."""
    out = []
    for name in graph.nodes():
        op = graph.op(name)
        if op.kind == "affine":
            w, b = op.rational()
            out.append({"node": name, "weight": [[fraction_str(v) for v in row] for row in w],
                        "bias": [fraction_str(v) for v in b]})
    return out


def graph_with_exact_weights(structure: Graph, weights: list, *, where: str) -> Graph:
    """``structure`` (e.g. read from the emitted ONNX) with the certificate's exact weights."""
    g = structure.copy()
    affines = [n for n in g.nodes() if g.op(n).kind == "affine"]
    if len(affines) != len(weights):
        raise DataError(f"{where}: {len(weights)} exact affine layers, the network has {len(affines)}")
    for name, rec in zip(affines, weights):
        w = np.array([[Fraction(v) for v in row] for row in rec["weight"]], dtype=object)
        b = np.array([Fraction(v) for v in rec["bias"]], dtype=object)
        if w.shape != g.op(name).weight.shape:
            raise DataError(f"{where}: exact weights of {rec['node']!r} have shape {w.shape}, "
                            f"node {name!r} has {g.op(name).weight.shape}")
        g.replace(name, Affine.from_rational(w.reshape(g.op(name).weight.shape), b))
    return g


def _layer_of(graph: Graph) -> dict:
    return {nid: (relu, graph.args(relu)[0], i) for relu, op in graph.relus()
            for i, nid in enumerate(op.neurons)}


def _smt2_files(folder: str, original: Graph, box: Box, cert: Certificate, lemma_bounds: dict) -> dict:
    """Write one SMT-LIB file per claim proven by LP / branching; returns id -> file."""
    where = _layer_of(original)
    order = [r for r, _ in original.relus()]
    proven = {c["neuron"]: c for c in cert.data["claims"] if c["status"] == "proven"}
    files = {}
    box_q = box.exact_bounds()
    for nid, c in proven.items():
        # interval and LP-dual claims are linear certificates checked exactly by
        # recheck; the claims that needed case splits get an SMT-LIB statement.
        # Not the crown-split ones: their proof is the piece tree (recomputed by
        # recheck), and their exact-ReLU statements are deep ACAS Xu queries
        # (~0.6 MB each, 130 per network) that z3 does not close anyway
        if c["method"] in ("interval", "lp-dual", "crown-split") or nid not in where:
            continue
        relu, pre, row = where[nid]
        k = order.index(relu)
        earlier = set(order[:k])
        phase = {n: p["claim"] for n, p in proven.items() if where.get(n, ("",))[0] in earlier}
        lem = {n: v for n, v in lemma_bounds.items() if n != pre}
        b = node_bounds(original, box_q, lemmas=lem, phase=phase, upto=pre)
        s = claim_query(original, box_q, bounds=fraction_lists(b), phase=phase, pre=pre, row=row,
                        claim=c["claim"], relax=c["method"] == "lp-dual")
        name = f"claim_{nid.replace('[', '_').replace(']', '')}.smt2"
        text = to_smt2(s, comment=f"leo_verify obligation stability:{nid}: the negation of "
                                  f"'{nid} is stably {c['claim']}' over the domain; "
                                  f"{'triangle relaxation (no case split)' if c['method'] == 'lp-dual' else 'exact ReLU semantics'}",
                       expect="unsat")
        atomic_write_text(os.path.join(folder, name), text)
        files[f"stability:{nid}"] = name
    return files


def write_proofs(out_dir: str, cert: Certificate, *, original: Graph, compressed: Graph, box: Box,
                 model_sha: str | None, emitted: dict, lemma_bounds: dict, smt2: bool = True) -> str:
    """Write ``out_dir/proofs/`` (see the module docstring); returns the folder."""
    folder = os.path.join(out_dir, "proofs")
    os.makedirs(folder, exist_ok=True)
    files = _smt2_files(folder, original, box, cert, lemma_bounds) if smt2 else {}
    for ob in cert.obligations:
        ob.smt2 = files.get(ob.id)
    doc = {
        "schema": CERT_SCHEMA,
        "verdict": cert.verdict,
        "original": {"sha256": model_sha},
        "emitted": {name: {"sha256": sha256_file(os.path.join(out_dir, name))} for name in emitted},
        "domain": {"lower": [fraction_str(v) for v in box.exact_bounds()[0]],
                   "upper": [fraction_str(v) for v in box.exact_bounds()[1]]},
        "obligations": [o.to_json() for o in cert.obligations],
        "epsilon": cert.epsilon,
        "smt2": [{"file": f, "obligation": k, "expected": "unsat"} for k, f in sorted(files.items())],
        "claims": cert.data["claims"],
        "lemmas": cert.data["lemmas"],
        "pieces": cert.data.get("pieces"),
        "trees": cert.data.get("trees") or {},
        "exact_weights": exact_weights_json(compressed),
    }
    atomic_write_text(os.path.join(folder, "certificate.json"), json.dumps(doc, indent=1) + "\n")
    return folder


# -- recheck -------------------------------------------------------------------------
def recheck(out_dir: str, *, model: str | None = None, smt: bool = False, smt_timeout: float = 60.0,
            log=print) -> dict:
    """Re-run every obligation of ``out_dir`` from its files; returns a summary dict.

    ``model``: the original network (default: the path recorded in the report).
    The summary's ``verdict`` is ``certified`` only if every obligation the
    certificate lists as proven checks again *and* the certificate was certified.
    """
    from ..io import load
    from .certificate import _float_up
    from .claims import recheck_claims
    from .deviation import check_rounding, deviation_bound
    from .identity import check_identity

    report = read_json(os.path.join(out_dir, "report.json"), what="report", error=DataError)
    cpath = os.path.join(out_dir, "proofs", "certificate.json")
    doc = read_json(cpath, what="certificate", error=DataError)
    if doc.get("schema") != CERT_SCHEMA:
        raise DataError(f"{cpath}: schema {doc.get('schema')!r}, expected {CERT_SCHEMA!r}")
    model = model or report.get("model", {}).get("source")
    if not model:
        raise DataError(f"{out_dir}: the report names no original model; pass it explicitly")
    results: dict = {}
    t0 = time.monotonic()
    sha = sha256_file(model)
    want = doc["original"]["sha256"]
    results["hash:original"] = (want is None or sha == want,
                                f"sha256 {sha[:12]}... {'==' if sha == want else '!='} {str(want)[:12]}...")
    original = load(model)
    lo = [Fraction(v) for v in doc["domain"]["lower"]]
    hi = [Fraction(v) for v in doc["domain"]["upper"]]
    box = Box(np.array([float(v) for v in lo]), np.array([float(v) for v in hi]), source="certificate")
    if [Fraction(v) for v in box.lower] != lo or [Fraction(v) for v in box.upper] != hi:
        raise DataError(f"{cpath}: domain bounds are not floats")
    t = time.monotonic()
    verdicts = recheck_claims(original, box, doc["claims"], doc["lemmas"], trees=doc.get("trees") or {})
    if doc.get("pieces"):
        from .pieces import check_pieces
        by_pieces = check_pieces(original, doc["pieces"], box)
        for c in doc["claims"]:
            if c["status"] == "proven" and c["method"] == "pieces":
                verdicts[c["neuron"]] = c["neuron"] in by_pieces
    for c in doc["claims"]:
        if c["status"] == "proven":
            results[f"stability:{c['neuron']}"] = (verdicts.get(c["neuron"], False), c["method"])
    for key, ok in verdicts.items():
        if key.startswith("lemma:"):
            results[key] = (ok, "LP-dual bound lemma")
    log(f"stability: {sum(1 for k, v in results.items() if k.startswith('stability') and v[0])}/"
        f"{sum(1 for k in results if k.startswith('stability'))} proofs check ({time.monotonic() - t:.1f} s)")
    proven = {c["neuron"]: c["claim"] for c in doc["claims"]
              if c["status"] == "proven" and verdicts.get(c["neuron"])}
    for name, info in doc["emitted"].items():
        path = os.path.join(out_dir, name)
        sha_e = sha256_file(path)
        results[f"hash:{name}"] = (sha_e == info["sha256"], f"sha256 {sha_e[:12]}...")
        structure = load(path)
        exact = graph_with_exact_weights(structure, doc["exact_weights"], where=cpath)
        t = time.monotonic()
        ident = check_identity(original, exact, proven)
        results[f"rewrite:{name}"] = (ident.proven, ident.output.get("detail", ""))
        log(f"rewrite identity ({name}): {'proven' if ident.proven else 'OPEN'} ({time.monotonic() - t:.1f} s)")
        dt = "float32" if all(np.all(structure.op(n).weight.astype(np.float32) == structure.op(n).weight)
                              for n in structure.nodes() if structure.op(n).kind == "affine") else "float64"
        ok, why = check_rounding(exact, structure, dtype=np.float32 if dt == "float32" else np.float64)
        results[f"rounding:{name}"] = (ok, why)
        eps, why = deviation_bound(exact, structure, box)
        claimed = doc["epsilon"].get(name)
        same = eps is not None and claimed is not None and eps <= Fraction(claimed)
        results[f"deviation:{name}"] = (same, f"eps {_float_up(eps):.3e}" if eps is not None else why)
    smt_counts: dict = {}
    if smt:
        import z3
        folder = os.path.join(out_dir, "proofs")
        for ent in doc.get("smt2", []):
            s = z3.Solver()
            s.set("timeout", int(smt_timeout * 1000))
            s.from_file(os.path.join(folder, ent["file"]))
            t = time.monotonic()
            ans = str(s.check())
            # unknown (timeout) proves nothing either way: the exact certificate
            # decides; an answer *against* the expected one is a failure
            results[f"smt2:{ent['file']}"] = (ans != "sat", f"{ans} in {time.monotonic() - t:.1f} s")
            smt_counts[ans] = smt_counts.get(ans, 0) + 1
    failed = {k: v for k, v in results.items() if not v[0]}
    ok = not failed and doc.get("verdict") == CERTIFIED
    summary = {"verdict": CERTIFIED if ok else NOT_CERTIFIED, "checked": len(results),
               "failed": {k: v[1] for k, v in sorted(failed.items())},
               "certificate_verdict": doc.get("verdict"), "time": round(time.monotonic() - t0, 2)}
    if smt:
        summary["smt2"] = smt_counts
    return summary
