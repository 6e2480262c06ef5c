"""One interleaved run on a real checkpoint: PyTorch eager vs bundles exported from it (1 thread).

    python bench/real_run.py --model DIR BUNDLE... [--tokens 256,2048] [--repeats 3] [--json out.json]
    python bench/run.py --model DIR [--variants onnx-int8,tflite-int8] [--tokens 256,512,1024,2048]

``bench/run.py`` without ``--model`` measures fixtures (random weights); this times bundles of a real
checkpoint (e.g. google/embeddinggemma-300m in a local directory) in the same loop (bench/loop.py)
against sentence-transformers on that checkpoint, and gives each bundle's drift on the built-in texts
(each text alone, its task prompt, up to 2048 tokens). Given bundles are timed as they are;
``bench/run.py --model DIR`` exports the chosen variants first (cached, bench/exports.py). The weights
stay out of the repo; only figures are written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.plan import BASELINE, Plan, Shape, Variant  # noqa: E402

MAX_TOKENS = 2048


# What `bench/run.py --model DIR` exports and times unless --variants says otherwise: what users get
# from `--bits 8` and `--bits 4` on both targets (exported through --bits, so its choices are the ones timed).
REAL_DEFAULT_VARIANTS = ("onnx-bits8", "tflite-bits8", "onnx-bits4", "tflite-bits4")
REAL_DEFAULT_TOKENS = "256,512,1024,2048"


def subjects_for(model: Path, bundles: dict[str, Path], threads: tuple[int, ...]) -> list[Any]:
    """Eager first, then one subject per named bundle."""
    from bench.subjects import BundleSubject, EagerSubject

    subjects: list[Any] = [EagerSubject(model, threads)]
    for name, bundle in bundles.items():
        manifest = json.loads((bundle / "manifest.json").read_text())
        variant = Variant(name, str(model), manifest["target"], manifest["recipe"]["name"])
        subjects.append(BundleSubject(variant, bundle, threads))
    return subjects


def drift(subjects: list[Any], bundle: Path) -> dict[str, dict[str, float]]:
    """Cosine vs the eager reference on the built-in texts, each alone: {bundle: {min, mean, texts}}."""
    from embg.model.tokenizer import EmbedTokenizer
    from embg.parity.path import cosine_rows
    from embg.textdata.sets import builtin_texts

    manifest = json.loads((bundle / "manifest.json").read_text())
    tokenizer = EmbedTokenizer(bundle, manifest["prompts"], max_length=MAX_TOKENS)
    inputs = [tokenizer.encode([t.text], prompt=t.task or None) for t in builtin_texts()]
    eager, bundles = subjects[0], subjects[1:]
    reference = [eager.run(1, b.input_ids, b.attention_mask, None) for b in inputs]
    out = {}
    for subject in bundles:
        values = [float(cosine_rows(subject.runtimes[1].embed(b.input_ids, b.attention_mask), ref)[0])
                  for b, ref in zip(inputs, reference)]
        out[subject.name] = {"min": round(min(values), 6), "mean": round(float(np.mean(values)), 6),
                             "texts": len(values), "longest_tokens": max(b.input_ids.shape[1] for b in inputs)}
    return out


def render(result: dict[str, Any]) -> str:
    keys = [s["key"] for s in result["shapes"]]
    lines = ["| variant | " + " | ".join(f"ms @{k[1:]} (× eager)" for k in keys) + " | drift min / mean |",
             "|---|" + "---:|" * len(keys) + "---|"]
    eager = result["latency"][BASELINE]["1"]
    for name, per_threads in result["latency"].items():
        cells = []
        for key in keys:
            ms, base = per_threads["1"][key]["median_ms"], eager[key]["median_ms"]
            cells.append("–" if ms is None else f"{ms:.0f}" + ("" if name == BASELINE else f" ({base / ms:.2f}×)"))
        d = result["drift"].get(name)
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + (f"{d['min']:.4f} / {d['mean']:.4f}" if d else "ref") + " |")
    return "\n".join(lines)


def measure(model: Path, bundles: dict[str, Path], tokens: str, repeats: int, with_drift: bool = True
            ) -> dict[str, Any]:
    """Time eager and every bundle in one interleaved loop (1 thread); drift on the built-in texts."""
    from bench.loop import run_loop
    from bench.machine import describe

    started = time.time()

    def progress(message: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    shapes = tuple(Shape(f"s{n}", int(n)) for n in tokens.split(","))
    config = json.loads((model / "config.json").read_text())
    subjects = subjects_for(model, bundles, (1,))
    plan = Plan("real", str(model), "", tuple(s.variant for s in subjects[1:]), shapes, None, repeats, (1,))
    load_start = os.getloadavg()[0]
    latency, _ = run_loop(plan, subjects, int(config["vocab_size"]), config, progress)
    result = {"model": Path(model).name, "machine": describe(), "load_average_at_start": load_start,
              "load_average_at_end": os.getloadavg()[0], "repeats": repeats, "threads": 1,
              "shapes": [{"key": s.key, "tokens": s.tokens} for s in shapes], "latency": latency, "drift": {}}
    if with_drift:
        progress("drift on the built-in texts")
        result["drift"] = drift(subjects, next(iter(bundles.values())))
    return result


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a reader never sees half a results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/real_run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the checkpoint directory the bundles came from")
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--tokens", default="256,2048")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-drift", action="store_true", help="timing only")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    result = measure(args.model, {b.name: b for b in args.bundles}, args.tokens, args.repeats, not args.no_drift)
    if args.json:
        write_json(args.json, result)
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
