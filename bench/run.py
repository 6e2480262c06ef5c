"""Benchmark every bundle against PyTorch eager in one interleaved run.

    python bench/run.py [--quick] [--out bench/results] [--threads 1,2] [--variants a,b] [--repeats N]
    python bench/run.py --write-readme      # copy bench/results/table.md's marked block into README.md
    python bench/run.py --model DIR [--variants onnx-int8,tflite-int4] [--tokens 256,512,1024,2048]
                                            # a real checkpoint: export, then time against eager (1 thread)

Steps: fixtures and exports (each in a child process: wall time, peak RSS); machine limits
(matmul throughput); one interleaved latency loop with the eager baseline and drift; cold load
and runtime RSS per variant in fresh processes; JSON, Markdown and plots. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make `bench` and `embg` importable
    sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench.plan import make_plan  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results"


def default_cache(quick: bool) -> Path:
    from embg.checkpoint.resolve import fixture_cache_dir

    return fixture_cache_dir().parent / "bench" / ("quick" if quick else "full")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny fixtures, fewer shapes: a smoke test in minutes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory (default bench/results)")
    parser.add_argument("--cache", type=Path, help="fixture bundles cache (default ~/.cache/embg/bench/<mode>)")
    parser.add_argument("--threads", default="1,2", help="thread counts to pin, e.g. 1,2")
    parser.add_argument("--variants", default="", help="comma-separated subset, e.g. onnx-int8,tflite-int4")
    parser.add_argument("--repeats", type=int, help="repetitions of the interleaved loop (default 5; quick 2)")
    parser.add_argument("--reexport", action="store_true", help="ignore cached bundles and export again")
    parser.add_argument("--export-only", action="store_true", help="stop after the exports")
    parser.add_argument("--write-readme", action="store_true",
                        help="replace the text between the bench markers in README.md with --out/table.md's block, "
                             "then exit (no benchmark run)")
    parser.add_argument("--model", type=Path,
                        help="a real checkpoint directory (e.g. google/embeddinggemma-300m downloaded): export its "
                             "variants (default: int8 and int4 on both targets) and time them against PyTorch eager on "
                             "it, 1 thread; writes real_run.json and real_table.md under --out")
    parser.add_argument("--tokens", help="with --model: lengths to time (default 256,512,1024,2048)")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.write_readme:
        from bench.report import write_readme

        return write_readme(args.out / "table.md", args.readme)
    threads = tuple(int(t) for t in args.threads.split(",") if t.strip())
    only = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if args.model:
        return run_real_checkpoint(args, only)
    plan = make_plan(args.quick, threads, only, args.repeats)
    cache = args.cache or default_cache(args.quick)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def progress(message: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {message}", flush=True)

    from bench.exports import export_all

    progress(f"plan: {plan.mode}, {len(plan.variants)} variant(s), threads {list(threads)}, {plan.repeats} repeats")
    exports, skipped, fixtures = export_all(plan, cache, args.reexport, progress)
    if args.export_only:
        print(json.dumps({"exports": exports, "skipped": skipped}, indent=2))
        return 0

    from bench.collect import collect

    results = collect(plan, exports, skipped, fixtures, progress)
    results["wall_s"] = round(time.time() - started, 1)
    from bench.report import write_outputs

    paths = write_outputs(results, out)
    progress("wrote " + ", ".join(str(p) for p in paths))
    return 0


def run_real_checkpoint(args: argparse.Namespace, only: tuple[str, ...]) -> int:
    """Export the chosen variants of a real checkpoint (cached), then one interleaved run against eager."""
    from bench.exports import export_variant
    from bench.plan import real_plan
    from bench.real_run import REAL_DEFAULT_TOKENS, REAL_DEFAULT_VARIANTS, measure, render, write_json

    model = args.model.expanduser().resolve()
    if not (model / "config.json").is_file() or not (model / "model.safetensors").is_file():
        raise SystemExit(f"--model {args.model}: not a checkpoint directory (config.json and model.safetensors); "
                         "pass a local google/embeddinggemma-300m directory (huggingface-cli download google/embeddinggemma-300m)")
    plan = real_plan(str(model), only or REAL_DEFAULT_VARIANTS, args.repeats)
    from embg.checkpoint.resolve import fixture_cache_dir

    cache = args.cache or fixture_cache_dir().parent / "bench" / "real" / model.name
    started = time.time()

    def progress(message: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {message}", flush=True)

    progress(f"real checkpoint {model}: {[v.name for v in plan.variants]}, bundles cached in {cache}")
    records = {v.name: export_variant(v, plan, cache, {"directory": str(model)}, args.reexport, progress)
               for v in plan.variants}
    if args.export_only:
        print(json.dumps(records, indent=2))
        return 0
    result = measure(model, {name: Path(r["bundle"]) for name, r in records.items()},
                     args.tokens or REAL_DEFAULT_TOKENS, plan.repeats)
    # the cache folder's name, not this machine's path, goes into the committed results
    result["exports"] = {name: {**r, "bundle": f"{Path(r['bundle']).parent.name}/bundle"} for name, r in records.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "real_run.json", result)
    table = render(result)
    (args.out / "real_table.md").write_text(table + "\n")
    print(table)
    progress(f"wrote {args.out / 'real_run.json'}, {args.out / 'real_table.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
