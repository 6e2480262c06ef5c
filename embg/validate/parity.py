"""Embed texts through any Runtime and compare with the reference, row by row."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from embg.model.tokenizer import EmbedTokenizer


def embed_texts(runtime, tokenizer: EmbedTokenizer, texts: list[str], prompt: str | None,
                batch_size: int = 8) -> np.ndarray:
    """Tokenize on the host (to the runtime's longest input) and embed in batches."""
    limit = runtime.max_length or tokenizer.max_length
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer.encode(texts[start:start + batch_size], prompt=prompt, max_length=limit)
        rows.append(runtime.embed(batch.input_ids, batch.attention_mask))
    return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / denom


@dataclass
class ParitySummary:
    texts: int
    cosine_min: float
    cosine_mean: float
    max_abs_diff: float
    nonfinite: int

    def to_dict(self) -> dict:
        return {k: (round(v, 7) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(ours: np.ndarray, reference: np.ndarray) -> ParitySummary:
    nonfinite = int((~np.isfinite(ours)).any(axis=-1).sum())
    cos = cosine_rows(ours, reference)
    finite = np.isfinite(cos)
    return ParitySummary(
        texts=len(ours),
        cosine_min=float(np.nanmin(cos)) if finite.any() else float("nan"),
        cosine_mean=float(np.nanmean(cos)) if finite.any() else float("nan"),
        max_abs_diff=float(np.nanmax(np.abs(ours - reference))) if finite.any() else float("nan"),
        nonfinite=nonfinite,
    )
