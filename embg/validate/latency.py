"""Latency of a loaded runtime: cold load, then warm p50/p90 per (sequence bucket, batch size).

Buckets come from the bundle: fixed-shape bundles (TFLite) list their signatures in the manifest
and are timed exactly there; dynamic-shape bundles (ONNX) are timed at DYNAMIC_LENGTHS x
DYNAMIC_BATCHES, capped at the runtime's longest input.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from embg.bundle import DYNAMIC_LENGTHS

DYNAMIC_BATCHES = (1, 4)


@dataclass(frozen=True)
class Bucket:
    seq_len: int
    batch: int

    @property
    def key(self) -> str:
        return f"seq{self.seq_len}_b{self.batch}"


def plan(manifest: dict[str, Any], max_length: int | None) -> list[Bucket]:
    """Which (seq_len, batch) shapes to time for this bundle."""
    signatures = manifest.get("signatures") or []
    if signatures:
        return sorted({Bucket(int(s["seq_len"]), int(s.get("batch") or 1)) for s in signatures},
                      key=lambda b: (b.seq_len, b.batch))
    limit = max_length or max(DYNAMIC_LENGTHS)
    lengths = sorted({min(n, limit) for n in DYNAMIC_LENGTHS})
    return [Bucket(n, b) for n in lengths for b in DYNAMIC_BATCHES]


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def measure(embed: Callable[[np.ndarray, np.ndarray], np.ndarray], token_ids: np.ndarray, buckets: list[Bucket],
            repeats: int = 10, warmup: int = 2, progress: Callable[[str], None] = lambda m: None,
            device_clock: Callable[[], float] | None = None) -> dict[str, Any]:
    """Warm timings of ``embed`` on real token ids cut to each bucket's length (all positions real).

    ``device_clock`` (ms of the last call, as the device measured it) replaces the host's clock
    for devices whose every call includes transport and app start (adb).
    """

    def once(ids: np.ndarray, mask: np.ndarray) -> float:
        host_ms = timed(lambda: embed(ids, mask))[1] * 1000.0
        return device_clock() if device_clock else host_ms

    results = {}
    for bucket in buckets:
        row = np.resize(token_ids, bucket.seq_len)  # repeats the text when it is shorter than the bucket
        ids = np.tile(row, (bucket.batch, 1)).astype(np.int64)
        mask = np.ones_like(ids)
        for _ in range(warmup):
            embed(ids, mask)
        times = [once(ids, mask) for _ in range(repeats)]
        results[bucket.key] = {
            "seq_len": bucket.seq_len, "batch": bucket.batch, "runs": repeats,
            "clock": "device" if device_clock else "host",
            "p50_ms": round(float(np.percentile(times, 50)), 3),
            "p90_ms": round(float(np.percentile(times, 90)), 3),
            "per_text_p50_ms": round(float(np.percentile(times, 50)) / bucket.batch, 3),
        }
        progress(f"  latency {bucket.key}: p50 {results[bucket.key]['p50_ms']:.1f} ms")
    return results
