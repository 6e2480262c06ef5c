"""The fp16-safe rewrite of the export graph: the same fp32 function, no intermediate near fp16's limit.

EmbeddingGemma's residual stream reaches ~1.2e5 in a few channels (fp16 holds 65504), and RMSNorm
squares it. Gemma's RMSNorm is scale-invariant, so the residual stream can be scaled by a constant
``a`` folded into weights without changing what the model computes:

* the embedding output (``embed_scale`` becomes sqrt(hidden) * a) and the outputs of every
  ``post_attention_layernorm`` / ``post_feedforward_layernorm`` (their gain (1 + w) becomes
  a * (1 + w)) are scaled by ``a``, so every residual add is scaled by ``a``;
* every norm that reads the residual (``input_layernorm``, ``pre_feedforward_layernorm``, the
  final ``norm``) undoes it; their eps becomes eps * a^2, so even eps's share stays exact.

Every RMSNorm is also restated (``RMSNorm.row_scaled``): the row is divided by its own max |x|
before squaring, so squares and means stay <= 1 whatever the input; and norms store their gain
itself (``unit_offset`` 0) instead of w with 1 + w computed at run time. The graph pools as a
weighted sum (no sum of 2048 tokens before the division), L2-normalises x / max|x|, and masks
with a floor fp16 can hold. With ``a`` a power of two the fold itself is exact in float32.

``fp16_safe_graph`` rewrites and then measures every intermediate on real text (embg/model/
intermediates.py); the export refuses a graph whose largest one is not below ``FP16_LIMIT``
(65504 / 4: a 4x margin for texts unlike the calibration set).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from embg.errors import ExportError
from embg.model.graph import FULL, SLIDING, EmbeddingGemmaGraph, RMSNorm

FP16_MAX = 65504.0
SAFETY = 4.0
FP16_LIMIT = FP16_MAX / SAFETY  # every intermediate must stay below this on real text
# Additive mask floor in the rewritten graph: representable in fp16 (finfo(float32).min becomes -inf
# there, and a fully masked row of -inf is NaN), far below any attention score.
FP16_MASK_FLOOR = -4096.0
RESIDUAL_NORMS = ("input_layernorm", "pre_feedforward_layernorm")  # read the residual: undo the scale
OUTPUT_NORMS = ("post_attention_layernorm", "post_feedforward_layernorm")  # write into it: apply the scale


def is_power_of_two(value: float) -> bool:
    return value > 0 and math.frexp(value)[0] == 0.5


def make_fp16_safe(graph: EmbeddingGemmaGraph, residual_scale: float) -> dict[str, Any]:
    """Rewrite ``graph`` in place (fp32 function unchanged); returns a summary for the manifest."""
    if graph.fp16_safe:
        raise ValueError("the graph is already fp16-safe")
    if not is_power_of_two(residual_scale) or residual_scale > 1:
        raise ValueError(f"residual_scale must be a power of two <= 1, got {residual_scale}")
    a = float(residual_scale)
    with torch.no_grad():
        for norm in graph.modules():
            if isinstance(norm, RMSNorm):  # store the gain itself: a * (1 + w) in fp16 keeps its digits
                norm.weight.copy_(norm.gain())
                norm.unit_offset = 0.0
                norm.row_scaled = True
        graph.embed_scale.mul_(a)
        for layer in graph.layers:
            for name in OUTPUT_NORMS:
                getattr(layer, name).weight.mul_(a)
            for name in RESIDUAL_NORMS:
                getattr(layer, name).eps *= a * a
        graph.norm.eps *= a * a
    graph.mask_floor = FP16_MASK_FLOOR
    graph.fp16_safe = True
    return {"residual_scale": a, "norms": "row-scaled (x / max|x| before squaring), gains stored",
            "mask_floor": FP16_MASK_FLOOR, "limit": FP16_LIMIT}


def to_half(graph: EmbeddingGemmaGraph, require_safe: bool = True) -> EmbeddingGemmaGraph:
    """``graph`` (fp16-safe) with fp16 weights and activations; rope angles stay float32, output float32.

    ``require_safe=False`` is for showing what the plain graph does in fp16 (it overflows): it gets
    the fp16 mask floor too, so overflow is the only difference."""
    if require_safe and not graph.fp16_safe:
        raise ValueError("only an fp16-safe graph may run in fp16 (the plain graph overflows)")
    graph.mask_floor = FP16_MASK_FLOOR
    graph = graph.half()
    for layer_type in (SLIDING, FULL):  # position * frequency needs float32 (positions reach 2047)
        name = f"inv_freq_{layer_type}"
        setattr(graph, name, getattr(graph, name).float())
    return graph


def fp16_safe_graph(graph: EmbeddingGemmaGraph, residual_scale: float,
                    batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    """Rewrite ``graph`` and prove it on ``batches``: the manifest's ``activation_precision``."""
    from embg.model.intermediates import measure

    summary = make_fp16_safe(graph, residual_scale)
    found = measure(graph, batches)
    largest = found.overall
    if not largest < FP16_LIMIT:
        halvings = max(1, math.ceil(math.log2(largest / FP16_LIMIT))) if math.isfinite(largest) else 1
        raise ExportError(f"fp16-safe graph: an intermediate reaches {largest:.4g} on the calibration texts, above "
                          f"65504/{SAFETY:g} = {FP16_LIMIT:g}; this checkpoint needs a smaller residual_scale "
                          f"(try {residual_scale / 2 ** halvings:g})")
    return {"required": "fp16-safe", **summary, "max_intermediate": round(largest, 1),
            "fp16_headroom": round(FP16_MAX / largest, 2),
            "measured_on": "the built-in calibration texts (query and document prompts, <= 256 tokens)",
            "note": "fp16 activations are safe (GPU fp16 precision, fp16 NPUs); the float32 function is unchanged"}
