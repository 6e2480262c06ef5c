"""``--bits 8``: the rotated int8 preset, or the plain one on a checkpoint where rotation measures worse.

Both presets store per-channel int8 weights and quantize activations per row at run time; they differ
in how a token's outlier channels are kept from coarsening its other channels. ``int8`` keeps each
input's largest channels float and quantizes down_proj's input twice (extra products, slower);
``int8-rotated`` spreads the outliers over all channels with Hadamard rotations folded into the weights
(faster and smaller on the real checkpoint, same floors). On a checkpoint whose outliers rotation does
not tame (the down_proj guard left such layers unrotated on the outlier fixture), the plain preset is
the better one. So both are simulated in torch on texts the calibration never saw, each with the
activation rounding its runtime applies (ONNX symmetric rows, XNNPACK asymmetric rows; float channels
and second passes as the recipe asks), against the float graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from embg.quantize.calibration_texts import Batch
from embg.quantize.channel_peaks import largest_channels, linear_input_peaks
from embg.quantize.groups import part_of
from embg.quantize.recipe import QuantRecipe
from embg.quantize.simulate import (int8_rows, int8_rows_asymmetric, int8_rows_asymmetric_two_pass, int8_rows_two_pass,
                                    outputs_with, outputs_with_activations, recipe_weights, with_float_channels)

Rounding = Callable[[torch.Tensor], torch.Tensor]

#: export target -> (one pass of its per-row int8 activation rounding, the recipe's two-pass form)
ROW_ROUNDING: dict[str, tuple[Rounding, Rounding]] = {
    "onnx": (int8_rows, int8_rows_two_pass),
    "tflite": (int8_rows_asymmetric, int8_rows_asymmetric_two_pass),
}

#: How far under the plain preset's simulated cosine the rotated one may fall and still be kept: it is
#: faster and smaller, and on the real checkpoint the two are equal within these margins. On the outlier
#: fixtures, where rotation measures worse, the gap is several times wider (docs/measurements.md).
TOLERANCE = {"cosine_min": 0.0005, "cosine_mean": 0.0002}


@dataclass(frozen=True)
class Simulated:
    cosine_min: float
    cosine_mean: float

    def to_dict(self) -> dict[str, float]:
        return {"cosine_min": round(self.cosine_min, 6), "cosine_mean": round(self.cosine_mean, 6)}

    def text(self) -> str:
        return f"{self.cosine_min:.5f} / {self.cosine_mean:.5f}"


def _plan(graph: torch.nn.Module, recipe: QuantRecipe, target: str, calibration: list[Batch]
          ) -> tuple[dict[str, Rounding], dict[str, Rounding]]:
    """(activation rounding, weight rounding) by weight name, as ``target`` runs ``recipe``: every decoder linear
    input per row (the head's stays float in both presets), float channels and second passes as asked."""
    rows, two_pass = ROW_ROUNDING[target]
    count = recipe.float_channels_on(target)
    twice = recipe.residual_pass_on(target)
    peaks = linear_input_peaks(graph, calibration) if count else {}
    weights = recipe_weights(graph, recipe, {})
    activations = {}
    for name, module in graph.named_modules():
        weight = f"{name}.weight"
        part = part_of(weight) if isinstance(module, torch.nn.Linear) else None
        if part in (None, "head") or weight not in weights:
            continue
        kept = largest_channels(peaks[weight], count) if count else None
        activations[weight] = with_float_channels(two_pass if part in twice else rows, kept)
        # the same split on the weight's last axis, its input columns: both targets zero the kept columns in
        # the int8 weight (its scales come from the others) and carry them in a float product
        weights[weight] = with_float_channels(weights[weight], kept)
    return activations, weights


def simulate(graph: torch.nn.Module, recipe: QuantRecipe, target: str, calibration: list[Batch],
             held_out: list[Batch], reference: torch.Tensor | None = None) -> Simulated:
    """``recipe``'s int8 weights and ``target``'s activation rounding on ``graph`` (already rotated when the
    recipe rotates), cosine against the float graph (or ``reference``, its outputs) on ``held_out``."""
    if reference is None:
        reference = outputs_with(graph, held_out)
    activations, weights = _plan(graph, recipe, target, calibration)
    ours = outputs_with_activations(graph, held_out, activations, weights)
    cosine = F.cosine_similarity(ours.double(), reference.double(), dim=-1)
    return Simulated(float(cosine.min()), float(cosine.mean()))


def rotated_shortfall(rotated: Simulated, plain: Simulated, plain_name: str, texts: int) -> str | None:
    """Why the rotated preset is not kept (it simulates worse than ``plain`` beyond TOLERANCE), or None."""
    worse = [metric for metric, margin in TOLERANCE.items() if getattr(rotated, metric) < getattr(plain, metric) - margin]
    if not worse:
        return None
    return (f"simulates cosine min / mean {rotated.text()} on {texts} held-out texts, under {plain_name}'s "
            f"{plain.text()} (rotation does not tame this model's outlier channels)")
