"""Drift and retrieval metrics between bundle embeddings and reference embeddings (pure numpy).

Every function takes already-normalised float32 rows; none knows about runtimes or reports.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats

from embg.parity.path import drift, rounded

__all__ = ["drift", "renormalise", "retrieval", "histogram", "spearman", "kendall_tau_b"]

TOP_K = 10
_r = rounded  # NaN becomes None so report.json stays valid JSON (and the gate fails it)


def renormalise(x: np.ndarray, dim: int) -> np.ndarray:
    """Matryoshka: keep the first ``dim`` components, then L2-normalise again."""
    cut = np.asarray(x[:, :dim], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (cut / np.linalg.norm(cut, axis=1, keepdims=True)).astype(np.float32)


def _rank_correlation(test, a: np.ndarray, b: np.ndarray) -> float:
    """scipy's statistic; 1.0 when it is undefined (fewer than two documents, or one side all tied:
    there is no ordering to disagree about)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input before returning NaN
        value = float(test(a, b).statistic) if len(a) > 1 else math.nan
    return value if math.isfinite(value) else 1.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (ties share their average rank)."""
    return _rank_correlation(stats.spearmanr, a, b)


def kendall_tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (corrected for ties)."""
    return _rank_correlation(stats.kendalltau, a, b)


def top_k(scores: np.ndarray, k: int) -> list[set[int]]:
    return [set(np.argsort(-row, kind="mergesort")[:k].tolist()) for row in scores]


def retrieval(ours_q: np.ndarray, ours_d: np.ndarray, ref_q: np.ndarray, ref_d: np.ndarray,
              k: int = TOP_K) -> dict[str, Any]:
    """Agreement of query -> document rankings between bundle and reference, plus cross-precision recall.

    top10_overlap: |top-k(bundle) & top-k(reference)| / k, mean and min over queries.
    spearman / kendall: rank correlation of each query's scores over all documents (mean, min).
    cross_recall_at_10: bundle queries searched against REFERENCE documents (on-device query, server
    index), recall of the reference-vs-reference top-k.
    """
    if len(ours_q) == 0 or len(ours_d) == 0:
        return {"queries": len(ours_q), "documents": len(ours_d), "k": 0}
    k = min(k, len(ours_d))
    clean = lambda x: np.nan_to_num(np.asarray(x, dtype=np.float64), nan=-2.0, posinf=-2.0, neginf=-2.0)  # noqa: E731
    ours, ref, cross = clean(ours_q) @ clean(ours_d).T, clean(ref_q) @ clean(ref_d).T, clean(ours_q) @ clean(ref_d).T
    ref_top, ours_top, cross_top = top_k(ref, k), top_k(ours, k), top_k(cross, k)
    overlap = np.array([len(a & b) / k for a, b in zip(ours_top, ref_top)])
    recall = np.array([len(a & b) / k for a, b in zip(cross_top, ref_top)])
    # identical inputs (e.g. two texts equal after truncation) tie exactly in one engine and differ by
    # float rounding in the other; rounding to 1e-6 makes them tie on both sides instead of swapping
    tied_ours, tied_ref = np.round(ours, 6), np.round(ref, 6)
    rho = np.array([spearman(o, r) for o, r in zip(tied_ours, tied_ref)])
    tau = np.array([kendall_tau_b(o, r) for o, r in zip(tied_ours, tied_ref)])
    return {
        "queries": int(len(ours_q)), "documents": int(len(ours_d)), "k": int(k),
        "top10_overlap_mean": _r(overlap.mean()), "top10_overlap_min": _r(overlap.min()),
        "spearman_mean": _r(rho.mean()), "spearman_min": _r(rho.min()),
        "kendall_mean": _r(tau.mean()), "kendall_min": _r(tau.min()),
        "cross_recall_at_10": _r(recall.mean()), "cross_recall_at_10_min": _r(recall.min()),
    }


def histogram(values: np.ndarray, limit: float | None = None, bins: int = 30) -> dict[str, list[float]]:
    """Histogram of per-text cosine for the report; the range always shows the threshold with room below it."""
    values = np.asarray(values, dtype=np.float64)
    high = max(1.0, float(values.max())) if len(values) else 1.0
    low = float(values.min()) if len(values) else 0.0
    if limit is not None:
        low = min(low, limit - (1.0 - limit))  # e.g. 0.9998 for the fp32 floor 0.9999
    counts, edges = np.histogram(values, bins=bins, range=(min(low, high - 1e-6), high))
    return {"edges": [round(float(e), 9) for e in edges], "counts": counts.astype(int).tolist()}
