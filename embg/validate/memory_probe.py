"""Peak RSS of one runtime, measured in its own process: ``python -m embg.validate.memory_probe BUNDLE``.

Run as a separate process so the validator's own memory (reference model, texts, other bundles)
never counts. Prints one JSON object on stdout. ru_maxrss is the process high-water mark; the
value after imports is subtracted to give what loading + running the bundle itself costs.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np


def peak_rss_mb() -> float:
    """High-water RSS of this process in MB.

    Linux: VmHWM from /proc, because ru_maxrss survives fork+exec and would report the (large)
    parent validator's peak instead of ours. Elsewhere ru_maxrss (kilobytes on Linux/BSD, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    scale = 1.0 / 1024.0 if sys.platform != "darwin" else 1.0 / (1024.0 * 1024.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def probe(bundle: str, runtime_name: str | None, threads: int | None, seq_len: int) -> dict:
    from embg.bundle import Artifact
    from embg.runtimes import load_all, load_runtime

    load_all()
    artifact = Artifact.load(bundle)
    name = runtime_name or artifact.manifest["runtime"]
    after_imports = peak_rss_mb()
    start = time.perf_counter()
    runtime = load_runtime(name, artifact, threads=threads)
    load_s = time.perf_counter() - start
    after_load = peak_rss_mb()
    if runtime.max_length:
        seq_len = min(seq_len, runtime.max_length)
    ids = np.full((1, seq_len), 7, dtype=np.int64)
    out = runtime.embed(ids, np.ones_like(ids))
    peak = peak_rss_mb()
    return {"runtime": name, "seq_len": seq_len, "load_s": round(load_s, 4),
            "after_imports_mb": round(after_imports, 1), "after_load_mb": round(after_load, 1),
            "peak_rss_mb": round(peak, 1), "runtime_rss_mb": round(peak - after_imports, 1),
            "output_finite": bool(np.isfinite(out).all())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embg.validate.memory_probe")
    parser.add_argument("bundle")
    parser.add_argument("--runtime")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args(argv)
    print(json.dumps(probe(args.bundle, args.runtime, args.threads, args.seq_len)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
