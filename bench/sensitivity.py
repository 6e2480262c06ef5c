"""int4 sensitivity of each weight part, and of candidate recipes, on a real checkpoint, with file-size cost.

    python -m bench.sensitivity --model DIR [--mix int4 --mix my-recipe.json ...] [--no-parts]
                                [--out bench/results/sensitivity.json]

Each row quantizes some weights in torch (embg/quantize/simulate.py) and compares the graph's
embeddings with the float graph's on the validator's built-in texts (embg.textdata.sets,
each with its task prompt, cut at 2048 tokens like the largest LiteRT bucket): cosine min and
mean, and the text kind that did worst. Weight-only: the dynamic int8 activations both targets
add cost a little more in the exported files (embg-validate measures those).

* part rows: one part at a time (embedding, q_proj, ..., head) as int4 block 32 min-max (LiteRT's
  scales) and calibrated (GPTQ for linear layers, per-block MSE clip for the embedding table; one
  calibration with every part calibrated), plus the embedding at block 64;
* mix rows: each ``--mix`` recipe calibrated as the exporter does it, and its min-max counterpart.

Sizes are the bytes the quantized weights take in each target's file (LiteRT: fp16 block scales,
per-channel int8 tables repeated per signature; ONNX: fp32 block scales), computed from shapes.
Needs the real checkpoint (~6 GB RAM, tens of minutes on 2 cores): run it under the heavy-job lock.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from embg.checkpoint.load import load_model
from embg.quantize.calibrate import calibrate_grids
from embg.quantize.calibration_texts import Batch, batches_for, calibration_split
from embg.quantize.groups import GROUP_PARTS, part_of
from embg.quantize.int4_blocks import quantize_rows
from embg.quantize.int4_choice import minmax_counterpart
from embg.quantize.recipe import GroupRule, QuantRecipe, load_recipe, parse_recipe
from embg.quantize.simulate import grid_weight, minmax_int4, outputs_with, recipe_weights
from embg.textdata.sets import builtin_texts

PARTS = tuple(part for parts in GROUP_PARTS.values() for part in parts)
LITERT_SIGNATURES = 7  # the default buckets 32..2048: per-channel tables are stored once per signature
MAX_TOKENS = 2048
ROWS_PER_BATCH = 8


def eval_batches(tokenizer, texts=None) -> tuple[list[Batch], list[int], list[str]]:
    """``texts`` (default: the built-in texts) as length-sorted batches; returns (batches, text index per
    row, kinds)."""
    texts = builtin_texts() if texts is None else texts
    encoded = []
    for i, item in enumerate(texts):
        prompt = item.task if item.task in tokenizer.prompts else None
        batch = tokenizer.encode([item.text], prompt=prompt, max_length=MAX_TOKENS)
        encoded.append((int(batch.attention_mask.sum()), i, batch.input_ids[0][: int(batch.attention_mask.sum())]))
    encoded.sort(key=lambda row: (row[0], row[1]))
    batches, order = [], []
    for start in range(0, len(encoded), ROWS_PER_BATCH):
        rows = encoded[start:start + ROWS_PER_BATCH]
        width = max(length for length, _, _ in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (length, index, row) in enumerate(rows):
            ids[r, :length] = torch.as_tensor(row)
            mask[r, :length] = 1
            order.append(index)
        batches.append((ids, mask))
    return batches, order, [t.kind for t in texts]


def part_bytes(rows: int, cols: int, rule: GroupRule, target: str) -> float:
    """Bytes one weight [rows, cols] takes in ``target``'s file under ``rule``."""
    n = rows * cols
    if rule.is_float:
        return 4.0 * n
    if rule.bits == 16:
        return 2.0 * n
    if rule.bits == 4:
        return n / 2 + (2 if target == "tflite" else 4) * n / rule.block_size
    if rule.bits == 6:  # ONNX only (LiteRT refuses it): 6 bits a weight, float16 block scales
        return float("nan") if target == "tflite" else 0.75 * n + 2 * n / rule.block_size
    # int8 per channel: LiteRT keeps scale + int64 zero point per channel in every signature's tables
    return n + (12 * LITERT_SIGNATURES if target == "tflite" else 5) * rows


def recipe_bytes(graph: torch.nn.Module, recipe: QuantRecipe, target: str) -> float:
    total = 0.0
    for name, value in graph.state_dict().items():
        part = part_of(name) if value.ndim == 2 else None
        if part:
            total += part_bytes(value.shape[0], value.shape[1], recipe.rule_for(name), target)
    return total


class Bench:
    def __init__(self, model_dir: str) -> None:
        self.model = load_model(model_dir)
        self.graph = self.model.graph()
        self.batches, self.order, self.kinds = eval_batches(self.model.tokenizer)
        started = time.perf_counter()
        self.reference = outputs_with(self.graph, self.batches)
        self.pass_seconds = time.perf_counter() - started
        calibration, _ = calibration_split()
        self.calibration = batches_for(self.model.tokenizer, calibration)
        self.rows: list[dict] = []

    def measure(self, label: str, replacements: dict, sizes: dict[str, float], graph: torch.nn.Module | None = None,
                **extra) -> dict:
        started = time.perf_counter()
        graph = graph if graph is not None else self.graph
        cosine = torch.nn.functional.cosine_similarity(outputs_with(graph, self.batches, replacements).double(),
                                                       self.reference.double(), dim=-1)
        worst = int(cosine.argmin())
        row = {"config": label, "cosine_min": round(float(cosine.min()), 4), "cosine_mean": round(float(cosine.mean()), 4),
               "worst_kind": self.kinds[self.order[worst]], **{f"{k}_mb": round(v / 1e6, 2) for k, v in sizes.items()},
               "per_text": {str(self.order[i]): round(float(c), 5) for i, c in enumerate(cosine)}, **extra}
        self.rows.append(row)
        print(f"{label:<46} min {row['cosine_min']:.4f} mean {row['cosine_mean']:.4f} worst {row['worst_kind']:<8} "
              f"tflite {row.get('tflite_mb', 0):7.2f} MB onnx {row.get('onnx_mb', 0):7.2f} MB "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        return row

    def weights_of(self, part: str) -> list[str]:
        return [n for n, v in self.graph.state_dict().items() if v.ndim == 2 and part_of(n) == part]

    def part_rows(self) -> None:
        every = _all_calibrated()
        grids, report = calibrate_grids(self.graph, every, self.calibration, lambda m: print(m, file=sys.stderr))
        print(f"calibration of every part: {report['seconds']} s", flush=True)
        block64 = {"embed_tokens.weight": tuple(t.numpy() for t in quantize_rows(
            self.graph.embed_tokens.weight.detach(), 64, "mse"))}
        int4 = {32: GroupRule(4, "block", 32), 64: GroupRule(4, "block", 64)}
        for part in PARTS:
            names = self.weights_of(part)
            shapes = [tuple(self.graph.state_dict()[n].shape) for n in names]
            blocks = (32, 64) if part == "embedding" else (32,)
            for block in blocks:
                sizes = {t: sum(part_bytes(r, c, int4[block], t) for r, c in shapes) for t in ("tflite", "onnx")}
                source = block64 if block == 64 else grids
                self.measure(f"{part} int4 b{block} min-max", {n: _minmax(block) for n in names}, sizes,
                             part=part, algorithm="min-max", block=block)
                self.measure(f"{part} int4 b{block} calibrated", {n: grid_weight(source[n]) for n in names}, sizes,
                             part=part, algorithm="calibrated", block=block)

    def mix_rows(self, recipe: QuantRecipe) -> None:
        graph = self.graph
        if recipe.rotation:  # calibrated on the rotated weights, as the exporter does (same float function)
            from embg.quantize.rotation import rotate_for

            graph = copy.deepcopy(self.graph)
            rotate_for(graph, recipe, lambda: self.calibration)
        grids, report = calibrate_grids(graph, recipe, self.calibration, lambda m: print(m, file=sys.stderr))
        sizes = {t: recipe_bytes(graph, recipe, t) for t in ("tflite", "onnx")}
        self.measure(f"recipe {recipe.name} (calibrated)", recipe_weights(graph, recipe, grids), sizes, graph,
                     recipe=recipe.to_dict(), calibration_seconds=report["seconds"])
        plain = minmax_counterpart(recipe)
        self.measure(f"recipe {plain.name}", recipe_weights(graph, plain, {}), sizes, graph, recipe=plain.to_dict())


def _minmax(block: int):
    return lambda weight: minmax_int4(weight, block)


def _all_calibrated() -> QuantRecipe:
    gptq = {"bits": 4, "granularity": "block", "block_size": 32, "algorithm": "gptq"}
    rules = {part: dict(gptq) for part in PARTS}
    rules["embedding"] = {**gptq, "algorithm": "mse-clip"}
    return parse_recipe({"name": "every-part-calibrated", "activations": "dynamic_int8_per_row", "rules": rules})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sensitivity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory (the real embeddinggemma-300m)")
    parser.add_argument("--mix", action="append", default=[], help="recipe (preset name or .json) to measure")
    parser.add_argument("--no-parts", action="store_true", help="skip the one-part-at-a-time rows")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="write all rows (with per-text cosines) as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(args.model)
    print(f"{len(bench.reference)} built-in texts; one pass over them takes {bench.pass_seconds:.0f} s", flush=True)
    for name in args.mix:
        bench.mix_rows(load_recipe(name))
    if not args.no_parts:
        bench.part_rows()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": Path(args.model).name, "texts": len(bench.reference), "rows": bench.rows},
                                       indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
