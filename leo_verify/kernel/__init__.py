"""The checker kernel: everything ``leo-verify recheck`` trusts, and nothing else.

Proofs are data this package checks; it never calls a prover or a solver and
imports nothing from ``analysis``, ``passes``, ``certify`` or ``report`` (only
``graph``, ``io``, ``errors`` and ``util`` of the package; see the README's
"Threat model").  The entry point is :func:`leo_verify.kernel.recheck.recheck`;
submodules are imported explicitly (this file imports none of them).
"""
