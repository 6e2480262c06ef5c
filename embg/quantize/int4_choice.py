"""``--bits 4`` on a checkpoint that is not QAT: the calibrated recipe, or min-max when that measures better.

The two candidates quantize the same weights to the same bits and block sizes (same file size);
they differ only in how integers and scales are chosen. Both are simulated in torch on texts the
calibration never saw (embg/quantize/calibration_texts.py): the export graph with each recipe's
weights substituted, against the float graph. Weight-only: the activation quantization the
targets add is the same for both (embg/quantize/simulate.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from embg.quantize.recipe import CALIBRATED_ALGORITHMS, GroupRule, QuantRecipe
from embg.quantize.calibration_texts import Batch
from embg.quantize.simulate import outputs_with, recipe_weights


#: A target's preferred ``--bits`` preset (ExportTarget.bits_presets) is kept only when its held-out
#: simulation clears embg-validate's int4 gate (embg/validate/thresholds.py; a test keeps the two equal);
#: under it the preset collapsed on this model (GPTQ on a down_proj feeding an amplified channel did, on the
#: tiny-outliers fixture) and the export falls back to the generic preset.
HOLD_FLOOR = {"cosine_min": 0.95, "cosine_mean": 0.97}
HOLD_FLOOR_TEXT = f"{HOLD_FLOOR['cosine_min']:g} / {HOLD_FLOOR['cosine_mean']:g}"


def minmax_counterpart(recipe: QuantRecipe) -> QuantRecipe:
    """``recipe`` with every calibrated rule turned into min-max (same bits, same blocks, same size)."""
    def minmax(rules: dict[str, GroupRule]) -> dict[str, GroupRule]:
        return {key: replace(rule, algorithm="min-max") if rule.algorithm in CALIBRATED_ALGORITHMS else rule
                for key, rule in rules.items()}

    layer_rules = tuple(replace(entry, rules=minmax(entry.rules)) for entry in recipe.layer_rules)
    # every other field (float channels, residual passes, ...) carried over: only the scales differ
    return replace(recipe, name=f"{recipe.name}-minmax", description=f"{recipe.description} (min-max scales, "
                   "no calibration)", rules=minmax(recipe.rules), layer_rules=layer_rules)


@dataclass(frozen=True)
class Int4Choice:
    recipe: QuantRecipe
    calibrated: tuple[float, float]  # cosine (min, mean) vs the float graph, simulated
    minmax: tuple[float, float]
    texts: int

    @property
    def reason(self) -> str:
        cal, mm = self.calibrated, self.minmax
        return (f"simulated on {self.texts} held-out texts: calibrated cosine min {cal[0]:.4f} / mean {cal[1]:.4f}, "
                f"min-max {mm[0]:.4f} / {mm[1]:.4f}")

    def to_dict(self) -> dict:
        return {"chosen": self.recipe.name, "texts": self.texts,
                "calibrated": {"cosine_min": round(self.calibrated[0], 6), "cosine_mean": round(self.calibrated[1], 6)},
                "minmax": {"cosine_min": round(self.minmax[0], 6), "cosine_mean": round(self.minmax[1], 6)}}


def choose_int4(graph: torch.nn.Module, recipe: QuantRecipe, grids: dict, held_out: list[Batch]) -> Int4Choice:
    """Compare ``recipe`` (with its calibrated ``grids``) and its min-max counterpart on ``held_out``."""
    minmax = minmax_counterpart(recipe)
    reference = outputs_with(graph, held_out)
    calibrated = outputs_with(graph, held_out, recipe_weights(graph, recipe, grids))
    plain = outputs_with(graph, held_out, recipe_weights(graph, minmax, {}))

    def stats(ours: torch.Tensor) -> tuple[float, float]:
        cosine = F.cosine_similarity(ours.double(), reference.double(), dim=-1)
        return float(cosine.min()), float(cosine.mean())

    cal, mm = stats(calibrated), stats(plain)
    return Int4Choice(recipe if cal[1] >= mm[1] else minmax, cal, mm, len(reference))
