"""``recheck``: re-verify a compression's output folder from its files alone.

Order (each step only reads what the previous ones validated):

1. read ``report.json`` and ``proofs/certificate.json`` and validate both
   against their published schemas (:mod:`.schema`; exit 9 naming the field);
2. bind the files: the original's sha256 (required), every ``compressed.*``
   file of OUT/ listed with its sha256 (:mod:`.binding`), the SMT-LIB index;
   a wrong original hash stops here (nothing else is about that network);
3. report.json agrees with the certificate field by field;
4. the obligations list is consistent with the claims and the files, and the
   certificate's verdict follows from it;
5. every proven stability claim is re-verified *in its direction* on the
   certificate's domain (:func:`~.claims.recheck_claims`), every lemma too;
6. for each emitted file: an ONNX file has exactly the writer's structure
   (:mod:`.emitted`: per-sample ops only, no casts or shape tricks); its exact rewritten weights (from the
   certificate) fit its structure; the rewrite identity holds using only the
   claims of step 5 (:func:`~.identity.check_identity`); every stored weight
   is the rounding of the exact one; the proven eps is at most the stated one.

``certified`` only if every check passes and the certificate says certified.
This module and everything it imports form the checker kernel: no solver,
no prover, nothing from ``analysis``, ``passes`` or ``certify``.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from fractions import Fraction

import numpy as np

from ..errors import DataError
from ..graph import Affine, Graph
from ..util import read_json, sha256_file
from . import binding
from .claims import recheck_claims
from .deviation import check_rounding, deviation_bound
from .emitted import check_emitted_onnx
from .exact import parse_rational, to_float
from .identity import check_identity
from .schema import validate

__all__ = ["recheck", "graph_with_exact_weights", "CERTIFIED", "NOT_CERTIFIED", "CERT_SCHEMA"]

CERT_SCHEMA = "leo_verify.certificate/3"
CERTIFIED = "certified"
NOT_CERTIFIED = "not certified"
_KINDS = ("stability", "rewrite", "rounding", "deviation", "fuzz")


def graph_with_exact_weights(structure: Graph, weights: list, *, where: str) -> Graph:
    """``structure`` (read from an emitted file) with the certificate's exact weights.

    Raises :class:`DataError` when the weights do not fit the structure.
    """
    g = structure.copy()
    affines = [n for n in g.nodes() if g.op(n).kind == "affine"]
    if len(affines) != len(weights):
        raise DataError(f"{where}: {len(weights)} exact affine layers, the network has {len(affines)}")
    for name, rec in zip(affines, weights):
        shape = g.op(name).weight.shape
        if rec.get("from_file") is True:
            # the exact weights are the rationals of the numbers this file stores (the reader's
            # op has no other exact weights); the identity, rounding and eps checks then judge
            # the file's own layer
            if g.op(name).exact is not None:  # pragma: no cover - the reader sets none
                raise DataError(f"{where}: node {name!r} of the file has exact weights")
            continue
        rows = [[parse_rational(v) for v in row] for row in rec["weight"]]
        bias = [parse_rational(v) for v in rec["bias"]]
        if len(rows) != shape[0] or any(len(r) != shape[1] for r in rows) or len(bias) != shape[0]:
            raise DataError(f"{where}: exact weights of {rec['node']!r} do not have the shape {shape} of "
                            f"node {name!r}")
        w = np.array(rows, dtype=object).reshape(shape)
        g.replace(name, Affine.from_rational(w, np.array(bias, dtype=object)))
    return g


def _read(path: str, kind: str) -> dict:
    doc = read_json(path, what=kind, error=DataError)
    validate(doc, kind, where=path)
    return doc


def stability_target(oid_rest: str, n_regions: int) -> tuple[str, int] | None:
    """``"<neuron>"`` (one region) or ``"<neuron>@<k>"`` (a union) -> (neuron, region k)."""
    if n_regions == 1:
        return oid_rest, 0
    nid, sep, k = oid_rest.rpartition("@")
    if not sep or not k.isdigit() or k != str(int(k)) or int(k) >= n_regions:
        return None
    return nid, int(k)


def _obligations(doc: dict, claims: list, out_dir: str) -> dict:
    """Consistency of the obligation list, the SMT-LIB index and the verdict.

    ``claims``: per region, neuron id -> its (first) claim record."""
    res: dict = {}
    obs = doc["obligations"]
    ids = [o["id"] for o in obs]
    dup = sorted(i for i, k in Counter(ids).items() if k > 1)  # (ids.count per id is quadratic)
    res["obligations:unique"] = (not dup, f"duplicate obligation {dup[0]!r}" if dup else "")
    bad = [o["id"] for o in obs if o["id"].split(":", 1)[0] != o["kind"]]
    res["obligations:kinds"] = (not bad, f"obligation {bad[0]!r} has another kind" if bad else "")
    problems = []
    for o in obs:
        kind, _, what = o["id"].partition(":")
        if kind == "stability":
            target = stability_target(what, len(claims))
            c = claims[target[1]].get(target[0]) if target is not None else None
            if c is None or c["status"] != ("proven" if o["status"] == "proven" else "open") \
                    or o["status"] not in ("proven", "open"):
                problems.append(f"{o['id']}: no claim record with that status")
        elif kind in ("rounding", "deviation", "fuzz"):
            if what not in doc["emitted"]:
                problems.append(f"{o['id']}: names no emitted file")
            if kind != "fuzz" and o["status"] == "passed" or kind == "fuzz" and o["status"] == "proven":
                problems.append(f"{o['id']}: status {o['status']!r} does not fit its kind")
        elif kind == "rewrite" and o["status"] == "passed":
            problems.append(f"{o['id']}: status 'passed' does not fit its kind")
    for name in doc["emitted"]:
        for kind in ("rounding", "deviation"):
            if f"{kind}:{name}" not in ids:
                problems.append(f"{kind}:{name}: missing")
    if "rewrite:output" not in ids:
        problems.append("rewrite:output: missing")
    if set(doc["epsilon"]) - set(doc["emitted"]):
        problems.append("epsilon names a file that is not emitted")
    index = {e["obligation"]: e["file"] for e in doc["smt2"]}
    for o in obs:
        if o.get("smt2") != index.get(o["id"]):
            problems.append(f"{o['id']}: its smt2 file disagrees with the index")
    for k, f in index.items():
        if k not in ids:
            problems.append(f"smt2 index names no obligation {k!r}")
        if not binding.plain_name(f) or not os.path.isfile(os.path.join(out_dir, "proofs", f)):
            problems.append(f"smt2 file {f!r} is missing from proofs/")
    res["obligations:consistent"] = (not problems, problems[0] if problems else "")
    # a union: every neuron with a stability obligation has one on every region
    per = {}
    for o in obs:
        if o["kind"] == "stability":
            t = stability_target(o["id"].partition(":")[2], len(claims))
            if t is not None:
                per.setdefault(t[0], set()).add(t[1])
    short = sorted(n for n, ks in per.items() if len(ks) != len(claims))
    if short:
        problems.append(f"stability:{short[0]}: not on every box of the domain")
        res["obligations:consistent"] = (False, problems[0])
    all_ok = all(o["status"] in ("proven", "passed") for o in obs) and bool(obs)
    res["obligations:verdict"] = ((doc["verdict"] == CERTIFIED) == all_ok,
                                  f"verdict {doc['verdict']!r} does not follow from the obligations")
    return res


def _domain_text(regions: list) -> str:
    """A short, exact description of the certified box (or union of boxes)."""
    parts = []
    for r in regions:
        lo, hi = r["lower"], r["upper"]
        if len(set(lo)) == 1 and len(set(hi)) == 1 and lo:
            parts.append(f"[{lo[0]}, {hi[0]}]^{len(lo)}")
        else:
            parts.append(" x ".join(f"[{a}, {b}]" for a, b in zip(lo, hi)))
    text = " | ".join(parts) if len(parts) > 1 else parts[0]
    text = text if len(text) <= 200 else text[:197] + "..."
    return text if len(parts) == 1 else f"union of {len(parts)} boxes: {text}"


def _boxes(regions: list) -> list:
    return [([parse_rational(v) for v in r["lower"]], [parse_rational(v) for v in r["upper"]]) for r in regions]


def _dtype(structure: Graph):
    ws = [structure.op(n) for n in structure.nodes() if structure.op(n).kind == "affine"]
    f32 = all(np.all(op.weight.astype(np.float32) == op.weight) and np.all(op.bias.astype(np.float32) == op.bias)
              for op in ws)
    return np.float32 if f32 else np.float64


def recheck(out_dir: str, *, model: str | None = None, domain=None, log=print) -> dict:
    """Re-run every obligation of ``out_dir`` from its files; returns a summary dict.

    ``model``: the original network (default: the path recorded in the report).
    ``domain``: ``(lo, hi)`` lists of Fractions (one box) or a list of them (a
    union), the domain the reviewer cares about; the certificate's boxes must be
    exactly these (default: whatever the certificate states, reported as
    ``summary["domain"]``).  Everything in
    OUT/ may have been edited: pinning the model and the domain from outside is
    what ties the verdict to the question the reviewer asked.
    Summary: ``verdict`` (``certified`` only if every check passes and the
    certificate says certified), ``checked``, ``failed`` (check -> why),
    ``certificate_verdict``, ``time``.  Malformed files raise
    :class:`DataError` (exit 9) naming the field.
    """
    from ..io import load
    t0 = time.monotonic()
    report = _read(os.path.join(out_dir, "report.json"), "report")
    cpath = os.path.join(out_dir, "proofs", "certificate.json")
    doc = _read(cpath, "certificate")
    model = model or report["model"]["source"]
    if not model:
        raise DataError(f"{out_dir}: the report names no original model; pass it with --model")
    results: dict = {}

    def done() -> dict:
        failed = {k: v[1] for k, v in sorted(results.items()) if not v[0]}
        ok = not failed and doc["verdict"] == CERTIFIED
        return {"verdict": CERTIFIED if ok else NOT_CERTIFIED, "checked": len(results), "failed": failed,
                "certificate_verdict": doc["verdict"], "time": round(time.monotonic() - t0, 2),
                "model": model, "original_sha256": want, "domain": _domain_text(doc["regions"]),
                "domain_pinned": domain is not None}

    sha = sha256_file(model)
    want = doc["original"]["sha256"]
    if domain is not None:
        asked = [domain] if isinstance(domain, tuple) else list(domain)
        same = [(list(a), list(b)) for a, b in asked] == [(list(a), list(b)) for a, b in _boxes(doc["regions"])]
        results["domain:requested"] = (same, "the certificate is for another domain than the one asked for")
    results["hash:original"] = (sha == want, f"{model}: sha256 {sha[:12]}... is not the certified "
                                             f"{want[:12]}...")
    ok, why = binding.listed_files(out_dir, doc["emitted"])
    results["files"] = (ok, why)
    hashes_ok = {}
    for name, info in doc["emitted"].items():
        p = os.path.join(out_dir, name)
        got = sha256_file(p) if ok else None
        hashes_ok[name] = got == info["sha256"]
        results[f"hash:{name}"] = (hashes_ok[name], f"sha256 of {name} is not the certified one")
    if not results["hash:original"][0]:
        log("recheck: the original network is not the certified one; nothing else is checked")
        return done()
    original = load(model)
    structures = {}
    for n in doc["emitted"]:
        if not hashes_ok[n]:
            continue
        if n.endswith(".onnx"):
            with open(os.path.join(out_dir, n), "rb") as fh:
                ok, why = check_emitted_onnx(fh.read())
            results[f"form:{n}"] = (ok, f"{n} is not in the writer's form: {why}")
            if not ok:
                continue
        structures[n] = load(os.path.join(out_dir, n))
    before = binding.architecture(original)
    afters = [binding.architecture(s) for s in structures.values()]
    after = afters[0] if afters and all(a == afters[0] for a in afters) else None
    results.update(binding.agree_with_report(report, doc, before=before, after=after))

    regions = doc["regions"]
    claims = [{} for _ in regions]
    for k, r in enumerate(regions):
        for c in r["claims"]:
            claims[k].setdefault(c["neuron"], c)
    results.update(_obligations(doc, claims, out_dir))

    boxes = _boxes(regions)
    n = original.input_size
    dom_ok = all(len(lo) == len(hi) == n and all(abs(v) < 2 ** 1024 for v in lo + hi)
                 and all(a <= b for a, b in zip(lo, hi)) and all(Fraction(to_float(v)) == v for v in lo + hi)
                 for lo, hi in boxes)
    results["domain"] = (dom_ok, f"a box of the domain is not a box of {n} float bounds")
    if not dom_ok:
        return done()
    t = time.monotonic()
    # a claim counts only if its proof checks on every box, in the same direction
    proven: dict = {}
    for k, (r, box) in enumerate(zip(regions, boxes)):
        verdicts = recheck_claims(original, box, r["claims"], r["lemmas"], trees=r["trees"], pieces=r["pieces"])
        at = "" if len(regions) == 1 else f"@{k}"
        for key, v in verdicts.items():
            if key.startswith(("lemma:", "trees:", "claims")) or (not v and key in claims[k]
                                                                 and claims[k][key]["status"] == "proven"):
                results.setdefault(f"proof:{key}{at}", (v, f"{key}{at}: the stored proof does not check"))
        for nid, c in claims[k].items():
            ok = verdicts.get(nid) is True
            if k == 0:
                proven[nid] = c["claim"] if ok else None
            elif proven.get(nid) != c["claim"] or not ok:
                proven[nid] = None
        proven.update({nid: None for nid in list(proven) if nid not in claims[k]})
        for o in doc["obligations"]:
            kind, _, rest = o["id"].partition(":")
            target = stability_target(rest, len(regions)) if kind == "stability" else None
            if target is not None and target[1] == k and o["status"] == "proven":
                c = claims[k].get(target[0], {})
                results[o["id"]] = (verdicts.get(target[0]) is True,
                                    f"the {c.get('method', '?')} proof does not prove {target[0]} "
                                    f"{c.get('claim', '?')} on {'the domain' if len(regions) == 1 else f'box {k}'}")
    proven = {nid: d for nid, d in proven.items() if d is not None}
    n_stab = sum(1 for k in results if k.startswith("stability:"))
    log(f"stability: {sum(1 for k, v in results.items() if k.startswith('stability:') and v[0])}/{n_stab} "
        f"proofs check ({time.monotonic() - t:.1f} s)")

    for name in doc["emitted"]:
        if name not in structures:
            for kind in ("rewrite", "rounding", "deviation"):
                results[f"{kind}:{name}"] = (False, "not checked: the file is not the certified one "
                                                    "or not in the writer's form")
            continue
        structure = structures[name]
        t = time.monotonic()
        try:
            exact = graph_with_exact_weights(structure, doc["exact_weights"], where=cpath)
        except DataError as e:
            for kind in ("rewrite", "rounding", "deviation"):
                results[f"{kind}:{name}"] = (False, str(e))
            continue
        ident = check_identity(original, exact, proven)
        results[f"rewrite:{name}"] = (ident.proven, ident.output.get("detail", "") or next(
            (v["detail"] for v in ident.layers.values() if v["status"] != "proven"), ""))
        log(f"rewrite identity ({name}): {'proven' if ident.proven else 'OPEN'} ({time.monotonic() - t:.1f} s)")
        results[f"rounding:{name}"] = check_rounding(exact, structure, dtype=_dtype(structure))
        eps, why = None, ""
        for box in boxes:  # eps on the union: the largest per box
            e, why = deviation_bound(exact, structure, box)
            if e is None:
                eps = None
                break
            eps = e if eps is None else max(eps, e)
        claimed = doc["epsilon"].get(name)
        ok = eps is not None and claimed is not None and eps <= parse_rational(claimed)
        results[f"deviation:{name}"] = (ok, why or f"proven eps {binding.float_up(eps) if eps is not None else '?'}"
                                              f" exceeds the stated {claimed}")
    return done()

