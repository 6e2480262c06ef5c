"""Which input width a bundle runs a batch at.

Fixed-shape bundles (LiteRT) hold one signature per sequence bucket: a batch runs in the smallest
bucket at least as wide as its columns, padded (or cut, padding only) to that width. Dynamic-shape
bundles (ONNX) take any width; tools that exercise them at a few fixed widths use DYNAMIC_LENGTHS.
"""

from __future__ import annotations

import numpy as np

#: the widths at which dynamic-shape bundles are timed and compiled (latency, device farms)
DYNAMIC_LENGTHS = (16, 64, 256)


def choose_bucket(buckets: list[int], length: int) -> int:
    """The smallest bucket that holds ``length`` tokens or columns (the largest when none does)."""
    for bucket in buckets:
        if bucket >= length:
            return bucket
    return buckets[-1]


def row_widths(attention_mask: np.ndarray) -> list[int]:
    """Each row's columns up to and including its last unmasked one (at least 1): trailing padding only."""
    kept = np.asarray(attention_mask) > 0
    last = kept.shape[1] - np.argmax(kept[:, ::-1], axis=1)  # one past the last kept column
    return [int(w) for w in np.where(kept.any(axis=1), last, 1)]


def rows_by_bucket(buckets: list[int], attention_mask: np.ndarray) -> dict[int, list[int]]:
    """Row indices grouped by the smallest bucket that holds each row's own tokens, not the batch's width.

    A wider signature rounds the runtime's float kernels differently, and int8 activations turn that
    into a different embedding (docs/onnx-int8.md): a text's bucket must not depend on its neighbours.
    """
    groups: dict[int, list[int]] = {}
    for row, width in enumerate(row_widths(attention_mask)):
        groups.setdefault(choose_bucket(buckets, width), []).append(row)
    return groups


def fit_to(input_ids: np.ndarray, attention_mask: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad or cut (only padding is cut: callers truncate real tokens first) to ``width`` columns."""
    batch, seq = input_ids.shape
    if seq >= width:
        return input_ids[:, :width], attention_mask[:, :width]
    ids = np.zeros((batch, width), dtype=input_ids.dtype)
    mask = np.zeros((batch, width), dtype=attention_mask.dtype)
    ids[:, :seq], mask[:, :seq] = input_ids, attention_mask
    return ids, mask
