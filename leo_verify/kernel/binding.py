"""Binding: which files a certificate speaks about, and that report.json says the same.

* Emitted networks are named by a *plain* file name inside ``OUT/``
  (``compressed.<ext>``: no separator, no ``..``, not absolute, not a
  symlink) with their sha256; every ``compressed.*`` file present in ``OUT/``
  must be listed, and every listed one present.
* ``report.json`` must agree with the certificate field by field: model hash,
  domain, emitted files and hashes, eps, verdict, obligations, and the
  architecture before/after (recomputed from the networks themselves).

Each check returns ``(ok, why)``; nothing here raises for a bad file.
"""
from __future__ import annotations

import os
import re
from fractions import Fraction

from ..graph import Graph
from .exact import parse_rational, to_float

__all__ = ["plain_name", "listed_files", "architecture", "float_up", "agree_with_report", "OUTPUT_KINDS"]

_PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")
#: report.json ``outputs`` key -> the file it names
OUTPUT_KINDS = {"onnx": "compressed.onnx", "torch": "compressed.pt"}


def plain_name(name) -> bool:
    """A file name that stays inside its folder: no separator, no ``..``, not absolute."""
    return (isinstance(name, str) and bool(_PLAIN.match(name)) and ".." not in name
            and os.path.basename(name) == name and not os.path.isabs(name))


def listed_files(out_dir: str, emitted: dict) -> tuple[bool, str]:
    """Every ``compressed.*`` file of ``out_dir`` is listed in ``emitted`` and vice versa."""
    bad = [n for n in emitted if not plain_name(n)]
    if bad:
        return False, f"emitted file name {bad[0]!r} is not a plain file name in OUT/"
    present = sorted(n for n in os.listdir(out_dir) if n.startswith("compressed."))
    unlisted = [n for n in present if n not in emitted]
    if unlisted:
        return False, f"{unlisted[0]} is in OUT/ but the certificate does not list it"
    for n in emitted:
        p = os.path.join(out_dir, n)
        if os.path.islink(p) or not os.path.isfile(p):
            return False, f"{n} is listed but is {'a symlink' if os.path.islink(p) else 'missing'}"
    return True, f"{len(emitted)} emitted file(s), all listed"


def architecture(graph: Graph) -> dict:
    """The numbers report.json states for a network (``before`` / ``after``)."""
    s = graph.summary()
    return {"hidden_layers": s["hidden_layers"], "neurons": s["neurons"], "parameters": s["parameters"],
            "widths": list(s["widths"])}


def float_up(v: Fraction) -> float:
    """The smallest float >= v (how reports print a bound)."""
    import math

    import numpy as np
    f = to_float(v)
    if math.isinf(f):
        return f if f > 0 else -1.7976931348623157e308
    return f if Fraction(f) >= v else float(np.nextafter(f, np.inf))


def _counts(obligations: list) -> dict:
    c = {"total": len(obligations), "proven": 0, "passed": 0, "open": 0, "refuted": 0}
    for o in obligations:
        c[o["status"]] += 1
    return c


def agree_with_report(report: dict, cert: dict, *, before: dict | None, after: dict | None) -> dict:
    """``{"report:<field>": (ok, why)}``: report.json against the certificate.

    ``before`` / ``after``: :func:`architecture` of the original and of the
    emitted network (``None`` when not loaded: then not compared, and failed).
    """
    out: dict = {}

    def put(field: str, ok: bool, why: str):
        out[f"report:{field}"] = (bool(ok), why if not ok else "agrees")

    put("model.sha256", report["model"]["sha256"] == cert["original"]["sha256"],
        "report.json names another original model (sha256)")
    dom = report["domain"]
    rboxes = dom["boxes"] if "boxes" in dom else [dom]
    rq = [([Fraction(v) for v in b["lower"]], [Fraction(v) for v in b["upper"]]) for b in rboxes]
    cq = [([parse_rational(v) for v in r["lower"]], [parse_rational(v) for v in r["upper"]]) for r in cert["regions"]]
    put("domain", rq == cq, "report.json states another domain than the certificate")
    outs = {}
    ok_kinds = True
    for kind, rec in report["outputs"].items():
        ok_kinds &= OUTPUT_KINDS.get(kind) == rec["file"]
        outs[rec["file"]] = rec["sha256"]
    emitted = {n: r["sha256"] for n, r in cert["emitted"].items()}
    put("outputs", ok_kinds and outs == emitted, "report.json lists other emitted files or hashes")
    rc = report["certificate"]
    put("certificate.verdict", rc["verdict"] == cert["verdict"], f"report says {rc['verdict']!r}, "
                                                                   f"certificate {cert['verdict']!r}")
    eps = rc.get("epsilon")
    ok = isinstance(eps, dict) and set(eps) == set(cert["epsilon"]) and all(
        eps[k]["exact"] == v and eps[k]["float"] == float_up(parse_rational(v)) for k, v in cert["epsilon"].items())
    put("certificate.epsilon", ok, "report.json states another eps")
    put("certificate.obligations", rc.get("obligations") == _counts(cert["obligations"]),
        "report.json counts other obligations")
    open_ids = [o["id"] for o in cert["obligations"] if o["status"] not in ("proven", "passed")]
    put("certificate.open", [o.get("id") for o in rc.get("open", [])] == open_ids,
        "report.json lists other open obligations")
    put("obligations", report.get("obligations") == cert["obligations"],
        "report.json lists other obligations than the certificate")
    for name, arch in (("before", before), ("after", after)):
        got = {k: report[name][k] for k in ("hidden_layers", "neurons", "parameters", "widths")}
        put(name, arch is not None and got == arch,
            f"report.json says {got}, the network has {arch}" if arch else "network not loaded")
    removed = report.get("removed", {})
    if before is not None and after is not None:
        want = {k: before[k] - after[k] for k in ("neurons", "parameters", "hidden_layers")}
        put("removed", removed == want, f"report.json says {removed}, the networks give {want}")
    else:
        put("removed", False, "networks not loaded")
    return out
