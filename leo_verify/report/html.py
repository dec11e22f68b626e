"""The audit report as one self-contained HTML file (``OUT/report.html``).

:func:`render_html` turns a compression report (``OUT/report.json``, schema
``leo_verify.report/1``) and, when available, the certificate
(``OUT/proofs/certificate.json``) into a single HTML page:

* a banner with the verdict: ``CERTIFIED`` (green) only when the report's
  certificate says ``certified``, no listed obligation is open or refuted, and
  the certificate file (if given) agrees with the report; anything else is
  ``NOT CERTIFIED`` (red) with the reasons and every open / refuted obligation;
* the model (file name, sha256), the domain, the architecture before and after
  (tables and an SVG bar diagram of the layer widths), one SVG chart per hidden
  layer of its stably active / stably inactive / unstable / unknown neurons;
* the certificate: obligation counts per kind and status, eps per emitted file
  (exact and float), the falsification summary, a table of every obligation
  (one collapsible section per kind), the SMT-LIB index;
* the rewrite passes, the per-neuron facts, timings, hashes and versions.

The page fetches nothing: CSS is inline, the charts are inline SVG drawn here,
there is no script, and a Content-Security-Policy forbids any network load.
Everything taken from the report is HTML-escaped.  The output is a function
of the inputs only (no clock, no randomness): same report -> same bytes.

This module also holds the reading of a report shared with
:mod:`.markdown` (:func:`assess`, :func:`obligations_of`, ...).
"""
from __future__ import annotations

import html
import math
import os
import re
from urllib.parse import quote

__all__ = ["render_html", "assess", "obligations_of", "FACT_KINDS", "OK_STATUSES"]

#: stability statuses of ``report["facts"]["by_layer"][layer]``, in chart order
FACT_KINDS = ("stably_active", "stably_inactive", "unstable", "unknown")
FACT_LABELS = {"stably_active": "stably active", "stably_inactive": "stably inactive",
               "unstable": "unstable", "unknown": "unknown"}
FACT_COLOURS = {"stably_active": "#2e7d32", "stably_inactive": "#546e7a",
                "unstable": "#ef6c00", "unknown": "#bdbdbd"}
#: an obligation with one of these statuses holds (``passed``: the fuzz campaign)
OK_STATUSES = ("proven", "passed")
STATUS_ORDER = ("proven", "passed", "open", "refuted")
KIND_ORDER = ("stability", "rewrite", "rounding", "deviation", "fuzz")
CERTIFIED_WORD = "CERTIFIED"
NOT_CERTIFIED_WORD = "NOT CERTIFIED"
_SAFE_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


# --------------------------------------------------------------------------
# reading a report (shared with .markdown)

def _d(v) -> dict:
    return v if isinstance(v, dict) else {}


def _l(v) -> list:
    return v if isinstance(v, list) else []


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def obligations_of(report: dict, certificate: dict | None = None) -> list:
    """Every obligation (dicts: id, kind, statement, status, method, time, detail[, smt2]).

    From the report's ``obligations`` list, else from the certificate file's;
    an ``smt2`` file named only in the certificate is added to the report's entry.
    """
    obs = [o for o in _l(report.get("obligations")) if isinstance(o, dict)]
    cobs = [o for o in _l(_d(certificate).get("obligations")) if isinstance(o, dict)]
    if not obs:
        return cobs
    smt = {o.get("id"): o.get("smt2") for o in cobs if o.get("smt2")}
    return [dict(o, smt2=smt[o.get("id")]) if not o.get("smt2") and o.get("id") in smt else o
            for o in obs]


def kinds_in_order(obligations: list) -> list:
    seen = []
    for o in obligations:
        k = str(o.get("kind", "other"))
        if k not in seen:
            seen.append(k)
    return sorted(seen, key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER), seen.index(k)))


def count_by_kind(obligations: list) -> dict:
    """kind -> {status -> count, "total": n}; statuses beyond STATUS_ORDER are kept too."""
    out = {}
    for k in kinds_in_order(obligations):
        out[k] = {"total": 0, **{s: 0 for s in STATUS_ORDER}}
    for o in obligations:
        row = out[str(o.get("kind", "other"))]
        row["total"] += 1
        s = str(o.get("status", "open"))
        row[s] = row.get(s, 0) + 1
    return out


def statuses_of(by_kind: dict) -> list:
    extra = sorted({s for row in by_kind.values() for s in row} - set(STATUS_ORDER) - {"total"})
    return list(STATUS_ORDER) + extra


def assess(report: dict, certificate: dict | None = None, recheck: dict | None = None) -> dict:
    """The verdict of a report, conservatively.

    Returns ``{"certified": bool, "word": "CERTIFIED" | "NOT CERTIFIED",
    "reasons": [str], "problems": [obligation dict]}``.  Certified only when
    ``report["certificate"]["verdict"] == "certified"``, the counts show nothing
    open or refuted, every listed obligation is proven / passed, and the
    certificate file (when given) agrees (verdict, model and emitted hashes),
    and ``recheck`` (the checker kernel's summary, when given) says certified.
    ``"rechecked"`` in the result: ``None`` (not rechecked), True or False.
    """
    cert = _d(report.get("certificate"))
    reasons, problems = [], []
    verdict = cert.get("verdict")
    if verdict != "certified":
        why = cert.get("detail")
        reasons.append(f"the report's certificate verdict is {verdict!r}" + (f": {why}" if why else ""))
    counts = _d(cert.get("obligations"))
    for s in ("open", "refuted"):
        n = counts.get(s)
        if is_number(n) and n:
            reasons.append(f"{n} obligation(s) {s}")
    obs = obligations_of(report, certificate)
    by_id = {o.get("id"): o for o in obs}
    seen = set()
    for o in _l(cert.get("open")) + [o for o in obs if o.get("status") not in OK_STATUSES]:
        if not isinstance(o, dict) or o.get("id") in seen:
            continue
        seen.add(o.get("id"))
        full = dict(by_id.get(o.get("id"), {}))
        full.update({k: v for k, v in o.items() if v not in (None, "")})
        problems.append(full)
    if problems and verdict == "certified" and not any(counts.get(s) for s in ("open", "refuted")):
        reasons.append(f"{len(problems)} listed obligation(s) not proven")
    if verdict == "certified" and not obs and not counts:
        reasons.append("the report lists no obligations")
    if certificate is not None:
        c = _d(certificate)
        if c.get("verdict") != verdict:
            reasons.append("the report and proofs/certificate.json disagree on the verdict")
        model_sha = _d(report.get("model")).get("sha256")
        csha = _d(c.get("original")).get("sha256")
        if model_sha and csha and model_sha != csha:
            reasons.append("proofs/certificate.json is for another model (sha256 differs)")
        outs = {str(_d(v).get("file")): _d(v).get("sha256") for v in _d(report.get("outputs")).values()}
        for name, rec in _d(c.get("emitted")).items():
            sha = _d(rec).get("sha256")
            if name in outs and outs[name] and sha and outs[name] != sha:
                reasons.append(f"proofs/certificate.json certifies another {name} (sha256 differs)")
    rechecked = None
    if isinstance(recheck, dict):
        rechecked = recheck.get("verdict") == "certified"
        if not rechecked:
            failed = _d(recheck.get("failed"))
            reasons.append(f"recheck by the checker kernel: NOT CERTIFIED ({len(failed)} check(s) failed)")
            reasons += [f"recheck: {k}: {v}" for k, v in list(failed.items())[:20]]
            if recheck.get("error"):
                reasons.append(f"recheck: {recheck['error']}")
    ok = not reasons and not problems
    return {"certified": ok, "word": CERTIFIED_WORD if ok else NOT_CERTIFIED_WORD,
            "reasons": reasons, "problems": problems, "rechecked": rechecked}


def recheck_line(a: dict, recheck: dict | None) -> str:
    """One sentence on whether the checker kernel re-verified what this page shows."""
    if a.get("rechecked") is None:
        return ("Not rechecked: this page renders report.json as written; run `leo-verify recheck OUT/` to "
                "re-verify every proof and binding from the files.")
    if a["rechecked"]:
        return (f"Rechecked by the checker kernel: {_d(recheck).get('checked')} checks passed; model hash, domain, "
                f"emitted files, eps, verdict, obligations and sizes agree with the certificate. Facts, passes, "
                f"timings and per-neuron tables are informational (not rechecked).")
    return "The checker kernel's recheck FAILED: see the reasons above."


def model_name(report: dict) -> str:
    src = _d(report.get("model")).get("source")
    if not src:
        return "(in-memory model)"
    return os.path.basename(str(src).rstrip("/\\")) or str(src)


def layer_rows(report: dict) -> list:
    """[(layer, before-row, after-row or None)] in the original's layer order, then new layers."""
    before = [r for r in _l(_d(report.get("before")).get("layers")) if isinstance(r, dict)]
    after = [r for r in _l(_d(report.get("after")).get("layers")) if isinstance(r, dict)]
    amap = {str(r.get("layer")): r for r in after}
    rows = [(str(r.get("layer")), r, amap.get(str(r.get("layer")))) for r in before]
    names = {n for n, _, _ in rows}
    rows += [(str(r.get("layer")), None, r) for r in after if str(r.get("layer")) not in names]
    return rows


def hidden_layers(report: dict) -> list:
    """Hidden layer names: the original's layers, then any only in facts.by_layer."""
    names = [n for n, b, _ in layer_rows(report) if b is not None]
    for n in _d(_d(report.get("facts")).get("by_layer")):
        if str(n) not in names:
            names.append(str(n))
    return names


def layer_facts(report: dict, layer: str) -> dict:
    """Counts per :data:`FACT_KINDS` for one layer; neurons without a fact count as unknown."""
    raw = _d(_d(_d(report.get("facts")).get("by_layer")).get(layer))
    counts = {k: int(raw.get(k, 0)) if is_number(raw.get(k, 0)) else 0 for k in FACT_KINDS}
    width = None
    for n, b, _ in layer_rows(report):
        if n == layer and b is not None and is_number(b.get("neurons")):
            width = int(b["neurons"])
    if width is not None and sum(counts.values()) < width:
        counts["unknown"] += width - sum(counts.values())
    return counts


def fmt_num(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return repr(v)
    return "" if v is None else str(v)


def fmt_seconds(v) -> str:
    return f"{v:.3f} s" if is_number(v) else fmt_num(v)


def domain_summary(dom: dict) -> str:
    boxes = _l(dom.get("boxes"))
    if boxes:
        return f"a union of {len(boxes)} boxes; " + "; ".join(
            f"box {k}: {domain_summary(_d(b))}" for k, b in enumerate(boxes[:4])) + (" ..." if len(boxes) > 4 else "")
    lo, hi = _l(dom.get("lower")), _l(dom.get("upper"))
    n = len(lo)
    if not n:
        return "no bounds recorded"
    if len(set(map(repr, lo))) == 1 and len(set(map(repr, hi))) == 1:
        return f"{n} inputs, each in [{fmt_num(lo[0])}, {fmt_num(hi[0])}]"
    nums = [v for v in lo + hi if is_number(v)]
    rng = f"; bounds between {fmt_num(min(nums))} and {fmt_num(max(nums))}" if nums else ""
    return f"{n} inputs, per-input bounds{rng}"


# --------------------------------------------------------------------------
# HTML helpers

def esc(v) -> str:
    return html.escape(fmt_num(v) if not isinstance(v, str) else v, quote=True)


def _table(head: list, rows: list, cls: str = "") -> str:
    """``head``: escaped header cells; ``rows``: lists of already-escaped cells."""
    c = f' class="{cls}"' if cls else ""
    out = [f"<table{c}><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{x}</td>" for x in r) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _kv(rows: list) -> str:
    """A two-column key/value table; keys and values are escaped here."""
    return "<table class=\"kv\"><tbody>\n" + "\n".join(
        f"<tr><th>{esc(k)}</th><td>{v if raw else esc(v)}</td></tr>" for k, v, raw in
        ((r[0], r[1], r[2] if len(r) > 2 else False) for r in rows)) + "\n</tbody></table>"


def _status(s) -> str:
    s = str(s)
    cls = s if s in STATUS_ORDER else "other"
    return f'<span class="st st-{cls}">{esc(s)}</span>'


def _code(v) -> str:
    return f"<code>{esc(v)}</code>"


def _long_list(items: list, limit: int = 12) -> str:
    text = [esc(x) for x in items]
    if len(text) <= limit:
        return ", ".join(text)
    return (", ".join(text[:limit]) + f" <details class=\"inline\"><summary>{len(text) - limit} more</summary>"
            + ", ".join(text[limit:]) + "</details>")


def _file_link(folder: str, name) -> str:
    """A relative link to a local proof file (never a URL); unsafe names are plain text."""
    name = str(name)
    if _SAFE_FILE.match(name):
        return f'<a href="{esc(folder + "/" + quote(name))}">{_code(name)}</a>'
    return _code(name)


def _svg_text(x, y, text, *, anchor="start", cls="", size=None) -> str:
    a = f' text-anchor="{anchor}"' if anchor != "start" else ""
    c = f' class="{cls}"' if cls else ""
    s = f' font-size="{size}"' if size else ""
    return f'<text x="{x:g}" y="{y:g}"{a}{c}{s}>{esc(text)}</text>'


def _short(name: str, n: int = 16) -> str:
    return name if len(name) <= n else name[:n - 1] + "\u2026"


# --------------------------------------------------------------------------
# charts

def architecture_svg(report: dict) -> str:
    """Horizontal bars: each hidden layer's width before (grey) and after (blue)."""
    rows = layer_rows(report)
    if not rows:
        return "<p>No hidden layers.</p>"

    def width(r):
        return int(r["neurons"]) if isinstance(r, dict) and is_number(r.get("neurons")) else 0

    top = max([width(b) for _, b, _ in rows] + [width(a) for _, _, a in rows] + [1])
    label_w, bar_w, bh, gap = 130, 380, 12, 10
    row_h = 2 * bh + 2 + gap
    legend_h = 26
    h = legend_h + len(rows) * row_h + 4
    W = label_w + bar_w + 70
    out = [f'<svg class="arch-chart" width="{W}" height="{h}" '
           f'viewBox="0 0 {W} {h}" role="img" aria-label="hidden layer widths before and after">',
           '<rect x="0" y="4" width="12" height="12" class="bar-before"/>',
           _svg_text(18, 14, "before"),
           '<rect x="80" y="4" width="12" height="12" class="bar-after"/>',
           _svg_text(98, 14, "after")]
    for i, (name, b, a) in enumerate(rows):
        y = legend_h + i * row_h
        wb, wa = width(b), width(a)
        out.append(f'<g class="arch-row" data-layer="{esc(name)}"><title>{esc(name)}: {wb} &rarr; {wa} neurons</title>')
        out.append(_svg_text(label_w - 8, y + bh + 2, _short(name), anchor="end"))
        for j, (cls, v, present) in enumerate((("bar-before", wb, b is not None), ("bar-after", wa, a is not None))):
            yy = y + j * (bh + 2)
            L = bar_w * v / top
            out.append(f'<rect x="{label_w}" y="{yy}" width="{L:.2f}" height="{bh}" class="{cls}" '
                       f'data-width="{v}"/>')
            out.append(_svg_text(label_w + L + 4, yy + bh - 2, str(v) if present else "removed",
                                 size=10))
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def layer_svg(report: dict, layer: str) -> str:
    """One stacked bar of a hidden layer's neuron facts, and a thin kept/removed bar below."""
    counts = layer_facts(report, layer)
    total = sum(counts.values())
    kept = None
    for n, b, a in layer_rows(report):
        if n == layer:
            kept = int(a["neurons"]) if isinstance(a, dict) and is_number(a.get("neurons")) else 0
    W, bar_w, x0 = 420, 400, 10
    h = 64
    out = [f'<svg class="layer-chart" data-layer="{esc(layer)}" data-neurons="{total}" '
           f'width="{W}" height="{h}" viewBox="0 0 {W} {h}" role="img" '
           f'aria-label="neuron facts of layer {esc(layer)}">',
           f"<title>{esc(layer)}: " + esc(", ".join(f"{counts[k]} {FACT_LABELS[k]}" for k in FACT_KINDS))
           + "</title>",
           f'<rect x="{x0}" y="8" width="{bar_w}" height="24" class="bar-frame"/>']
    x = float(x0)
    for k in FACT_KINDS:
        n = counts[k]
        if not n:
            continue
        L = bar_w * n / total
        out.append(f'<rect x="{x:.2f}" y="8" width="{L:.2f}" height="24" fill="{FACT_COLOURS[k]}" '
                   f'class="seg seg-{k}" data-kind="{k}" data-count="{n}"><title>{n} {FACT_LABELS[k]}'
                   f"</title></rect>")
        if L >= 22:
            out.append(_svg_text(x + L / 2, 25, str(n), anchor="middle", cls="seg-label"))
        x += L
    if kept is not None and total:
        Lk = bar_w * min(kept, total) / total
        out.append(f'<rect x="{x0}" y="40" width="{Lk:.2f}" height="6" class="bar-after" data-kept="{kept}">'
                   f"<title>{kept} kept after compression</title></rect>")
        out.append(f'<rect x="{x0 + Lk:.2f}" y="40" width="{bar_w - Lk:.2f}" height="6" class="bar-removed">'
                   f"<title>{max(total - kept, 0)} removed</title></rect>")
        out.append(_svg_text(x0, 60, f"kept {kept} of {total}"
                             + (f" (removed {total - kept})" if total > kept else ""), size=11))
    out.append("</svg>")
    return "\n".join(out)


def _legend() -> str:
    items = []
    for k in FACT_KINDS:
        items.append(f'<span class="legend-item"><svg width="12" height="12" aria-hidden="true">'
                     f'<rect width="12" height="12" fill="{FACT_COLOURS[k]}"/></svg> {esc(FACT_LABELS[k])}</span>')
    items.append('<span class="legend-item"><svg width="12" height="12" aria-hidden="true">'
                 '<rect width="12" height="6" y="3" class="bar-after"/></svg> kept after compression</span>')
    return '<div class="legend">' + " ".join(items) + "</div>"


# --------------------------------------------------------------------------
# sections

CSS = """
:root { --ok: #1b5e20; --bad: #b71c1c; --muted: #607d8b; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1100px; padding: 1em 2em 3em; color: #212121; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; word-break: break-all; }
h2 { border-bottom: 1px solid #cfd8dc; padding-bottom: 0.2em; margin-top: 1.8em; }
h3 { margin-bottom: 0.3em; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.92em;
       word-break: break-all; }
.sub { color: var(--muted); margin-top: 0; }
.banner { border-radius: 8px; padding: 1em 1.4em; margin: 1em 0; color: #fff; }
.banner .word { font-size: 2.6em; font-weight: 800; letter-spacing: 0.06em; display: block; }
.banner-ok { background: var(--ok); }
.banner-bad { background: var(--bad); }
.banner ul { margin: 0.5em 0 0 0; }
.banner table { background: #fff; color: #212121; margin-top: 0.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #cfd8dc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
thead th { background: #eceff1; }
table.kv th { background: #f5f7f8; font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.obligations td:nth-child(3) { min-width: 18em; }
.st { font-weight: 700; padding: 0 0.35em; border-radius: 3px; white-space: nowrap; }
.st-proven, .st-passed { color: #1b5e20; background: #e8f5e9; }
.st-open { color: #e65100; background: #fff3e0; }
.st-refuted { color: #b71c1c; background: #ffebee; }
.st-other { color: #4a148c; background: #f3e5f5; }
details { margin: 0.4em 0; }
details > summary { cursor: pointer; font-weight: 600; }
details.inline { display: inline; }
details.inline > summary { display: inline; font-weight: 400; color: var(--muted); }
.charts { display: flex; flex-wrap: wrap; gap: 0.6em 2em; }
.chart h3 { font-size: 1em; margin: 0.4em 0 0 0; }
.legend { margin: 0.4em 0; }
.legend-item { margin-right: 1.2em; white-space: nowrap; }
svg text { font-family: inherit; font-size: 12px; fill: #212121; }
svg text.seg-label { fill: #fff; font-weight: 700; }
.bar-before { fill: #b0bec5; }
.bar-after { fill: #1565c0; }
.bar-removed { fill: #eceff1; }
.bar-frame { fill: none; stroke: #90a4ae; }
.warn { color: var(--bad); font-weight: 600; }
footer { margin-top: 3em; color: var(--muted); font-size: 0.85em; }
"""


def _banner(report: dict, a: dict, recheck: dict | None = None) -> str:
    note = f'<p class="sub">{esc(recheck_line(a, recheck))}</p>'
    if a["certified"]:
        cert = _d(report.get("certificate"))
        c = _d(cert.get("obligations"))
        tail = (f"{c.get('total')} obligations: {c.get('proven', 0)} proven, {c.get('passed', 0)} passed"
                if c else "")
        return (f'<section class="banner banner-ok" id="verdict"><span class="word">{CERTIFIED_WORD}</span>'
                f"Every obligation holds: the compressed network computes the original's function on the "
                f"domain (up to the proven eps of each emitted file).{(' ' + esc(tail) + '.') if tail else ''}"
                f"{note}</section>")
    out = [f'<section class="banner banner-bad" id="verdict"><span class="word">{NOT_CERTIFIED_WORD}</span>']
    if a["reasons"]:
        out.append("<ul>" + "".join(f"<li>{esc(r)}</li>" for r in a["reasons"]) + "</ul>")
    if a["problems"]:
        rows = [[_code(o.get("id", "")), _status(o.get("status", "open")), esc(o.get("kind", "")),
                 esc(o.get("statement", "")), esc(o.get("detail", ""))] for o in a["problems"]]
        out.append(f"<p>{len(a['problems'])} open or refuted obligation(s):</p>")
        out.append(_table(["id", "status", "kind", "statement", "detail"], rows, "problems"))
    out.append(note)
    out.append("</section>")
    return "\n".join(out)


def _model_section(report: dict) -> str:
    m = _d(report.get("model"))
    f = _d(report.get("facts"))
    rows = [("file", _code(m.get("source") or "(in-memory model)"), True),
            ("sha256", _code(m.get("sha256") or "(not recorded)"), True),
            ("format", m.get("format") or ""),
            ("rewrite arithmetic", report.get("arithmetic", "")),
            ("facts", f"{f.get('source', '')}; method {f.get('method', '')}; "
                      f"{'complete' if f.get('complete') else 'INCOMPLETE analysis'}"),
            ("report schema", report.get("schema", ""))]
    return "<h2 id=\"model\">Model</h2>\n" + _kv(rows)


def _domain_section(report: dict, certificate: dict | None) -> str:
    dom = _d(report.get("domain"))
    first = _d(_l(dom.get("boxes"))[0]) if _l(dom.get("boxes")) else dom
    lo, hi = _l(first.get("lower")), _l(first.get("upper"))
    regions = _l(_d(certificate).get("regions"))
    cdom = _d(regions[0]) if regions else {}
    clo, chi = _l(cdom.get("lower")), _l(cdom.get("upper"))
    exact = len(clo) == len(lo) and len(chi) == len(hi) and bool(lo)
    out = ["<h2 id=\"domain\">Domain</h2>",
           _kv([("source", _code(dom.get("source") or "(not recorded)"), True),
                ("inputs", domain_summary(dom))])]
    head = ["input", "lower", "upper"] + (["lower (exact)", "upper (exact)"] if exact else [])
    rows = []
    for i in range(max(len(lo), len(hi))):
        r = [str(i), esc(lo[i] if i < len(lo) else ""), esc(hi[i] if i < len(hi) else "")]
        if exact:
            r += [_code(clo[i]), _code(chi[i])]
        rows.append(r)
    if rows:
        op = " open" if len(rows) <= 16 else ""
        what = " (box 0 of the union)" if _l(dom.get("boxes")) else ""
        out.append(f"<details{op}><summary>bounds of the {len(rows)} inputs{what}</summary>\n"
                   + _table(head, rows, "bounds") + "\n</details>")
    return "\n".join(out)


def _architecture_section(report: dict) -> str:
    b, a, rm = _d(report.get("before")), _d(report.get("after")), _d(report.get("removed"))
    rows = []
    for key, label in (("hidden_layers", "hidden layers"), ("neurons", "neurons"), ("parameters", "parameters")):
        rows.append([esc(label), esc(b.get(key, "")), esc(a.get(key, "")), esc(rm.get(key, ""))])
    rows.append([esc("widths"), esc(", ".join(map(fmt_num, _l(b.get("widths"))))),
                 esc(", ".join(map(fmt_num, _l(a.get("widths"))))), ""])
    lrows = []
    for name, br, ar in layer_rows(report):
        lrows.append([_code(name), esc(_d(br).get("neurons", "")), esc(_d(ar).get("neurons", "") if ar else "removed"),
                      esc(_d(br).get("parameters", "")), esc(_d(ar).get("parameters", "") if ar else "removed")])
    return "\n".join([
        "<h2 id=\"architecture\">Architecture before and after</h2>",
        _table(["", "before", "after", "removed"], rows, "size"),
        "<h3>Hidden layers</h3>",
        _table(["layer", "neurons before", "neurons after", "parameters before", "parameters after"], lrows,
               "layers"),
        "<p class=\"sub\">Parameters: the weights and biases of the affine map feeding each hidden layer.</p>",
        architecture_svg(report)])


def _facts_section(report: dict) -> str:
    f = _d(report.get("facts"))
    c = _d(f.get("counts"))
    out = ["<h2 id=\"neurons\">Neuron stability per hidden layer</h2>",
           "<p>" + esc(", ".join(f"{fmt_num(c.get(k, 0))} {FACT_LABELS[k]}" for k in FACT_KINDS)) +
           " (all hidden layers).</p>", _legend(), '<div class="charts">']
    for layer in hidden_layers(report):
        counts = layer_facts(report, layer)
        out.append(f'<figure class="chart"><h3>layer {_code(layer)}: {sum(counts.values())} neurons</h3>\n'
                   f"{layer_svg(report, layer)}</figure>")
    out.append("</div>")
    neurons = _d(report.get("neurons"))
    if neurons:
        groups = {}
        for nid, rec in neurons.items():
            layer = str(nid).rsplit("[", 1)[0]
            groups.setdefault(layer, []).append((nid, _d(rec)))
        out.append("<h3>Per-neuron facts</h3>")
        for layer, items in groups.items():
            rows = [[_code(nid), esc(FACT_LABELS.get(r.get("status"), r.get("status", ""))),
                     esc(r.get("evidence", "")), esc(r.get("lower", "")), esc(r.get("upper", "")),
                     esc("kept" if r.get("kept") else "removed")] for nid, r in items]
            out.append(f"<details><summary>layer {_code(layer)}: {len(items)} neurons</summary>\n"
                       + _table(["neuron", "status", "evidence", "lower bound", "upper bound", "after"], rows,
                                "facts") + "\n</details>")
    return "\n".join(out)


def _certificate_section(report: dict, certificate: dict | None) -> str:
    cert = _d(report.get("certificate"))
    obs = obligations_of(report, certificate)
    out = ["<h2 id=\"certificate\">Certificate</h2>"]
    if not obs and "obligations" not in cert:
        out.append(f"<p>No obligations: {esc(cert.get('detail') or 'none recorded')}.</p>")
        return "\n".join(out)
    by_kind = count_by_kind(obs)
    statuses = statuses_of(by_kind)
    rows = []
    for k, row in by_kind.items():
        rows.append([esc(k), esc(row["total"])] + [esc(row.get(s, 0)) for s in statuses])
    tot = {s: sum(r.get(s, 0) for r in by_kind.values()) for s in statuses}
    rows.append(["<b>all</b>", f"<b>{len(obs)}</b>"] + [f"<b>{tot[s]}</b>" for s in statuses])
    out.append("<h3>Obligations per kind and status</h3>")
    out.append(_table(["kind", "total"] + [esc(s) for s in statuses], rows, "counts"))
    c = _d(cert.get("obligations"))
    if c and is_number(c.get("total")) and c.get("total") != len(obs):
        out.append(f"<p class=\"warn\">The report's summary counts {esc(c.get('total'))} obligations; "
                   f"{len(obs)} are listed.</p>")

    eps = _d(cert.get("epsilon"))
    ceps = _d(_d(certificate).get("epsilon"))
    out.append("<h3>Proven bound eps per emitted file</h3>")
    if eps or ceps:
        rows = []
        for name in list(eps) + [n for n in ceps if n not in eps]:
            e = _d(eps.get(name))
            ex = e.get("exact", ceps.get(name, ""))
            rows.append([_code(name), _code(ex), esc(e.get("float", "")) if "float" in e else ""])
        out.append("<p>|emitted(x) &minus; original(x)| &le; eps for every x in the domain "
                   "(real arithmetic, the file's weights). The float is rounded up.</p>")
        out.append(_table(["file", "eps (exact)", "eps (float)"], rows, "eps"))
    else:
        out.append("<p>No eps recorded.</p>")

    fuzz = _d(cert.get("fuzz"))
    out.append("<h3>Falsification campaign</h3>")
    if fuzz:
        rows = []
        for name, s in fuzz.items():
            s = _d(s)
            rows.append([_code(name), esc(s.get("points", "")), esc(s.get("seed", "")),
                         esc(s.get("max_diff_float64", "")), _code(s.get("max_diff_exact_at_worst_point", "")),
                         esc(s.get("counterexample", "")) if "counterexample" in s else "none"])
        out.append(_table(["file", "points", "seed", "largest difference (float64)",
                           "exact difference at that point", "counterexample"], rows, "fuzz"))
        out.append("<p class=\"sub\">Not a proof: the campaign can only refute.</p>")
    else:
        out.append("<p>No falsification campaign recorded.</p>")

    out.append("<h3>Every obligation</h3>")
    any_smt = any(o.get("smt2") for o in obs)
    for k in by_kind:
        group = [o for o in obs if str(o.get("kind", "other")) == k]
        bad = [o for o in group if o.get("status") not in OK_STATUSES]
        op = " open" if bad or len(group) <= 25 else ""
        summ = ", ".join(f"{by_kind[k].get(s, 0)} {s}" for s in statuses if by_kind[k].get(s, 0))
        rows = []
        for o in group:
            r = [_code(o.get("id", "")), esc(o.get("kind", "")), esc(o.get("statement", "")),
                 _status(o.get("status", "")), esc(o.get("method", "")),
                 esc(fmt_num(o.get("time", ""))), esc(o.get("detail", ""))]
            if any_smt:
                r.append(_file_link("proofs", o["smt2"]) if o.get("smt2") else "")
            rows.append(r)
        head = ["id", "kind", "statement", "status", "method", "time (s)", "detail"] + (["SMT-LIB"] if any_smt else [])
        out.append(f'<details class="kind" data-kind="{esc(k)}"{op}><summary>{esc(k)}: {len(group)} '
                   f"obligation(s) &mdash; {esc(summ)}</summary>\n" + _table(head, rows, "obligations")
                   + "\n</details>")
    return "\n".join(out)


def _smt_section(certificate: dict | None) -> str:
    out = ["<h2 id=\"smt\">SMT-LIB proof files</h2>"]
    if certificate is None:
        out.append("<p>proofs/certificate.json was not available: no index.</p>")
        return "\n".join(out)
    files = [e for e in _l(_d(certificate).get("smt2")) if isinstance(e, dict)]
    if not files:
        out.append("<p>No SMT-LIB files (every stability claim was settled by interval arithmetic, "
                   "or they were not written).</p>")
        return "\n".join(out)
    rows = [[_file_link("proofs", e.get("file", "")), _code(e.get("obligation", "")),
             _code(e.get("expected", ""))] for e in files]
    out.append(f"<p>{len(files)} file(s) in <code>proofs/</code>. Each states the negation of a claim in "
               "exact rationals (QF_LRA); a solver must answer the expected result, e.g. "
               "<code>z3 proofs/FILE</code>, or run <code>leo-verify recheck OUT/ --smt</code>.</p>")
    out.append(_table(["file", "obligation", "expected answer"], rows, "smt"))
    return "\n".join(out)


def _passes_section(report: dict) -> str:
    passes = [p for p in _l(report.get("passes")) if isinstance(p, dict)]
    out = ["<h2 id=\"passes\">Rewrite passes</h2>"]
    if not passes:
        out.append("<p>No rewrite was applied.</p>")
        return "\n".join(out)
    main = ("round", "pass", "layer", "action", "count", "remaining")
    rows = []
    for i, p in enumerate(passes):
        extra = []
        for k, v in p.items():
            if k in main:
                continue
            if isinstance(v, list):
                extra.append(f"{esc(k)}: " + (_long_list(v) if v else "none"))
            else:
                extra.append(f"{esc(k)}: {esc(v)}")
        rows.append([str(i + 1)] + [esc(p.get(k, "")) for k in main] + ["<br>".join(extra)])
    out.append(_table(["#"] + list(main) + ["details"], rows, "passes"))
    return "\n".join(out)


def _timings_section(report: dict) -> str:
    rows = [(f"{k}", fmt_seconds(v)) for k, v in _d(report.get("timings")).items()]
    ct = _d(_d(report.get("certificate")).get("timings"))
    rows += [(f"certification: {k}", fmt_seconds(v)) for k, v in ct.items()]
    return "<h2 id=\"timings\">Timings</h2>\n" + (_kv(rows) if rows else "<p>No timings recorded.</p>")


def _hashes_section(report: dict, certificate: dict | None) -> str:
    m = _d(report.get("model"))
    c = _d(certificate)
    csha = _d(c.get("original")).get("sha256")
    emitted = _d(c.get("emitted"))

    def agree(a, b):
        if certificate is None:
            return "(no certificate file)"
        if not b:
            return "not in the certificate file"
        return "agrees" if a == b else '<span class="warn">DIFFERS: ' + _code(b) + "</span>"

    rows = [["original model", _code(m.get("source") or ""), _code(m.get("sha256") or ""),
             agree(m.get("sha256"), csha)]]
    names = set()
    for key, o in _d(report.get("outputs")).items():
        o = _d(o)
        names.add(str(o.get("file")))
        rows.append([f"output ({esc(key)})", _code(o.get("file", "")), _code(o.get("sha256", "")),
                     agree(o.get("sha256"), _d(emitted.get(str(o.get("file")))).get("sha256"))])
    for name, rec in emitted.items():
        if name not in names:
            rows.append(["certified file (not in the report's outputs)", _code(name),
                         _code(_d(rec).get("sha256", "")), ""])
    return ("<h2 id=\"hashes\">Hashes</h2>\n"
            + _table(["role", "file", "sha256", "proofs/certificate.json"], rows, "hashes"))


def _versions_section(report: dict, certificate: dict | None) -> str:
    rows = [(k, _code(v), True) for k, v in _d(report.get("versions")).items()]
    if certificate is not None:
        rows.append(("certificate schema", _code(_d(certificate).get("schema", "")), True))
    return "<h2 id=\"versions\">Tool and solver versions</h2>\n" + (
        _kv(rows) if rows else "<p>No versions recorded.</p>")


def render_html(report: dict, certificate: dict | None = None, *, recheck: dict | None = None) -> str:
    """The audit report of ``report`` (and its certificate file) as one self-contained HTML page."""
    if not isinstance(report, dict):
        raise TypeError("report must be a dict (the contents of report.json)")
    a = assess(report, certificate, recheck)
    name = model_name(report)
    sha = _d(report.get("model")).get("sha256") or "(sha256 not recorded)"
    nav = " &middot; ".join(f'<a href="#{i}">{t}</a>' for i, t in (
        ("verdict", "verdict"), ("model", "model"), ("domain", "domain"), ("architecture", "architecture"),
        ("neurons", "neurons"), ("certificate", "certificate"), ("smt", "SMT-LIB"),
        ("passes", "passes"), ("timings", "timings"), ("hashes", "hashes"), ("versions", "versions")))
    version = _d(report.get("versions")).get("leo_verify", "")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{a['word']}: {esc(name)} &mdash; leo-verify audit report</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<header><h1>leo-verify audit report: {_code(name)}</h1>",
        f'<p class="sub">sha256 {_code(sha)}</p>',
        f"<nav>{nav}</nav></header>",
        _banner(report, a, recheck),
        _model_section(report),
        _domain_section(report, certificate),
        _architecture_section(report),
        _facts_section(report),
        _certificate_section(report, certificate),
        _smt_section(certificate),
        _passes_section(report),
        _timings_section(report),
        _hashes_section(report, certificate),
        _versions_section(report, certificate),
        f"<footer>Rendered by leo_verify {esc(version)} from report.json"
        f"{' and proofs/certificate.json' if certificate is not None else ''}. "
        "Self-contained: no scripts, no external resources.</footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"
