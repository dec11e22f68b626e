"""``recheck RESULT.json``: re-verify an EQUIVALENT verdict of ``check`` from its files alone.

Order (each step only reads what the previous ones validated):

1. read RESULT.json; its ``certificate`` must be present (only a proof the
   kernel can re-check is written there) and valid against
   ``schemas/check-certificate.schema.json`` (closed objects, canonical
   rationals; exit 9 naming the field);
2. bind the question: the result's ``verdict`` is ``equivalent``, its ``mode``
   and ``epsilon`` are the certificate's (the float epsilon's exact rational),
   its networks' sha256 are the certificate's;
3. bind the networks: the files (``--model`` / ``--model-b``, else the paths
   RESULT.json names) must have those sha256; for a question about the
   logits (``epsilon``, ``exact``) both networks must have no output head,
   for ``top1`` a head must keep the first-index argmax of the logits; an
   ``epsilon`` certificate with ``logit_epsilon`` is about networks with the
   same head of Lipschitz constant ``L`` (:mod:`.lipschitz`): its leaves prove
   the logits within ``logit_epsilon``, and ``L * logit_epsilon <= epsilon``;
4. bind the domain: the certificate's regions are exactly the boxes of
   RESULT.json's domain, and exactly the reviewer's ``--domain`` when given;
5. every region's split tree is re-proved leaf by leaf with exact
   differential bounds (:func:`~.diff_tree.check_tree`).

Everything here is the checker kernel: no solver, no prover.
"""
from __future__ import annotations

import os
import time
from fractions import Fraction

from ..errors import DataError, InputFileError
from ..util import read_json, sha256_file
from . import diff, diff_tree
from .exact import ProofInvalid, parse_rational
from .lipschitz import HEAD_LIPSCHITZ
from .schema import validate

__all__ = ["recheck_check", "CHECK_CERT", "RESULT_SCHEMA"]

CHECK_CERT = "leo_verify.check-certificate/1"
RESULT_SCHEMA = "leo_verify.check/1"

#: heads that keep the argmax of the logits, first index on ties (see leo_verify/heads.py)
_ARGMAX_KEEPING = ("none", "softmax", "logsoftmax", "sigmoid", "tanh")


def _resolve(path: str, base: str) -> str:
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(base, path)


def head_ok(graph, mode: str, *, through_lipschitz: bool = False) -> tuple[bool, str]:
    """Does a proof about the logits answer the question ``mode`` about this network's outputs?

    ``through_lipschitz``: an ``epsilon`` proof about the logits at ``logit_epsilon``, for head
    outputs within ``L * logit_epsilon`` (:data:`~.lipschitz.HEAD_LIPSCHITZ`)."""
    out = graph.op(graph.output_name)
    if mode == "epsilon" and through_lipschitz:
        return out.head in HEAD_LIPSCHITZ, f"the {out.head} head has no proven Lipschitz constant"
    if not mode.startswith("top1"):
        return out.head == "none", f"the network ends with a {out.head} head; an {mode} proof is about the logits"
    if out.head in _ARGMAX_KEEPING:
        return True, ""
    if out.head == "argmax" and dict(out.head_attrs).get("select_last_index", 0) == 0:
        return True, ""
    return False, f"the {out.head} head does not keep the logits' first-index argmax"


def recheck_check(path: str, *, model_a: str | None = None, model_b: str | None = None,
                  domain: list | None = None, log=print) -> dict:
    """Re-verify ``path`` (a ``check -o`` RESULT.json); return a summary dict.

    ``domain``: the reviewer's boxes (``[(lower, upper), ...]`` of Fractions) the
    certificate must be about.  Malformed files raise :class:`DataError`.
    """
    from ..io import load
    t0 = time.monotonic()
    doc = read_json(path, what="check result", error=DataError)
    if not isinstance(doc, dict) or doc.get("schema") != RESULT_SCHEMA:
        raise DataError(f"{path}: not a `leo-verify check -o` result (schema {RESULT_SCHEMA!r} expected)")
    failed: dict = {}
    summary = {"verdict": "not certified", "result_verdict": doc.get("verdict"), "checked": 0,
               "failed": failed, "leaves": 0, "file": path}
    cert = doc.get("certificate")
    if cert is None:
        failed["certificate"] = (f"RESULT.json has no certificate: its verdict {doc.get('verdict')!r} "
                                 "rests on no proof the kernel can re-check")
        summary["time"] = round(time.monotonic() - t0, 3)
        return summary
    validate(cert, "check-certificate", where=f"{path}: certificate")
    if doc.get("verdict") != "equivalent":
        failed["verdict"] = f"the result's verdict is {doc.get('verdict')!r}, the certificate proves equivalence"
    mode = cert["mode"]
    eps = parse_rational(cert["epsilon"])
    if doc.get("mode") != mode:
        failed["mode"] = f"the result asks {doc.get('mode')!r}, the certificate proves {mode!r}"
    try:
        stated = _num(doc.get("epsilon"))
    except ValueError:
        stated = None
    if mode == "epsilon" and stated != eps:
        failed["epsilon"] = f"the result states epsilon {doc.get('epsilon')!r}, the certificate proves {eps}"
    # networks with an output head: the tree proves the logits within logit_epsilon, and the head
    # outputs are within L * logit_epsilon (checked below, once the networks are loaded)
    claim_eps = eps
    logit_eps = parse_rational(cert["logit_epsilon"]) if "logit_epsilon" in cert else None
    if logit_eps is not None and mode != "epsilon":
        failed["logit_epsilon"] = f"logit_epsilon belongs to an epsilon certificate, not to mode {mode!r}"
    if mode == "top1-confidence":
        eps = parse_rational(cert["delta"])  # the parameter the leaves are checked with
        if stated != eps or not 0 < eps < 1:
            failed["delta"] = f"the result states delta {doc.get('epsilon')!r}, the certificate proves {eps}"
    inputs = doc.get("inputs")
    if not isinstance(inputs, dict) or not all(isinstance(inputs.get(k), dict) for k in ("a", "b")):
        raise DataError(f"{path}: inputs.a / inputs.b missing")
    base = os.path.dirname(os.path.abspath(path))
    graphs = {}
    for key, given in (("a", model_a), ("b", model_b)):
        want = cert[key]["sha256"]
        if inputs[key].get("sha256") != want:
            failed[f"network {key}"] = f"RESULT.json's inputs.{key}.sha256 is not the certificate's"
        file = given or inputs[key].get("file")
        if not isinstance(file, str):
            raise DataError(f"{path}: inputs.{key}.file is not a path")
        file = file if given else _resolve(file, base)
        if not os.path.isfile(file):
            raise InputFileError(f"network {key.upper()} {file!r} does not exist (give it with "
                                 f"--model{'' if key == 'a' else '-b'})")
        got = sha256_file(file)
        summary[f"model_{key}"] = file
        if got != want:
            failed[f"network {key}"] = f"{file} has sha256 {got[:16]}..., the certificate is about {want[:16]}..."
            continue
        graphs[key] = load(file)
        ok, why = head_ok(graphs[key], mode, through_lipschitz=logit_eps is not None)
        if not ok:
            failed[f"network {key} head"] = why
    if logit_eps is not None and len(graphs) == 2:
        oa, ob = (graphs[k].op(graphs[k].output_name) for k in ("a", "b"))
        lip = HEAD_LIPSCHITZ.get(oa.head)
        if oa.head_key() != ob.head_key():
            failed["heads"] = f"A ends with {oa.head_text()}, B with {ob.head_text()}: not the same head"
        elif lip is not None and lip * logit_eps > eps:
            failed["logit_epsilon"] = (f"the {oa.head} head (Lipschitz {lip}) turns logits within {logit_eps} into "
                                       f"outputs within {lip * logit_eps}, more than epsilon {eps}")
        eps = logit_eps  # what the leaves prove
    regions = [([parse_rational(v) for v in r["lower"]], [parse_rational(v) for v in r["upper"]])
               for r in cert["regions"]]
    for k, (lo, hi) in enumerate(regions):
        if len(lo) != len(hi) or any(a > b for a, b in zip(lo, hi)):
            failed[f"region {k} box"] = "lower and upper bounds do not form a box (a lower bound above its upper)"
    summary["domain"] = "; ".join(
        "[" + ", ".join(f"[{float(a):.6g}, {float(b):.6g}]" for a, b in list(zip(lo, hi))[:6])
        + (", ..." if len(lo) > 6 else "") + "]" for lo, hi in regions[:4]) + (" ..." if len(regions) > 4 else "")
    stated_dom = _domain_boxes(doc.get("inputs", {}).get("domain"))
    if stated_dom != regions:
        failed["domain"] = "the certificate's regions are not the boxes of RESULT.json's domain"
    if domain is not None:
        pinned = [([Fraction(v) for v in lo], [Fraction(v) for v in hi]) for lo, hi in domain]
        if pinned != regions:
            failed["domain (pinned)"] = "the certificate's regions are not the boxes given with --domain"
    summary["domain_pinned"] = domain is not None
    if failed or len(graphs) < 2:
        summary["time"] = round(time.monotonic() - t0, 3)
        return summary
    al = diff.align(graphs["a"], graphs["b"])
    if isinstance(al, str):
        failed["alignment"] = al
        summary["time"] = round(time.monotonic() - t0, 3)
        return summary
    for k, (r, (lo, hi)) in enumerate(zip(cert["regions"], regions)):
        try:
            leaves = diff_tree.check_tree(al, lo, hi, r["tree"], mode, eps)
        except ProofInvalid as e:
            failed[f"region {k}"] = str(e)
            continue
        if leaves != r["leaves"]:
            failed[f"region {k} leaves"] = f"the tree has {leaves} leaves, the certificate says {r['leaves']}"
            continue
        summary["checked"] += 1
        summary["leaves"] += leaves
        log(f"  region {k}: {leaves} leaves re-proved ({mode}" + (f", epsilon {eps}" if mode == "epsilon" else
                                                                  f", delta {eps}" if mode == "top1-confidence" else "")
            + ")")
    summary["mode"], summary["epsilon"] = mode, str(claim_eps)
    if logit_eps is not None:
        summary["logit_epsilon"] = str(logit_eps)
    if not failed and summary["checked"] == len(regions):
        summary["verdict"] = "equivalent"
    summary["time"] = round(time.monotonic() - t0, 3)
    return summary


def _domain_boxes(dom) -> list | None:
    """RESULT.json's ``inputs.domain`` as exact boxes (floats taken exactly), or None if malformed."""
    if not isinstance(dom, dict):
        return None
    boxes = dom.get("boxes") if "boxes" in dom else [dom]
    out = []
    try:
        for b in boxes:
            out.append(([_num(v) for v in b["lower"]], [_num(v) for v in b["upper"]]))
    except (TypeError, ValueError, KeyError):
        return None
    return out


def _num(v) -> Fraction:
    """A JSON number (not a bool, finite) as its exact rational."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{v!r} is not a number")
    if isinstance(v, float) and v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{v!r} is not finite")
    return Fraction(v)
