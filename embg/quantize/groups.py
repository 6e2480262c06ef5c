"""Which layer group a weight belongs to, from the export graph's parameter path.

Both backends see these paths: ONNX after initializers get their torch names back, LiteRT in
tensor names built from module attribute names (``..._q_proj``, ``..._gate_proj``).

Groups come in two sizes. A weight belongs to one *part* (``q_proj``, ``down_proj``, ...); parts
make up the five recipe groups (``attention`` = q/k/v, ``feed_forward`` = gate/up/down, ...).
A recipe gives each group one rule, or splits a group into rules for each of its parts (int8
``v_proj`` beside int4 ``q_proj``/``k_proj``); this table is the only place that knows the split.
"""

from __future__ import annotations

import re

PART_PATTERNS: dict[str, re.Pattern[str]] = {
    "embedding": re.compile(r"embed_tokens"),
    "q_proj": re.compile(r"(?<![a-z])q_proj"),
    "k_proj": re.compile(r"(?<![a-z])k_proj"),
    "v_proj": re.compile(r"(?<![a-z])v_proj"),
    "o_proj": re.compile(r"(?<![a-z])o_proj"),
    "gate_proj": re.compile(r"gate_proj"),
    "up_proj": re.compile(r"(?<![a-z])up_proj"),
    "down_proj": re.compile(r"down_proj"),
    "head": re.compile(r"(?<![a-z])head"),
}

# recipe group -> its parts, in model order
GROUP_PARTS: dict[str, tuple[str, ...]] = {
    "embedding": ("embedding",),
    "attention": ("q_proj", "k_proj", "v_proj"),
    "projections": ("o_proj",),
    "feed_forward": ("gate_proj", "up_proj", "down_proj"),
    "head": ("head",),
}
GROUP_OF_PART: dict[str, str] = {part: group for group, parts in GROUP_PARTS.items() for part in parts}

# Float terms the export adds: a grid's exact correction (negative_scales.py) and the weight columns of
# the channels kept float on LiteRT (litert_split.py). Never a recipe's to quantize.
CORRECTION = "block_sum_correction"
FLOAT_CHANNEL_WEIGHT = "float_channel_weight"
# The fixed rotations of embg/quantize/rotation.py stay float too: they carry no checkpoint weight.
INPUT_ROTATION = "input_rotation"
TABLE_ROTATION = "table_rotation"
NEVER_QUANTIZED = re.compile(rf"(?:^|[._/])(?:{CORRECTION}|{FLOAT_CHANNEL_WEIGHT}|{INPUT_ROTATION}|{TABLE_ROTATION})$")
# the decoder layer in a weight's path (torch, ONNX initializer and LiteRT-planned names all keep it)
LAYER_INDEX = re.compile(r"(?:^|[._/])layers[._](\d+)(?=[._/]|$)")
LAYERED_GROUPS = ("attention", "projections", "feed_forward")  # the groups inside each decoder layer
LAYERED_PARTS = tuple(part for group in LAYERED_GROUPS for part in GROUP_PARTS[group])


def part_of(name: str) -> str | None:
    """The part of a weight name (``q_proj``, ``embedding``, ...), or None for weights recipes never quantize
    (norms, corrections)."""
    if NEVER_QUANTIZED.search(name):
        return None
    matches = [part for part, pattern in PART_PATTERNS.items() if pattern.search(name)]
    if len(matches) > 1:
        raise ValueError(f"weight {name!r} matches several groups: {matches}")
    return matches[0] if matches else None


def layer_of(name: str) -> int | None:
    """The decoder layer index in a weight name, or None outside the decoder layers (table, head)."""
    match = LAYER_INDEX.search(name)
    return int(match.group(1)) if match else None


def group_of(name: str) -> str | None:
    """The recipe group of a weight name (``attention``, ``feed_forward``, ...), or None for norms."""
    part = part_of(name)
    return GROUP_OF_PART[part] if part else None
