"""Export options, typed: what a user asks for besides model, target, recipe, dim and buckets.

Each target declares which of them it accepts (``ExportTarget.accepted_options``); asking a target
for an option it does not take is an error naming the targets that do, never silently ignored.
Anything that would run fp16 activations is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from embg.errors import EmbgError, ExportError
from embg.quantize.recipe import FP16_HINT, FP16_REASON

#: option names (as a caller might spell them) that ask for fp16 activations
FP16_OPTIONS = ("fp16", "float16", "half", "keep_io_types", "precision")
#: how each option is spelled on the command line, for messages
FLAGS = {"web_compatible": "--web-compatible", "force_grid": "--force-grid", "auto_qat": "--bits",
         "seq_lens": "--seq-lens"}
#: forms of the sliding-window layers: "banded" (exact, the default) or "dense" (every sliding layer as one
#: [S, S] product, the graph before banding: for benchmarks)
ATTENTION_FORMS = ("banded", "dense")
#: options that take a value from a fixed list (the rest are flags)
CHOICES = {"attention": ATTENTION_FORMS}


@dataclass(frozen=True)
class ExportOptions:
    web_compatible: bool = False  # onnx: no GatherBlockQuantized (onnxruntime-web lacks it)
    force_grid: bool = False      # -qat recipes: proceed when weights are off the Q4_0/Q8_0 grid (warns)
    auto_qat: bool = False        # --bits: use the -qat recipe when every weight sits on its grid
    attention: str = "banded"     # sliding layers: "banded" (exact) or "dense" (before banding, for benchmarks)

    def __post_init__(self) -> None:
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise EmbgError(f"{name} option must be one of {list(choices)}, got {getattr(self, name)!r}")

    @classmethod
    def parse(cls, options: "ExportOptions | Mapping[str, Any] | None") -> "ExportOptions":
        """Options from a mapping (library callers); fp16 requests and unknown names are errors."""
        if isinstance(options, ExportOptions):
            return options
        options = dict(options or {})
        asked = [key for key in FP16_OPTIONS if options.get(key) not in (None, False, "fp32", "float32")]
        if asked:
            raise ExportError(f"export option(s) {asked} would run fp16 activations and are refused: {FP16_REASON}; "
                              f"{FP16_HINT}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known - set(FP16_OPTIONS))
        if unknown:
            raise EmbgError(f"unknown export option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{key: (value if key in CHOICES else bool(value)) for key, value in options.items()
                      if key in known})

    def asked(self) -> set[str]:
        """The names of the options set (flags set to True, choices other than their default)."""
        return {f.name for f in fields(self) if getattr(self, f.name) != f.default}
