"""``leo-verify report OUT/``: (re)render OUT/report.html and OUT/report.md.

Reads ``OUT/report.json`` and, when present, ``OUT/proofs/certificate.json``
(see :mod:`leo_verify.report`).  A missing report is the usual one-line
error (exit 4); a file that is not a leo_verify report exits 9.
"""
from __future__ import annotations

import argparse

from .cli_common import Command, register


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="OUT/", help="a folder written by `compress` (holds report.json)")


def _report_run(args) -> int:
    from .report import write_reports
    for path in write_reports(args.folder):
        print(path)
    return 0


register(Command("report", "render OUT/report.html and OUT/report.md from a compression's OUT/report.json",
                 _report_args, _report_run,
                 example="leo-verify report out/demo"))
