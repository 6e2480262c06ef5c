"""Which layer group a weight belongs to, from the export graph's parameter path.

Both backends see these paths: ONNX after initializers get their torch names back, LiteRT in
tensor names built from module attribute names (``..._q_proj``, ``..._gate_proj``).
"""

from __future__ import annotations

import re

GROUP_PATTERNS: dict[str, re.Pattern[str]] = {
    "embedding": re.compile(r"embed_tokens"),
    "attention": re.compile(r"(?<![a-z])(q_proj|k_proj|v_proj)"),
    "projections": re.compile(r"(?<![a-z])o_proj"),
    "feed_forward": re.compile(r"(gate_proj|up_proj|down_proj)"),
    "head": re.compile(r"(?<![a-z])head"),
}


# Float terms the export adds to carry a grid exactly (negative_scales.py): never a recipe's to quantize.
CORRECTION = "block_sum_correction"
NEVER_QUANTIZED = re.compile(rf"\.{CORRECTION}$")


def group_of(name: str) -> str | None:
    """The recipe group of a weight name, or None for weights recipes never quantize (norms, corrections)."""
    if NEVER_QUANTIZED.search(name):
        return None
    matches = [group for group, pattern in GROUP_PATTERNS.items() if pattern.search(name)]
    if len(matches) > 1:
        raise ValueError(f"weight {name!r} matches several groups: {matches}")
    return matches[0] if matches else None
