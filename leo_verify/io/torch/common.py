"""Helpers the torch reader, state-dict loader and writer share.
"""
from __future__ import annotations

import torch


_FLOAT_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


def _one_line(exc: BaseException, limit: int = 240) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # torch's weights_only refusal buries the reason under generic advice.
    pick = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0] if lines else "")
    # torch appends paragraphs of advice after the first sentence.
    pick = pick.split(". ")[0] or type(exc).__name__
    return pick if len(pick) <= limit else pick[:limit - 3] + "..."
