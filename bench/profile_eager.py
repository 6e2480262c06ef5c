"""Where PyTorch eager (the speed baseline) spends the time: sentence-transformers on a checkpoint, by parts.

    python bench/profile_eager.py --model DIR [--tokens 256] [--repeats 5] [--json out.json]

The same baseline bench/real_run.py times (sentence-transformers, fp32, 1 thread, batch 1), run
under torch's profiler; self CPU time is summed per category and divided by the repetitions:
the linear layers (aten::mm / addmm), attention (scaled_dot_product_attention's kernels) and the
rest (norms, GELU, RoPE, residual adds). Read it beside bench/profile_onnx.py's per-op profile of a
bundle: how far an int8 file can get ahead of eager depends on how much of eager is linear layers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CATEGORIES = {"aten::mm": "linear layers", "aten::addmm": "linear layers", "aten::bmm": "attention",
              "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
              "aten::_scaled_dot_product_attention_math": "attention", "aten::_softmax": "attention"}


def category(op: str) -> str:
    return CATEGORIES.get(op, "other (norms, GELU, RoPE, adds, copies)")


def profile(model: Path, tokens: int, repeats: int) -> dict[str, Any]:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from torch.profiler import ProfilerActivity, profile as torch_profile

    torch.set_num_threads(1)
    encoder = SentenceTransformer(str(model), device="cpu").eval()
    ids = torch.tensor(np.random.default_rng(tokens).integers(4, 4096, size=(1, tokens)), dtype=torch.long)
    features = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.inference_mode():
        for _ in range(2):  # warm-up
            encoder(features)
        wall = []
        for _ in range(repeats):
            started = time.perf_counter()
            encoder(features)
            wall.append((time.perf_counter() - started) * 1000)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                encoder(features)
    by_category: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        by_category[category(event.key)] += event.self_cpu_time_total / 1000.0 / repeats
    return {"model": model.name, "tokens": tokens, "repeats": repeats, "threads": 1, "torch": torch.__version__,
            "wall_ms_median": round(statistics.median(wall), 1),
            "categories_ms": {k: round(v, 1) for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])}}


def render(result: dict[str, Any]) -> str:
    total = sum(result["categories_ms"].values())
    lines = [f"PyTorch eager, {result['tokens']} tokens, 1 thread: {result['wall_ms_median']:.0f} ms per pass "
             f"(median of {result['repeats']}); profiled self time per pass:", "", "| part | ms | share |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.1f} | {v / total * 100:.0f}% |" for k, v in result["categories_ms"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.real_run import write_json

    parser = argparse.ArgumentParser(prog="python bench/profile_eager.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="checkpoint directory (sentence-transformers layout)")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    result = profile(args.model, args.tokens, args.repeats)
    if args.json:
        write_json(args.json, result)  # atomically: a reader never sees half a results file
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
