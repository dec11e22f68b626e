"""``leo_verify.compressor``: analysis -> proven facts -> lossless rewrite -> outputs.

``leo_verify.compress(model, domain, ...)`` (a function of the package) calls :func:`compress`.

The result holds the compressed graph and a JSON report (schema
:data:`REPORT_SCHEMA`).  By default the compression is then certified
(:mod:`leo_verify.certify`): every stability claim re-proved exactly, the
rewrite identity, the rounding of the emitted weights and a proven bound eps
on what that rounding changes, plus a falsification campaign.  The report's
``certificate`` section says ``certified`` only when every obligation is
proven; with ``certify=False`` it says ``not certified`` (not attempted).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from .analysis import analyze, solver_versions
from .analysis.facts import Facts
from .domain import as_domain
from .errors import DataError
from .graph import Graph
from .io import load
from .util import sha256_file

__all__ = ["compress", "Result", "REPORT_SCHEMA", "layer_table"]

REPORT_SCHEMA = "leo_verify.report/1"


def layer_table(graph: Graph) -> list:
    """Per hidden layer: name, width, parameters of the affine feeding it."""
    rows = []
    for name, op in graph.relus():
        pre = graph.args(name)[0]
        pop = graph.op(pre)
        params = pop.parameters if pop.kind == "affine" else 0
        rows.append({"layer": name, "neurons": op.size, "parameters": int(params)})
    return rows


def _size(graph: Graph) -> dict:
    s = graph.summary()
    return {"hidden_layers": s["hidden_layers"], "neurons": s["neurons"],
            "parameters": s["parameters"], "widths": s["widths"], "layers": layer_table(graph)}


@dataclass
class Result:
    """A compression: the rewritten graph, the facts it rests on, and the report."""

    original: Graph
    graph: Graph
    facts: Facts
    report: dict = field(default_factory=dict)
    certificate: object = None
    claims_result: object = None  # exact proofs of the analysis' claims, one ClaimsResult per box
    deadline: float | None = None  # ``time.monotonic()`` end of ``compress --budget``: certify's default

    def to_onnx(self, path: str, *, dtype: str | None = None) -> str:
        from .io.onnx import save_onnx
        return save_onnx(self.graph, path, dtype=dtype)

    def to_torch(self, *, dtype=None):
        from .io.torch import to_torch
        return to_torch(self.graph, dtype=dtype) if dtype is not None else to_torch(self.graph)

    def certify(self, box, *, emitted: dict | None = None, dtype: str | None = None, **options):
        """Certify this compression over ``box`` (a Box or a union of boxes); updates ``report``
        and returns the certificate.

        ``emitted``: file name -> network read back from each written file; by
        default the ONNX model this result would write (built in memory).
        ``options``: see :func:`leo_verify.certify.certificate.certify`.  When the
        rewrite used only exactly re-proven claims (``compress(certify=True)``),
        those proofs are reused.
        """
        from .certify.certificate import certify
        if self.claims_result is not None:
            options.setdefault("claims_result", self.claims_result)
        if self.deadline is not None:
            options.setdefault("deadline", self.deadline)
        if emitted is None:
            from .io.onnx import graph_from_onnx_model, to_onnx_model
            emitted = {"compressed.onnx": graph_from_onnx_model(to_onnx_model(self.graph, dtype=dtype))}
        witnesses = [f.witness_pos for f in self.facts.neurons.values() if f.witness_pos] + \
            [f.witness_neg for f in self.facts.neurons.values() if f.witness_neg]
        options.setdefault("witnesses", witnesses[:2000] or None)
        if self.claims_result is not None:
            from .certify.claims import proven_on_every_box
            claims = proven_on_every_box(self.claims_result, self.claims_result[0].proven)
        else:
            claims = self.facts.stable_map()
        cert = certify(self.original, self.graph, box, claims, emitted=emitted, dtype=dtype, **options)
        self.certificate = cert
        self.report["certificate"] = cert.summary()
        self.report["obligations"] = [o.to_json() for o in cert.obligations]
        from .heads import head_report
        self.report["head"] = head_report(self.original, cert.epsilon)
        self.report.setdefault("timings", {})["certification"] = round(cert.timings["total"], 3)
        return cert


def _check_facts(facts: Facts, graph: Graph, union, where: str) -> None:
    """Facts from a file must be about this model and this domain (a union of boxes)."""
    model_sha = graph.metadata.get("sha256")
    fsha = facts.meta.get("model", {}).get("sha256")
    if model_sha and fsha and fsha != model_sha:
        raise DataError(f"{where}: facts are for model sha256 {fsha[:12]}..., "
                        f"not this model ({model_sha[:12]}...)")
    dom = facts.meta.get("domain")
    if dom is not None:
        boxes = dom.get("boxes") if isinstance(dom.get("boxes"), list) else [dom]
        same = len(boxes) == len(union.boxes) and all(
            list(d.get("lower", [])) == [float(v) for v in b.lower] and
            list(d.get("upper", [])) == [float(v) for v in b.upper] for d, b in zip(boxes, union.boxes))
        if not same:
            raise DataError(f"{where}: facts were computed for another domain than {union.source or 'this one'}")
    ids = set(graph.neurons())
    unknown = sorted(set(facts.neurons) - ids)
    if unknown:
        raise DataError(f"{where}: neuron {unknown[0]!r} is not in the model")
    if not facts.complete:
        # an incomplete run's decided facts are still proofs: use them, say so
        pass


def compress(model, domain, *, facts: Facts | str | None = None, exact: bool = True,
             method: str = "fast", certify: bool = True, certify_options: dict | None = None,
             proven_claims_only: bool | None = None, progress: bool = False, **analysis_options) -> Result:
    """Analyse ``model`` over ``domain`` and rewrite it losslessly.

    Parameters
    ----------
    model : a path or a :class:`Graph` / torch module.
    domain : a :class:`Box` or a domain spec.
    facts : facts from a previous ``analyze`` (object or path) to use instead
        of analysing again; they must be for this model and domain.
    exact : rewrite in exact rational arithmetic (the result equals the
        original over the reals on the domain); else in float64.
    method, analysis_options : passed to :func:`leo_verify.analysis.analyze`.
    certify : certify the result (:meth:`Result.certify`, emitted weights: the
        ONNX this result writes by default); ``certify_options`` are passed on.
    proven_claims_only : (default: ``certify``) re-prove the analysis' stability
        claims exactly *before* rewriting and rewrite with the proven ones only:
        the float analysis proposes, exact arithmetic disposes.  A claim that
        cannot be re-proved in its budget keeps its neuron (reported as such),
        so the compression stays certifiable.  ``certify_options``
        ``time_limit`` / ``max_nodes`` set the per-claim budget.
    progress : show progress of the long phases (:mod:`leo_verify.progress`).
    """
    from .passes.runner import compress_graph

    t0 = time.monotonic()
    graph = load(model)
    if isinstance(model, (str, os.PathLike)):
        graph.metadata["sha256"] = sha256_file(os.fspath(model))
    source = graph.metadata.get("source")
    union = as_domain(domain, n=graph.input_size)
    # a budget bounds the whole run: half for the analysis, the exact claims until 85 % of it
    # (claims not proven by then keep their neurons), the rest for the rewrite and certification
    budget = analysis_options.get("budget")
    if budget is not None:
        analysis_options["budget"] = budget * 0.5
    # one box stays a Box everywhere (the common case); a union is proven box by box
    box = union.boxes[0] if len(union) == 1 else union
    if facts is None:
        facts = analyze(graph, box, method=method, progress=progress and sys.stderr.isatty(), **analysis_options)
        facts_source = "analysis"
    else:
        where = f"facts file {facts!r}" if isinstance(facts, str) else "facts"
        if isinstance(facts, str):
            facts = Facts.load(facts)
        _check_facts(facts, graph, union, where)
        facts_source = where
    t1 = time.monotonic()
    claims_result = None
    stable = facts.stable_map()
    if certify if proven_claims_only is None else proven_claims_only:
        from .certify.claims import proven_on_every_box
        from .certify.pieces import prove_claims_with_pieces
        copts = dict(certify_options or {})
        claims_result = []
        from .progress import phase
        with phase("exact claims", total=len(stable) * len(union), enabled=progress, unit="claims") as bar:
            for b in union.boxes:  # a claim is used only if it is proven on every box
                t = time.monotonic()
                res = prove_claims_with_pieces(graph, b, stable, time_limit=copts.get("time_limit", 5.0),
                                               workers=int(analysis_options.get("workers") or 1),
                                               max_nodes=copts.get("max_nodes", 2000),
                                               pieces_budget=copts.get("pieces_budget", 300.0) / len(union),
                                               progress=bar.update,
                                               deadline=None if budget is None else t0 + 0.85 * budget)
                res.time = time.monotonic() - t
                claims_result.append(res)
                bar.info = f"{sum(1 for r in claims_result for p in r.proofs.values() if p.status == 'proven')} proven"
        stable = proven_on_every_box(claims_result, stable)
    t15 = time.monotonic()
    new, log = compress_graph(graph, stable, exact=exact)
    t2 = time.monotonic()
    before, after = _size(graph), _size(new)
    report = {
        "schema": REPORT_SCHEMA,
        "model": {"source": source, "sha256": graph.metadata.get("sha256"),
                  "format": graph.metadata.get("format")},
        "domain": union.to_json(),
        "arithmetic": "exact" if exact else "float64",
        "facts": {"source": facts_source, "complete": facts.complete,
                  "method": facts.meta.get("method"), "counts": facts.counts(),
                  "by_layer": facts.counts_by_layer()},
        "before": before,
        "after": after,
        "removed": {"neurons": before["neurons"] - after["neurons"],
                    "parameters": before["parameters"] - after["parameters"],
                    "hidden_layers": before["hidden_layers"] - after["hidden_layers"]},
        "passes": log,
        "neurons": {nid: {"status": f.status, "evidence": f.evidence, "lower": f.lower,
                          "upper": f.upper, "kept": nid in set(new.neurons())}
                    for nid, f in facts.neurons.items()},
        "certificate": {"verdict": "not certified", "detail": "certification not run"},
        "versions": solver_versions(),
        "timings": {"analysis": round(t1 - t0, 3), "rewrite": round(t2 - t15, 3)},
    }
    if claims_result is not None:
        dropped = {}
        for k, r in enumerate(claims_result):
            for n, p in r.proofs.items():
                if p.status != "proven" and n not in dropped:
                    dropped[n] = p.reason + (f" (box {k})" if len(union) > 1 else "")
        report["claims"] = {"from_analysis": len(facts.stable_map()), "proven_exactly": len(stable),
                            "not_proven": dict(sorted(dropped.items())),
                            "note": "only exactly re-proven claims were used by the rewrite; the "
                                    "neurons of the others are kept"}
        report["timings"]["exact_claims"] = round(t15 - t1, 3)
        for nid, rec in report["neurons"].items():
            if nid in dropped:
                rec["claim_not_proven"] = dropped[nid]
    result = Result(graph, new, facts, report, claims_result=claims_result,
                    deadline=None if budget is None else t0 + budget)
    if certify:
        result.certify(box, **dict(certify_options or {}))
    return result
