"""The export target interface and its registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from embg.checkpoint.load import LoadedModel
from embg.export.options import ExportOptions
from embg.model.graph import EmbeddingGemmaGraph
from embg.quantize.recipe import QuantRecipe
from embg.registry import Registry


@dataclass
class ExportJob:
    """Everything a target needs to write its model file into a bundle directory."""

    model: LoadedModel
    graph: EmbeddingGemmaGraph
    recipe: QuantRecipe
    stem: str
    seq_lens: tuple[int, ...] = ()
    options: ExportOptions = field(default_factory=ExportOptions)
    grids: dict[str, Any] | None = None  # weight -> (integers, scales) recovered from a QAT checkpoint
    progress: Callable[[str], None] = lambda message: None


@dataclass
class TargetResult:
    model_file: str
    files: list[str]
    manifest: dict[str, Any]


class ExportTarget(ABC):
    name: str = ""
    extension: str = ""
    runtime: str = ""  # the Runtime that executes this target's files here
    #: target-specific options this target takes ("seq_lens" or an ExportOptions field); the pipeline
    #: refuses the others, naming the targets that take them and ``why_not`` this one
    accepted_options: frozenset[str] = frozenset()
    why_not: dict[str, str] = {}
    #: --bits N -> the preset this target prefers over the generic one (BITS_TO_PRESET) when its blocks fit
    #: the model and it passes the held-out check for N (embg/export/bits_choice.py); the generic preset otherwise
    bits_presets: dict[int, str] = {}

    def check_request(self, recipe: QuantRecipe, seq_lens: tuple[int, ...], max_positions: int | None) -> None:
        """Refuse bad arguments before any expensive work (default: accept). ``max_positions`` is None
        before the checkpoint is read."""

    def default_seq_lens(self, max_positions: int) -> tuple[int, ...]:
        return ()

    @abstractmethod
    def export(self, job: ExportJob, bundle: Path) -> TargetResult:
        """Write the model file(s) for ``job`` into ``bundle`` and describe them."""


TARGETS: Registry[ExportTarget] = Registry("target")


def register_target(cls: type[ExportTarget]) -> type[ExportTarget]:
    TARGETS.register(cls.name)(cls())
    return cls
