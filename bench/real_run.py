"""One interleaved run on a real checkpoint: PyTorch eager vs bundles exported from it (1 thread).

    python bench/real_run.py --model DIR BUNDLE... [--tokens 256,2048] [--repeats 3] [--json out.json]

``bench/run.py`` measures fixtures (random weights); this times bundles of a real checkpoint
(e.g. google/embeddinggemma-300m in a local directory) in the same loop (bench/loop.py) against
sentence-transformers on that checkpoint, and gives each bundle's drift on the built-in texts
(each text alone, its task prompt, up to 2048 tokens). Nothing here is written into the repo:
real weights and their results stay with whoever runs it.
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


def subjects_for(model: Path, bundles: list[Path], threads: tuple[int, ...]) -> list[Any]:
    from bench.subjects import BundleSubject, EagerSubject

    subjects: list[Any] = [EagerSubject(model, threads)]
    for bundle in bundles:
        manifest = json.loads((bundle / "manifest.json").read_text())
        variant = Variant(bundle.name, str(model), manifest["target"], manifest["recipe"]["name"])
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/real_run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the checkpoint directory the bundles came from")
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--tokens", default="256,2048")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-drift", action="store_true", help="timing only")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    from bench.loop import run_loop
    from bench.machine import describe

    started = time.time()

    def progress(message: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    shapes = tuple(Shape(f"s{n}", int(n)) for n in args.tokens.split(","))
    config = json.loads((args.model / "config.json").read_text())
    subjects = subjects_for(args.model, args.bundles, (1,))
    plan = Plan("real", str(args.model), "", tuple(s.variant for s in subjects[1:]), shapes, None, args.repeats, (1,))
    load_start = os.getloadavg()[0]
    latency, _ = run_loop(plan, subjects, int(config["vocab_size"]), config, progress)
    result = {"model": str(args.model), "machine": describe(), "load_average_at_start": load_start,
              "load_average_at_end": os.getloadavg()[0], "repeats": args.repeats, "threads": 1,
              "shapes": [{"key": s.key, "tokens": s.tokens} for s in shapes], "latency": latency, "drift": {}}
    if not args.no_drift:
        progress("drift on the built-in texts")
        result["drift"] = drift(subjects, args.bundles[0])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
