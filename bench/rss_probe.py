"""Where a TFLite bundle's runtime memory appears: RSS after load and after each bucket's first call.

    python bench/rss_probe.py BUNDLE_DIR [--api compiled|interpreter] [--buckets 32,256]

A diagnostic behind README's note on LiteRT memory (Linux only: reads /proc/self/smaps_rollup).
Anonymous memory is what the runtime allocated itself (XNNPACK's packed weights, arenas);
file-backed pages are the mmapped model and, with the CompiledModel API, the XNNPACK weight cache.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def rollup_mb() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Rss", "Anonymous", "Pss_File"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--api", default="compiled", choices=("compiled", "interpreter"))
    parser.add_argument("--buckets", help="comma-separated, in call order (default: every bucket, smallest first)")
    args = parser.parse_args(argv)

    from embg.bundle import Artifact
    from embg.runtimes import load_all, load_runtime

    load_all()
    artifact = Artifact.load(args.bundle)
    print("start", rollup_mb())
    started = time.perf_counter()
    runtime = load_runtime("litert", artifact, threads=1, api=args.api)
    print(f"loaded in {time.perf_counter() - started:.2f} s", rollup_mb(),
          f"weight cache: {runtime.version_info().get('xnnpack_weight_cache')}")
    buckets = [int(b) for b in args.buckets.split(",")] if args.buckets else runtime.buckets
    for bucket in buckets:
        ids = np.random.default_rng(0).integers(4, 1000, (1, bucket))
        started = time.perf_counter()
        runtime.embed(ids, np.ones_like(ids))
        print(f"seq{bucket} first call {time.perf_counter() - started:.2f} s", rollup_mb())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
