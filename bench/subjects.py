"""What the loop times: a loaded bundle (one runtime instance per thread count) or the eager baseline.

Each subject runs a Shape: ``tokens`` real tokens per row, ``batch`` rows, and for the
fixed-length case the same query padded to ``pad_to`` (ONNX: mask zeros up to 256; TFLite:
forced through the seq-``pad_to`` signature, as a seq-256-only file would run it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.plan import BASELINE, Shape, Variant


def token_ids(shape: Shape, vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic ids (no PAD/EOS/BOS/UNK), full mask; padded to ``pad_to`` with mask zeros."""
    rng = np.random.default_rng(seed + shape.tokens)
    ids = rng.integers(4, vocab, size=(shape.batch, shape.tokens), dtype=np.int64)
    mask = np.ones_like(ids)
    if shape.pad_to:
        ids = np.concatenate([ids, np.zeros((shape.batch, shape.pad_to - shape.tokens), np.int64)], axis=1)
        mask = np.concatenate([mask, np.zeros_like(ids[:, shape.tokens:])], axis=1)
    return ids, mask


class EagerSubject:
    """sentence-transformers on the checkpoint; torch threads pinned before every call."""

    name = BASELINE
    target = "torch"

    def __init__(self, directory: Path, threads: tuple[int, ...]) -> None:
        from embg.runtimes.reference import SentenceTransformersReference

        self.reference = SentenceTransformersReference(directory)
        self.threads = threads

    def supports(self, shape: Shape) -> bool:
        return shape.pad_to is None  # eager has no fixed length: padding it proves nothing

    def run(self, threads: int, ids: np.ndarray, mask: np.ndarray, shape: Shape) -> np.ndarray:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return self.reference.embed(ids, mask)

    def bucket(self, shape: Shape) -> int | None:
        return None

    def close(self) -> None:
        del self.reference


class BundleSubject:
    """One bundle, loaded once per thread count (engines fix their thread pools at load)."""

    def __init__(self, variant: Variant, bundle: Path, threads: tuple[int, ...]) -> None:
        from embg.bundle import Artifact
        from embg.runtimes import load_all, load_runtime

        load_all()
        self.variant = variant
        self.name = variant.name
        self.target = variant.target
        self.artifact = Artifact.load(bundle)
        self.runtimes: dict[int, Any] = {t: load_runtime(variant.runtime, self.artifact, threads=t) for t in threads}

    @property
    def buckets(self) -> list[int]:
        return sorted(int(s["seq_len"]) for s in self.artifact.manifest.get("signatures", []))

    def supports(self, shape: Shape) -> bool:
        if self.target != "tflite":
            return True
        width = shape.pad_to or shape.tokens
        return width <= self.buckets[-1] and (shape.pad_to is None or shape.pad_to in self.buckets)

    def bucket(self, shape: Shape) -> int | None:
        if self.target != "tflite":
            return None
        if shape.pad_to:
            return shape.pad_to
        from embg.bundle import choose_bucket

        return choose_bucket(self.buckets, shape.tokens)

    def run(self, threads: int, ids: np.ndarray, mask: np.ndarray, shape: Shape) -> np.ndarray:
        runtime = self.runtimes[threads]
        if self.target == "tflite" and shape.pad_to:
            # The runtime would pick the smallest bucket from the mask; force the seq-pad_to signature.
            from embg.bundle import fit_to

            ids32, mask32 = fit_to(ids.astype(np.int32), mask.astype(np.int32), shape.pad_to)
            name = runtime.signatures[shape.pad_to]
            return np.concatenate([runtime._run_one(name, ids32[i:i + 1], mask32[i:i + 1])
                                   for i in range(len(ids32))])
        return runtime.embed(ids, mask)

    def close(self) -> None:
        for runtime in self.runtimes.values():
            runtime.close()
        self.runtimes.clear()
