"""Cosine drift of each bundle against sentence-transformers on the same token ids.

RANDOM WEIGHTS: these numbers come from a fixture with random weights, which exaggerate int4
drift and hide real activation outliers (docs/measurements.md). They compare recipes on equal
terms; they are not the quality of the real model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

LABEL = "cosine vs sentence-transformers on the same fixture; RANDOM weights (not real-model quality)"


def tokenized_texts(reference) -> list[tuple[np.ndarray, np.ndarray]]:
    """embg's built-in parity texts, one row each (BOS/EOS added by the checkpoint's tokenizer)."""
    from embg.textdata.builtin import parity_texts

    rows = []
    for text in parity_texts():
        # sentence-transformers 6 renamed tokenize() to preprocess(); same ids and mask
        tokenize = getattr(reference.model, "preprocess", None) or reference.model.tokenize
        features = tokenize([text])
        rows.append((features["input_ids"].numpy().astype(np.int64),
                     features["attention_mask"].numpy().astype(np.int64)))
    return rows


def reference_embeddings(directory: Path, reference=None) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """(token rows, reference embeddings) for a fixture directory."""
    from embg.runtimes.reference import SentenceTransformersReference

    reference = reference or SentenceTransformersReference(directory)
    rows = tokenized_texts(reference)
    embeddings = np.concatenate([reference.embed(ids, mask) for ids, mask in rows])
    return rows, embeddings


def drift(embed, rows: list[tuple[np.ndarray, np.ndarray]], reference: np.ndarray) -> dict[str, Any]:
    """Cosine min/mean with the project's one NaN rule: a NaN/inf row counts as cosine -1 (a failure)."""
    from embg.parity.path import drift as parity_drift

    ours = np.concatenate([embed(ids, mask) for ids, mask in rows]).astype(np.float64)
    summary, _ = parity_drift(ours, reference.astype(np.float64))
    six = lambda value: None if value is None else round(value, 6)  # noqa: E731
    return {"texts": len(rows), "nonfinite": summary["nonfinite"],
            "cosine_min": six(summary["cosine_min"]), "cosine_mean": six(summary["cosine_mean"]),
            "tokens_max": int(max(mask.sum() for _, mask in rows)), "label": LABEL}
