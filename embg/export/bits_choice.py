"""``--bits N``: a target's preferred preset (ExportTarget.bits_presets), kept only when it measures fit on
this checkpoint, else the generic preset (BITS_TO_PRESET).

How a preferred preset is judged depends on what could go wrong with it on another checkpoint, one check
per ``--bits`` value (HOLD_CHECKS):

* 4 (``int4-rotated-int6``): its GPTQ calibration can collapse (down_proj feeding an amplified channel):
  its held-out simulation must clear embg-validate's int4 gate.
* 8 (``int8-rotated``): rotation may not tame a checkpoint's outlier channels as the plain preset's float
  channels do: its held-out simulation, with the runtime's own int8 activation rounding, must not fall
  under the plain preset's by more than int8_choice.TOLERANCE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from embg.export.base import ExportTarget
from embg.quantize.fit import grid_block_misfits
from embg.quantize.int4_choice import HOLD_FLOOR, HOLD_FLOOR_TEXT
from embg.quantize.recipe import QuantRecipe

Progress = Callable[[str], None]


@dataclass
class BitsChoice:
    """What ``--bits`` resolved to: the recipes to try in order, those passed over and why, the one used, and
    the figures the choice rested on (recipe name -> simulated cosine, when the check simulates)."""
    candidates: list[QuantRecipe]
    bits: int | None = None  # the --bits value, when its target prefers a preset for it
    passed_over: dict[str, str] = field(default_factory=dict)  # recipe name -> why it was not used
    used: str | None = None
    simulated: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"used": self.used, "passed_over": dict(self.passed_over)}
        if self.simulated:
            data["simulated"] = dict(self.simulated)
        return data


class HoldCheck(Protocol):
    """How a preferred preset is judged. ``measure_fallback`` runs on the checkpoint's own graph before the
    preferred preset rotates or calibrates it; ``shortfall`` after, on what that preparation produced."""
    why_preferred: str  # why the target prefers it (printed with the plan; {generic}: the generic preset)
    condition: str  # when it is kept (printed with the plan; {generic} as above)

    def measure_fallback(self, graph, fallback: QuantRecipe) -> None: ...

    def shortfall(self, prepared) -> str | None: ...


class CollapseFloor:
    """--bits 4: the calibrated preset's own held-out simulation (calibrate's choice figures) clears HOLD_FLOOR."""
    why_preferred = "it measured better than {generic} on the real checkpoint"
    condition = f"its blocks fit the model and it simulates above the {HOLD_FLOOR_TEXT} collapse floor"

    def __init__(self, model, target: ExportTarget, choice: BitsChoice, progress: Progress) -> None:
        pass

    def measure_fallback(self, graph, fallback: QuantRecipe) -> None:
        pass  # an absolute floor: nothing to compare with

    def shortfall(self, prepared) -> str | None:
        choice = (prepared.calibration or {}).get("choice")
        if choice is None:
            return None
        figures = choice["calibrated" if prepared.calibration.get("used", True) else "minmax"]
        if all(figures[metric] >= floor for metric, floor in HOLD_FLOOR.items()):
            return None
        return (f"{prepared.recipe.name} simulates cosine min {figures['cosine_min']:.4f} / mean "
                f"{figures['cosine_mean']:.4f} on {choice['texts']} held-out texts, under the {HOLD_FLOOR_TEXT} floor")


class NoWorseThanPlain:
    """--bits 8: the rotated preset simulates no worse than the plain one (int8_choice.TOLERANCE), each with the
    target runtime's int8 activation rounding, on the calibration's held-out texts."""
    why_preferred = "faster and smaller than {generic} at the same floors on the real checkpoint"
    condition = "it simulates no worse than {generic} here (held-out texts, this runtime's int8 rounding)"

    def __init__(self, model, target: ExportTarget, choice: BitsChoice, progress: Progress) -> None:
        from embg.quantize.calibration_texts import batches_for, calibration_split

        calibration, held_out = calibration_split()
        self.calibration = batches_for(model.tokenizer, calibration)
        self.held_out = batches_for(model.tokenizer, held_out)
        self.target, self.choice, self.progress = target.name, choice, progress
        self.texts = sum(len(ids) for ids, _ in self.held_out)
        self.plain = self.reference = None
        self.plain_name = ""

    def measure_fallback(self, graph, fallback: QuantRecipe) -> None:
        from embg.quantize.int8_choice import simulate
        from embg.quantize.simulate import outputs_with

        self.progress(f"simulating {fallback.name} on {self.texts} held-out texts "
                      f"with {self.target}'s int8 activation rounding, to compare the rotated preset with")
        self.reference = outputs_with(graph, self.held_out)  # the float function: rotation keeps it
        self.plain = simulate(graph, fallback, self.target, self.calibration, self.held_out, self.reference)
        self.plain_name = fallback.name
        self.choice.simulated[fallback.name] = self.plain.to_dict()

    def shortfall(self, prepared) -> str | None:
        from embg.quantize.int8_choice import rotated_shortfall, simulate

        rotated = simulate(prepared.graph, prepared.recipe, self.target, self.calibration, self.held_out, self.reference)
        self.choice.simulated[prepared.recipe.name] = rotated.to_dict()
        self.progress(f"simulated cosine min / mean on {self.texts} held-out texts: {prepared.recipe.name} "
                      f"{rotated.text()}, {self.plain_name} {self.plain.text()}")
        reason = rotated_shortfall(rotated, self.plain, self.plain_name, self.texts)
        return None if reason is None else f"{prepared.recipe.name} {reason}"


#: --bits value -> how the target's preferred preset for it is judged
HOLD_CHECKS: dict[int, type] = {4: CollapseFloor, 8: NoWorseThanPlain}


def plan_text(bits: int, preferred: str, generic: str) -> str:
    """One line saying what ``--bits`` will try, for the CLI before the export starts."""
    return f"{preferred} {_kept_when(bits, generic)}"


def _kept_when(bits: int, generic: str) -> str:
    return f"when {HOLD_CHECKS[bits].condition.format(generic=generic)}, else {generic}"


def bits_candidates(target: ExportTarget, recipe: QuantRecipe, graph, progress: Progress) -> BitsChoice:
    """``--bits``: the target's preferred preset for these bits when its blocks fit the model, then the
    generic preset as the fallback; the generic preset alone otherwise."""
    from embg.quantize.recipe import bits_of_preset, load_recipe

    bits = bits_of_preset(recipe.name)
    preferred = target.bits_presets.get(bits) if bits is not None else None
    if preferred is None:
        return BitsChoice([recipe])
    candidate = load_recipe(preferred)
    misfits = grid_block_misfits(candidate, graph)
    if misfits:
        more = f"; {len(misfits) - 1} more" if len(misfits) > 1 else ""
        reason = f"does not fit this model ({misfits[0]}{more})"
        progress(f"--bits {bits}: {target.name}'s preset {candidate.name} {reason}: using recipe {recipe.name}")
        return BitsChoice([recipe], passed_over={candidate.name: reason})
    progress(f"--bits {bits} on {target.name}: trying recipe {candidate.name} first "
             f"({HOLD_CHECKS[bits].why_preferred.format(generic=recipe.name)}); kept {_kept_when(bits, recipe.name)}")
    return BitsChoice([candidate, recipe], bits)


def hold_check(choice: BitsChoice, model, target: ExportTarget, progress: Progress) -> HoldCheck:
    """The check for ``choice``'s preferred preset (its first candidate, when there is a fallback)."""
    return HOLD_CHECKS[choice.bits](model, target, choice, progress)
