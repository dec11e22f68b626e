"""``check A OUT/compressed.onnx``: reuse the certificate ``compress`` wrote next to B.

A network and its own compression are exactly the pair a ``compress``
certificate is about.  When B sits in a ``compress`` output folder (its
``proofs/certificate.json`` lists B among the emitted files), the checker
kernel re-checks that folder (:func:`leo_verify.kernel.recheck.recheck`, with
A pinned as the original: its hash must be the certificate's), and if it is
certified, every box of the question lies inside a box of the certificate and
the eps proven for B is at most the ``--epsilon`` asked (0 for ``--exact`` and
``--top1``: the same function, ties included), the answer is
EQUIVALENT -- exact, and re-checkable by anyone with ``leo-verify recheck OUT
--model A``.  Anything else (top1-confidence, an output head, a folder that does
not recheck) returns ``None`` and the ordinary provers run.
"""
from __future__ import annotations

import json
import os
import time
from fractions import Fraction

from ...kernel.binding import float_up
from ...kernel.exact import parse_rational
from .result import CheckResult

__all__ = ["from_compress_certificate"]


def _inside(box, regions) -> bool:
    lo, hi = box
    return any(all(rl <= a and b <= rh for a, b, rl, rh in zip(lo, hi, rlo, rhi))
               for rlo, rhi in regions if len(rlo) == len(lo))


def from_compress_certificate(path_a: str, path_b: str, domain, *, mode: str, epsilon: float,
                              graphs=None) -> CheckResult | None:
    """The EQUIVALENT verdict a ``compress`` certificate next to ``path_b`` gives, or ``None``."""
    if mode not in ("epsilon", "exact", "top1"):
        return None
    if graphs is not None and any(g.op(g.output_name).head != "none" for g in graphs):
        return None  # the certificate's eps is about the logits
    out = os.path.dirname(os.path.abspath(path_b))
    cert_path = os.path.join(out, "proofs", "certificate.json")
    if not os.path.isfile(cert_path):
        return None
    try:
        with open(cert_path, encoding="utf-8") as fh:
            listed = os.path.basename(path_b) in json.load(fh).get("emitted", {})
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    if not listed:
        return None
    from ...errors import LeoError
    from ...kernel.recheck import recheck
    t0 = time.monotonic()
    try:
        summary = recheck(out, model=path_a, log=lambda *a: None)
    except LeoError:
        return None
    if summary["verdict"] != "certified":
        return None
    with open(cert_path, encoding="utf-8") as fh:  # validated by the recheck above
        doc = json.load(fh)
    regions = [([parse_rational(v) for v in r["lower"]], [parse_rational(v) for v in r["upper"]])
               for r in doc["regions"]]
    if not all(_inside(b, regions) for b in domain.exact_boxes()):
        return None
    eps = parse_rational(doc["epsilon"][os.path.basename(path_b)])
    # exact and top-1 follow from a proven eps of 0 (the same function, ties included)
    if eps > (Fraction(epsilon) if mode == "epsilon" else 0):
        return None
    return CheckResult(
        "equivalent", mode=mode, epsilon=float(epsilon), method="certificate", proof="exact",
        best_bound=float_up(eps), time=time.monotonic() - t0,
        reason=(f"B is the compression certified in {out}: the kernel re-checked that folder with A as the "
                f"original ({summary['checked']} checks), the domain lies inside the certified one, and the "
                f"proven eps {float_up(eps):.6g} <= {'epsilon' if mode == 'epsilon' else 0}; "
                f"re-check with `leo-verify recheck {out} --model A`"),
        stages=[{"stage": "certificate", "outcome": "equivalent", "time": round(time.monotonic() - t0, 3)}])
