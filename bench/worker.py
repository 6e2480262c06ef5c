"""Work the harness runs in child processes, so each one's time and memory are its own.

    python -m bench.worker fixture KIND
    python -m bench.worker export --model M --target T --recipe R --out DIR [--seq-lens 64,256] [--option K=V]
    python -m bench.worker probe-reference DIR [--threads N] [--seq-len 256]

Each prints one JSON object as its last stdout line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _peak_mb() -> float:
    from embg.validate.memory_probe import peak_rss_mb  # VmHWM: this process only, not the parent's

    return peak_rss_mb()


def cmd_fixture(args: argparse.Namespace) -> dict:
    from embg.fixtures import ensure_fixture
    from embg.checkpoint.resolve import fixture_cache_dir

    start = time.perf_counter()
    directory = ensure_fixture(args.kind, fixture_cache_dir())
    return {"kind": args.kind, "directory": str(directory), "seconds": round(time.perf_counter() - start, 1)}


def cmd_export(args: argparse.Namespace) -> dict:
    from embg.export.pipeline import ExportRequest, export_bundle
    from embg.quantize.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    seq_lens = tuple(int(s) for s in args.seq_lens.split(",")) if args.seq_lens else ()
    start = time.perf_counter()
    options = dict(option.split("=", 1) for option in args.option)
    out = export_bundle(ExportRequest(model=args.model, target=args.target, recipe=recipe, out=Path(args.out),
                                      seq_lens=seq_lens, parity=False, options=options),
                        # timestamps show which phase (convert, quantize, verify) takes the time
                        progress=lambda m: print(f"[{time.perf_counter() - start:7.1f}s] {m}", file=sys.stderr,
                                                 flush=True))
    return {"bundle": str(out), "export_s": round(time.perf_counter() - start, 2), "peak_rss_mb": round(_peak_mb(), 1)}


def cmd_probe_reference(args: argparse.Namespace) -> dict:
    """Cold load and peak RSS of PyTorch eager (sentence-transformers), as memory_probe does for bundles."""
    import torch

    from embg.runtimes.reference import SentenceTransformersReference

    torch.set_num_threads(args.threads)
    after_imports = _peak_mb()
    start = time.perf_counter()
    reference = SentenceTransformersReference(Path(args.directory))
    load_s = time.perf_counter() - start
    after_load = _peak_mb()
    ids = np.full((1, args.seq_len), 7, dtype=np.int64)
    out = reference.embed(ids, np.ones_like(ids))
    peak = _peak_mb()
    return {"runtime": "sentence-transformers", "seq_len": args.seq_len, "load_s": round(load_s, 4),
            "after_imports_mb": round(after_imports, 1), "after_load_mb": round(after_load, 1),
            "peak_rss_mb": round(peak, 1), "runtime_rss_mb": round(peak - after_imports, 1),
            "output_finite": bool(np.isfinite(out).all())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    sub = parser.add_subparsers(dest="command", required=True)
    fixture = sub.add_parser("fixture")
    fixture.add_argument("kind")
    export = sub.add_parser("export")
    export.add_argument("--model", required=True)
    export.add_argument("--target", required=True)
    export.add_argument("--recipe", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--seq-lens", default="")
    export.add_argument("--option", action="append", default=[], help="export option KEY=VALUE, e.g. attention=dense")
    probe = sub.add_parser("probe-reference")
    probe.add_argument("directory")
    probe.add_argument("--threads", type=int, default=1)
    probe.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args(argv)
    handler = {"fixture": cmd_fixture, "export": cmd_export, "probe-reference": cmd_probe_reference}[args.command]
    print(json.dumps(handler(args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
