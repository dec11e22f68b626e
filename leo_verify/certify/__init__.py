"""Certification: exact proofs of a compression, equivalence checks, falsification.

Importing this package registers the exact structural prover
(:func:`.structural.structural_prover`) as the first hook of
:func:`.equivalence.check_equivalence`.
"""
from .equivalence import STRUCTURAL_PROVERS
from .structural import structural_prover

if structural_prover not in STRUCTURAL_PROVERS:
    STRUCTURAL_PROVERS.append(structural_prover)
