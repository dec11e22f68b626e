"""The README's main job on the bundled example: info, eval, analyze, compress
(with its certificate), recheck, check, and the compressed net's exact outputs.

Run with ``./run demo``.  The output folder is ``out/demo/`` (compressed.onnx,
report.json, report.html, report.md, proofs/).  Regenerates nothing; the example
net is committed (``examples/make_example.py`` rebuilds it byte-identically).
"""
from __future__ import annotations

import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
NET = os.path.join(HERE, "nets", "tiny_mlp.onnx")
DOMAIN = os.path.join(HERE, "nets", "tiny_mlp_domain.json")
POINT = os.path.join(HERE, "nets", "tiny_point.json")


def main() -> int:
    from leo_verify.cli import main as cli
    out = os.path.join(os.path.dirname(HERE), "out", "demo")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        facts = os.path.join(tmp, "facts.json")
        small = os.path.join(out, "compressed.onnx")
        for argv in (["info", NET], ["eval", NET, "--input", POINT, "--exact"],
                     ["analyze", NET, "--domain", DOMAIN, "-o", facts],
                     ["compress", NET, "--domain", DOMAIN, "--facts", facts, "-o", out],
                     ["recheck", out],
                     ["check", NET, small, "--domain", DOMAIN, "--exact"],
                     ["info", small],
                     ["eval", small, "--input", POINT, "--exact"]):
            print(f"$ leo-verify {' '.join(os.path.relpath(a) if os.path.exists(a) else a for a in argv)}",
                  flush=True)
            rc = cli(argv)
            if rc:
                return rc
            print()
    print(f"audit report: {os.path.relpath(os.path.join(out, 'report.html'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
