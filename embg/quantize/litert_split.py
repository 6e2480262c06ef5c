"""Float channels and residual passes on LiteRT, built into the export graph.

XNNPACK (LiteRT's CPU engine) quantizes the input of every dynamic-range FULLY_CONNECTED itself:
one asymmetric int8 grid per row (token) over [min(x, 0), max(x, 0)]. A file cannot hand it finer
activations, so the recipe's ``float_channels`` and ``residual_pass`` are written as graph ops the
converter keeps, around the FULLY_CONNECTED XNNPACK quantizes:

* float channels: the input's n largest calibrated channels (embg/quantize/channel_peaks.py) are
  zeroed before the int8 product (``x * keep_mask``), so a token's outliers no longer set the step of
  its other channels, and are multiplied in float beside it (``x[..., kept] @ W[:, kept].T``);
* residual pass: the graph rounds the input on XNNPACK's own row grid (:func:`xnnpack_int8_rows`) and
  feeds the int8 product that rounded input, which XNNPACK quantizes again to the very same integers;
  the rounding residual ``x - rounded`` goes through a second int8 product on the same weight tensor
  (no extra bytes), XNNPACK giving it its own finer row grid.

In float both forms equal the plain layer (``rounded + residual == x``; masked plus kept channels ==
x), so a float kernel (a GPU delegate) still computes the original function. Measured on the real
checkpoint in docs/onnx-int8.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embg.errors import ExportError
from embg.quantize.groups import CORRECTION, FLOAT_CHANNEL_WEIGHT, part_of
from embg.quantize.negative_scales import BlockSumCorrectedLinear, block_sums

STEPS = 255.0  # int8's 256 levels span [min(x, 0), max(x, 0)] in 255 steps
TINY = 1e-30  # an all-zero row: any step, it rounds to zero


def xnnpack_int8_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded per row on XNNPACK's dynamic-range grid (qd8): multiplier 255 / (max - min) over
    [min(x, 0), max(x, 0)], value ``rint(x * multiplier) / multiplier``.

    XNNPACK also adds a zero point before clamping to int8 and subtracts it after; it cancels except
    where a half-step tie meets the clamp at the row's ends, so it is left out (20 ops per layer fewer
    in every signature). What the residual pass needs is that XNNPACK, quantizing this result again,
    finds the same grid: its ends lie 255 whole steps apart with 0 on it, so it does.
    """
    low = x.amin(-1, keepdim=True).clamp(max=0)
    high = x.amax(-1, keepdim=True).clamp(min=0)
    multiplier = STEPS / (high - low).clamp(min=TINY)
    return torch.round(x * multiplier) * (1.0 / multiplier)


class SplitActivationLinear(nn.Module):
    """A bias-free linear layer whose input reaches XNNPACK's int8 product split as above.

    ``weight`` keeps its parameter name (the quantizer finds it by value, grids by name); with
    float channels its kept columns are zeroed unless ``keep_columns`` (a carried grid must stay whole:
    the zeroed input makes those columns irrelevant anyway). A Q4_0 layer's block-sum ``correction``
    (embg/quantize/negative_scales.py) stays a float product of the whole input.
    """

    def __init__(self, weight: torch.Tensor, kept: np.ndarray | None, residual_pass: bool,
                 keep_columns: bool = False, correction: torch.Tensor | None = None) -> None:
        super().__init__()
        self.residual_pass = residual_pass
        self.corrected = correction is not None
        if self.corrected:
            self.register_buffer(CORRECTION, correction.detach().clone())
        self.split = kept is not None and len(kept) > 0
        weight = weight.detach().clone()
        if self.split:
            index = torch.as_tensor(np.asarray(kept), dtype=torch.long)
            mask = torch.ones(weight.shape[1])
            mask[index] = 0.0
            self.register_buffer("keep_mask", mask)
            self.register_buffer("float_index", index.to(torch.int32))
            self.register_buffer(FLOAT_CHANNEL_WEIGHT, weight[:, index].clone())
            if not keep_columns:
                weight[:, index] = 0.0
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rest = x * self.keep_mask if self.split else x
        if self.residual_pass:
            rounded = xnnpack_int8_rows(rest)
            y = F.linear(rounded, self.weight) + F.linear(rest - rounded, self.weight)
        else:
            y = F.linear(rest, self.weight)
        if self.split:
            y = y + F.linear(x.index_select(-1, self.float_index), getattr(self, FLOAT_CHANNEL_WEIGHT))
        if self.corrected:
            y = y + F.linear(block_sums(x), getattr(self, CORRECTION))
        return y


def split_activations(graph: nn.Module, peaks: dict[str, np.ndarray] | None, float_channels: int,
                      residual_parts: tuple[str, ...], is_quantized: Callable[[str], bool],
                      grids: dict[str, Any] | None = None) -> dict[str, Any]:
    """Replace, in place, each quantized decoder linear layer (``is_quantized(weight name)``) whose input gets
    float channels (calibrated ``peaks`` by weight name) or a residual pass. Returns what was split, for the
    manifest."""
    from embg.quantize.channel_peaks import largest_channels

    split, residual, extra = 0, 0, 0
    for name, module in list(graph.named_modules()):
        weight_name = f"{name}.weight"
        linear = isinstance(module, (nn.Linear, BlockSumCorrectedLinear))
        part = part_of(weight_name) if linear else None
        if part is None or part == "head" or not is_quantized(weight_name):
            continue
        kept = (largest_channels(peaks[weight_name], float_channels)
                if float_channels and peaks and weight_name in peaks else None)
        second = part in residual_parts
        if kept is None and not second:
            continue
        if getattr(module, "bias", None) is not None:  # EmbeddingGemma's decoder has none; never drop one
            raise ExportError(f"{weight_name}: a linear layer with a bias cannot be split for LiteRT's int8 rows")
        parent_path, _, child = name.rpartition(".")
        parent = graph.get_submodule(parent_path) if parent_path else graph
        correction = getattr(module, CORRECTION) if isinstance(module, BlockSumCorrectedLinear) else None
        layer = SplitActivationLinear(module.weight, kept, second, keep_columns=weight_name in (grids or {}),
                                      correction=correction)
        setattr(parent, child, layer)
        split += kept is not None
        residual += second
        extra += 0 if kept is None else getattr(layer, FLOAT_CHANNEL_WEIGHT).numel() * 4
    return {"layers_with_float_channels": split, "layers_with_residual_pass": residual,
            "float_channel_bytes": extra}
