"""The Runtime interface: load an artifact, embed token ids, report versions.

Tokenization stays outside runtimes so the same parity path drives every engine.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np

from embg.registry import Registry

if TYPE_CHECKING:
    from embg.bundle import Artifact

log = logging.getLogger(__name__)

RUNTIMES: Registry[type["Runtime"]] = Registry("runtime")


class Runtime(ABC):
    """One inference engine holding one loaded artifact."""

    name: str = ""
    #: the bundle target this runtime executes ("onnx", "tflite"); None for the reference
    target: str | None = None

    @property
    def max_length(self) -> int | None:
        """Longest sequence this runtime accepts, or None when unbounded (up to the model's positions)."""
        return None

    @abstractmethod
    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """float32 [B, D] embeddings for int [B, S] ids and mask (1 = real token)."""

    @abstractmethod
    def version_info(self) -> dict[str, Any]:
        """Engine name and versions, for reports and manifests."""

    def close(self) -> None:  # engines that hold native resources override this
        return None


def truncate_to(input_ids: np.ndarray, attention_mask: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut inputs longer than ``limit`` (with a warning): a runtime never crashes on long text."""
    if input_ids.shape[1] <= limit:
        return input_ids, attention_mask
    lengths = attention_mask.sum(axis=1)
    log.warning("%d input(s) longer than %d tokens were truncated by the runtime; tokenize with "
                "max_length=%d to keep EOS", int((lengths > limit).sum()), limit, limit)
    return input_ids[:, :limit], attention_mask[:, :limit]


def load_runtime(name: str, artifact: "Artifact", **options: Any) -> Runtime:
    return RUNTIMES.get(name)(artifact, **options)
