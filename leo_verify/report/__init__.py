"""Human-readable audit reports of a compression.

``leo-verify compress ... -o OUT/`` writes, next to ``OUT/report.json``:

``OUT/report.html``  one self-contained page (inline CSS and SVG, no script, no
                     network resource): the verdict banner, domain, architecture
                     before/after, per-layer neuron stability charts, the
                     certificate (every obligation, eps, fuzz), passes, timings,
                     hashes, versions, the SMT-LIB index (:mod:`.html`);
``OUT/report.md``    a Markdown summary for CI logs (:mod:`.markdown`).

``leo-verify report OUT/`` (re)renders both from ``OUT/report.json`` and, when
present, ``OUT/proofs/certificate.json``.  Rendering is deterministic: the
same inputs give the same bytes.

API: :func:`render_html`, :func:`render_markdown`, :func:`write_reports`.
"""
from __future__ import annotations

import os

from ..errors import DataError, InputFileError
from ..util import atomic_write_text, read_json
from .html import assess, render_html
from .markdown import render_markdown

__all__ = ["render_html", "render_markdown", "write_reports", "read_report", "read_certificate",
           "write_text", "assess", "HTML_NAME", "MD_NAME"]

HTML_NAME = "report.html"
MD_NAME = "report.md"
REPORT_NAME = "report.json"
CERT_PATH = os.path.join("proofs", "certificate.json")


def read_report(out_dir: str) -> dict:
    """``out_dir/report.json``; missing -> :class:`InputFileError`, not a report -> :class:`DataError`."""
    if not os.path.isdir(out_dir):
        raise InputFileError(f"output folder {out_dir!r} does not exist" if not os.path.exists(out_dir)
                             else f"{out_dir!r} is not a folder")
    path = os.path.join(out_dir, REPORT_NAME)
    report = read_json(path, what="report", error=DataError)
    if not isinstance(report, dict):
        raise DataError(f"report {path!r}: expected a JSON object, got {type(report).__name__}")
    schema = report.get("schema")
    if not isinstance(schema, str) or not schema.startswith("leo_verify.report/"):
        raise DataError(f"report {path!r}: schema {schema!r}, expected 'leo_verify.report/1'")
    return report


def read_certificate(out_dir: str, report: dict | None = None) -> dict | None:
    """``out_dir/proofs/certificate.json`` when it exists, else None.

    A report that records no proofs folder (``--no-certify``) gets None even if
    a stale certificate from an earlier run is still there.
    """
    if report is not None and not isinstance(report.get("certificate"), dict):
        return None
    if report is not None and "proofs" not in report["certificate"] and "obligations" not in report["certificate"]:
        return None
    path = os.path.join(out_dir, CERT_PATH)
    if not os.path.exists(path):
        return None
    cert = read_json(path, what="certificate", error=DataError)
    if not isinstance(cert, dict):
        raise DataError(f"certificate {path!r}: expected a JSON object, got {type(cert).__name__}")
    return cert


def write_text(path: str, text: str) -> None:
    """Write ``text`` atomically; a failure is one :class:`InputFileError` line."""
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise InputFileError(f"cannot write {path!r}: {exc.strerror or exc}") from None


def _render(report: dict, certificate: dict | None, where: str, recheck: dict | None = None) -> tuple[str, str]:
    try:
        return (render_html(report, certificate, recheck=recheck),
                render_markdown(report, certificate, recheck=recheck))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # report.json is a file a user may have edited: malformed content is a data error
        raise DataError(f"{where}: cannot render the report ({type(exc).__name__}: {exc})") from None


def write_reports(out_dir: str, report: dict | None = None, certificate: dict | None = None, *,
                  recheck: dict | None = None) -> tuple[str, str]:
    """Write ``out_dir/report.html`` and ``out_dir/report.md``; returns their paths.

    By default the report and certificate are read from ``out_dir``
    (``report.json``, ``proofs/certificate.json`` when present).  ``recheck``:
    the checker kernel's summary (:func:`leo_verify.kernel.recheck.recheck`);
    without it the pages say "not rechecked".
    """
    if report is None:
        report = read_report(out_dir)
        certificate = read_certificate(out_dir, report) if certificate is None else certificate
    text_html, text_md = _render(report, certificate, os.path.join(out_dir, REPORT_NAME), recheck)
    html_path, md_path = os.path.join(out_dir, HTML_NAME), os.path.join(out_dir, MD_NAME)
    write_text(html_path, text_html)
    write_text(md_path, text_md)
    return html_path, md_path
