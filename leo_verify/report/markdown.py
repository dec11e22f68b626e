"""The audit report as a short Markdown summary (``OUT/report.md``), for CI logs.

Verdict line, size before/after, obligation counts, eps per emitted file, the
open / refuted obligations, timings.  The verdict is the one of
:func:`.html.assess` (the same rules as the HTML banner).  Values from the
report are put in code spans (no HTML or Markdown in them is interpreted
when the summary is rendered, e.g. as a GitHub job summary).
"""
from __future__ import annotations

import re

from .html import (FACT_KINDS, FACT_LABELS, _d, _l, assess, count_by_kind, domain_summary, fmt_num, recheck_line,
                   fmt_seconds, is_number, model_name, obligations_of, statuses_of)

__all__ = ["render_markdown"]

#: open obligations listed in full; the rest are counted
MAX_LISTED = 50
#: longer exact eps strings are shortened (the full value is in report.json)
MAX_EXACT = 80


def code(v) -> str:
    """``v`` as an inline code span, safe for a table cell (one line, pipes escaped)."""
    text = fmt_num(v) if not isinstance(v, str) else v
    text = " ".join(text.split()).replace("|", "\\|")
    if not text:
        return ""
    run = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if run or text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _cell(v) -> str:
    """``v`` as plain text on one line: no HTML tag, code span or table cell break in it."""
    text = " ".join((fmt_num(v) if not isinstance(v, str) else v).split())
    for ch in ("\\", "<", "`", "|"):
        text = text.replace(ch, "\\" + ch)
    return text


def _shorten(text: str, n: int = MAX_EXACT) -> str:
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters, see report.json)"


def render_markdown(report: dict, certificate: dict | None = None, *, recheck: dict | None = None) -> str:
    """A Markdown summary of ``report`` (and its certificate file) for CI logs."""
    if not isinstance(report, dict):
        raise TypeError("report must be a dict (the contents of report.json)")
    a = assess(report, certificate, recheck)
    m = _d(report.get("model"))
    cert = _d(report.get("certificate"))
    out = [f"# leo-verify: {a['word']} \u2014 {code(model_name(report))}", ""]
    c = _d(cert.get("obligations"))
    if a["certified"]:
        out.append(f"**{a['word']}**: every obligation holds"
                   + (f" ({fmt_num(c.get('total'))} obligations)." if c else "."))
    else:
        out.append(f"**{a['word']}**: " + ("; ".join(_cell(r) for r in a["reasons"])
                                           or "open or refuted obligations, see below") + ".")
    out += ["", recheck_line(a, recheck)]
    dom = _d(report.get("domain"))
    f = _d(report.get("facts"))
    out += ["",
            f"- model: {code(m.get('source') or '(in-memory model)')}, sha256 {code(m.get('sha256') or '(not recorded)')}",
            f"- domain: {code(dom.get('source') or '(not recorded)')} ({_cell(domain_summary(dom))})",
            f"- rewrite: {_cell(report.get('arithmetic', ''))} arithmetic; facts: {_cell(f.get('source', ''))}"
            f" ({_cell(f.get('method', ''))}, {'complete' if f.get('complete') else 'INCOMPLETE analysis'})"]
    fc = _d(f.get("counts"))
    if fc:
        out.append("- neurons: " + ", ".join(f"{_cell(fc.get(k, 0))} {FACT_LABELS[k]}" for k in FACT_KINDS))
    for key, o in _d(report.get("outputs")).items():
        o = _d(o)
        out.append(f"- output ({_cell(key)}): {code(o.get('file', ''))}, sha256 {code(o.get('sha256', ''))}")

    b, af, rm = _d(report.get("before")), _d(report.get("after")), _d(report.get("removed"))
    out += ["", "## Size", "", "| | before | after | removed |", "|---|---:|---:|---:|"]
    for key, label in (("hidden_layers", "hidden layers"), ("neurons", "neurons"), ("parameters", "parameters")):
        out.append(f"| {label} | {_cell(b.get(key, ''))} | {_cell(af.get(key, ''))} | {_cell(rm.get(key, ''))} |")
    out.append(f"| widths | {_cell(', '.join(map(fmt_num, _l(b.get('widths')))))} | "
               f"{_cell(', '.join(map(fmt_num, _l(af.get('widths')))))} | |")

    obs = obligations_of(report, certificate)
    out += ["", "## Obligations", ""]
    if not obs and "obligations" not in cert:
        out.append(f"No obligations: {_cell(cert.get('detail') or 'none recorded')}.")
    else:
        by_kind = count_by_kind(obs)
        statuses = statuses_of(by_kind)
        out.append("| kind | total | " + " | ".join(statuses) + " |")
        out.append("|---|---:|" + "---:|" * len(statuses))
        for k, row in by_kind.items():
            out.append(f"| {_cell(k)} | {row['total']} | " + " | ".join(str(row.get(s, 0)) for s in statuses) + " |")
        out.append(f"| **all** | **{len(obs)}** | "
                   + " | ".join(f"**{sum(r.get(s, 0) for r in by_kind.values())}**" for s in statuses) + " |")
        if c and is_number(c.get("total")) and c.get("total") != len(obs):
            out += ["", f"Note: the report's summary counts {fmt_num(c.get('total'))} obligations; "
                        f"{len(obs)} are listed."]

    eps = _d(cert.get("epsilon"))
    ceps = _d(_d(certificate).get("epsilon"))
    if eps or ceps:
        out += ["", "## eps (proven bound on |emitted(x) - original(x)| over the domain)", "",
                "| file | eps (exact) | eps (float, rounded up) |", "|---|---|---:|"]
        for name in list(eps) + [n for n in ceps if n not in eps]:
            e = _d(eps.get(name))
            ex = str(e.get("exact", ceps.get(name, "")))
            out.append(f"| {code(name)} | {code(_shorten(ex))} | {_cell(e.get('float', ''))} |")
    fuzz = _d(cert.get("fuzz"))
    if fuzz:
        out += ["", "Falsification (not a proof): " + "; ".join(
            f"{code(n)}: {_cell(_d(s).get('points', '?'))} points, largest difference "
            f"{_cell(_d(s).get('max_diff_float64', '?'))} (float64)"
            + (f", COUNTEREXAMPLE at {code(_d(s)['counterexample'])}" if "counterexample" in _d(s) else "")
            for n, s in fuzz.items()) + "."]

    out += ["", "## Open or refuted obligations", ""]
    probs = a["problems"]
    if not probs:
        out.append("None.")
    for o in probs[:MAX_LISTED]:
        detail = _cell(o.get("detail", ""))
        out.append(f"- **{_cell(o.get('status', 'open'))}** {code(o.get('id', ''))}"
                   + (f": {_cell(o.get('statement', ''))}" if o.get("statement") else "")
                   + (f" \u2014 {code(detail)}" if detail else ""))
    if len(probs) > MAX_LISTED:
        out.append(f"- ... {len(probs) - MAX_LISTED} more (see report.html / report.json)")

    out += ["", "## Timings", "", "| step | time |", "|---|---:|"]
    for k, v in _d(report.get("timings")).items():
        out.append(f"| {_cell(k)} | {_cell(fmt_seconds(v))} |")
    for k, v in _d(cert.get("timings")).items():
        out.append(f"| certification: {_cell(k)} | {_cell(fmt_seconds(v))} |")
    proofs = "; proofs: `proofs/certificate.json`" if certificate is not None or cert.get("proofs") else ""
    out += ["", f"Full audit report: `report.html`{proofs}.", ""]
    return "\n".join(out)
