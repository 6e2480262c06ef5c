"""The ONE interleaved measurement loop.

For each repetition: a matmul-throughput sample (the machine limit, in the same run), then for
each thread count, every subject in rotation (the start rotates each repetition so no variant
always follows the same neighbour), every shape once. Other developers' jobs come and go on
this 2-core box; interleaving spreads that noise over all subjects, and ratios are taken
against the eager baseline measured in the same repetitions.

A sample is the mean of ``inner`` back-to-back calls, ``inner`` chosen at warm-up so that a
sample lasts >= MIN_SAMPLE_S (short queries would otherwise be timer and scheduler noise).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from typing import Any, Callable

import numpy as np

from bench.plan import Plan, Shape
from bench.subjects import token_ids

MIN_SAMPLE_S = 0.1
MAX_INNER = 20
# A call slower than this at warm-up is timed once, not every repetition: PyTorch with 2 threads
# can collapse tens of times over on a busy 2-core box and would otherwise eat the whole budget.
MAX_CALL_S = 15.0


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_loop(plan: Plan, subjects: list[Any], vocab: int, config: dict[str, Any],
             progress: Callable[[str], None]) -> tuple[dict[str, Any], list[list[dict[str, Any]]]]:
    """{subject: {threads: {shape: stats}}} and the matmul samples."""
    from bench.machine import matmul_sample

    inputs = {shape.key: token_ids(shape, vocab) for shape in plan.shapes}
    inner: dict[tuple[str, int, str], int] = {}
    capped: dict[tuple[str, int, str], float] = {}
    progress("warm-up: every subject x threads x shape")
    for subject in subjects:
        for threads in plan.threads:
            for shape in plan.shapes:
                if not subject.supports(shape):
                    continue
                ids, mask = inputs[shape.key]
                out = subject.run(threads, ids, mask, shape)  # first call: graph preparation, arenas
                if not np.isfinite(out).all():
                    raise RuntimeError(f"{subject.name} gives NaN/inf at {shape.key}")
                once = _timed(lambda: subject.run(threads, ids, mask, shape))
                key = (subject.name, threads, shape.key)
                if once > MAX_CALL_S:
                    capped[key] = once * 1000.0
                    progress(f"  {subject.name} @{threads}t {shape.key}: {once:.0f} s per call; timed once, "
                             "not repeated")
                inner[key] = int(min(MAX_INNER, max(1, np.ceil(MIN_SAMPLE_S / once))))
    samples: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    matmul_samples = []
    for rep in range(plan.repeats):
        matmul_samples.append(matmul_sample(config, min_time=0.15, rounds=3))
        order = subjects[rep % len(subjects):] + subjects[:rep % len(subjects)]
        for threads in plan.threads:
            for subject in order:
                for shape in plan.shapes:
                    if not subject.supports(shape):
                        continue
                    if (subject.name, threads, shape.key) in capped:
                        continue
                    ids, mask = inputs[shape.key]
                    n = inner[(subject.name, threads, shape.key)]
                    seconds = _timed(lambda: [subject.run(threads, ids, mask, shape) for _ in range(n)])
                    samples[(subject.name, threads, shape.key)].append(seconds / n * 1000.0)
        s256 = {s.name: samples.get((s.name, plan.threads[0], "s256"), [None])[-1] for s in subjects}
        progress(f"repetition {rep + 1}/{plan.repeats} done; s256 @{plan.threads[0]}t ms: "
                 + ", ".join(f"{k} {v:.0f}" for k, v in s256.items() if v))
    for key, ms in capped.items():
        samples[key] = [ms]
    results: dict[str, Any] = {}
    for subject in subjects:
        per_threads: dict[str, Any] = {}
        for threads in plan.threads:
            per_shape = {}
            for shape in plan.shapes:
                values = samples.get((subject.name, threads, shape.key))
                key = (subject.name, threads, shape.key)
                per_shape[shape.key] = _stats(shape, values, inner.get(key), subject.bucket(shape))
                per_shape[shape.key]["capped_single_call"] = key in capped
            per_threads[str(threads)] = per_shape
        results[subject.name] = per_threads
    return results, matmul_samples


def _stats(shape: Shape, values: list[float] | None, inner: int | None, bucket: int | None) -> dict[str, Any]:
    base = {"tokens": shape.tokens, "batch": shape.batch, "pad_to": shape.pad_to, "bucket": bucket}
    if not values:
        return {**base, "median_ms": None, "min_ms": None, "samples_ms": [], "inner": None}
    return {**base, "median_ms": round(statistics.median(values), 3), "min_ms": round(min(values), 3),
            "samples_ms": [round(v, 3) for v in values], "inner": inner}
