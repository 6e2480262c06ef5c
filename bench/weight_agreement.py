"""Where the int4 weights cost retrieval agreement, on a real checkpoint (torch simulation, float activations).

    python -m bench.weight_agreement --model DIR [--recipe int4] [--parts] [--variant FILE.json ...]
                                     [--gptq-bits PART=BITS,...] [--threads N] [--out FILE.json]

Embeds the 477 query/document pairs of the validator's ``retrieval`` set (954 texts, each with its
task prompt) with the float graph and with the recipe's weights (calibrated grids as the exporter
makes them, from the calibration cache when it has them), and reports cosine min / mean against the
float graph and top-10 agreement (embg.parity.metrics.retrieval, as embg-validate computes it).
Weight-only: the run-time int8 activations are bench/activation_sensitivity.py's subject.

* ``--parts``: each part's quantized weights alone (the others float), to see which part costs most,
  and every part but the embedding (the ceiling of any change to the table alone);
* ``--variant``: a JSON object {label: {rule key: rule, ...}}; each entry replaces those rules of the
  recipe (a ``"layer_rules"`` key: its per-layer rules), is calibrated, and measured (e.g. the decoder's
  GPTQ at block 64);
* ``--layers N``: each decoder layer's parts at int4 (GPTQ block 32, one layer and part group at a time,
  the rest float) on N evenly spaced pairs, ranked by embedding drift per byte int4 saves over int8;
  then the per-layer int4/int8 mix that drift ranking picks for the bytes the recipe's int4 decoder
  parts save, measured on every pair (where a recipe with one rule per part could go with per-layer
  rules). ~26 s per layer and group at N = 60 on the real checkpoint (5 groups x 24 layers: ~55 min);
* ``--gptq-bits PART=BITS[,...]`` (repeatable; ``--gptq-block``, default 128): those parts GPTQ-calibrated on a
  wider symmetric grid (5-8 bits), the rest as the recipe has them: what bytes between int4 and int8 buy
  (recipes can say 6 bits, ONNX only: ``bits 6``);
* ``--low-rank R[,R...]``: the recipe's int4 decoder weights plus a rank-R float correction of their error,
  weighted by the float model's activations on the calibration texts (bench/low_rank.py), at each rank.

One pass over the 954 texts takes ~3 minutes on one thread; each new calibration ~2.5 minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from embg.checkpoint.load import load_model
from embg.quantize.calibrate import calibrate_grids
from embg.quantize.calibration_texts import batches_for, calibration_split
from embg.quantize.groups import layer_of, part_of
from embg.quantize.recipe import QuantRecipe, load_recipe, parse_recipe
from embg.quantize.simulate import int8_channel, outputs_with, recipe_weights
from embg.textdata.sets import TEXT_SETS

PARTS = ("embedding", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "head")


LAYER_GROUPS = {"q+k": ("q_proj", "k_proj"), "v": ("v_proj",), "o": ("o_proj",), "gate+up": ("gate_proj", "up_proj"),
                "down": ("down_proj",)}
RESAMPLE_SHARE = 0.9  # --resample: each calibration drops a different tenth of the texts
INT4_SAVES = 0.5 - 2 / 32  # bytes per weight int4 block 32 (bf16 scales) saves over int8 per channel


class WeightBench:
    def __init__(self, model_dir: str, pairs: int | None = None, recipe: QuantRecipe | None = None) -> None:
        from bench.sensitivity import eval_batches

        model = load_model(model_dir)
        self.graph = model.graph()
        self.tokenizer = model.tokenizer
        self.calibration = batches_for(model.tokenizer, calibration_split()[0])
        self.rotation = None
        if recipe is not None and recipe.rotation:  # same float function, rotated weights: as the exporter does
            from embg.quantize.rotation import rotate_for

            self.rotation = rotate_for(self.graph, recipe, lambda: self.calibration)
            print(f"rotated: {self.rotation}", flush=True)
        self.recipe_rotation = recipe.rotation if recipe is not None else None
        rows = TEXT_SETS.get("retrieval")()
        if pairs:  # evenly spaced query/document pairs (queries first, their documents in the same order)
            queries = [row for row in rows if row.is_query]
            documents = [row for row in rows if not row.is_query]
            picked = list(range(0, len(queries), max(1, len(queries) // pairs)))[:pairs]
            rows = [queries[i] for i in picked] + [documents[i] for i in picked]
        self.batches, order, _ = eval_batches(model.tokenizer, rows)
        self.inverse = np.argsort(order)
        self.queries = sum(1 for row in rows if row.is_query)
        started = time.perf_counter()
        self.reference = self.embed({})
        self.pass_seconds = time.perf_counter() - started
        self.rows: list[dict] = []

    def embed(self, replacements: dict) -> np.ndarray:
        out = outputs_with(self.graph, self.batches, replacements).double().numpy()[self.inverse]
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def weights(self, recipe: QuantRecipe, calibration: list | None = None, gptq_bits: dict[str, int] | None = None
                ) -> dict:
        """The recipe's weights, calibrated on ``calibration`` batches (default: the built-in set); ``gptq_bits``:
        part -> bits GPTQ rounds that part to (embg.quantize.calibrate.calibrate_grids)."""
        if recipe.rotation and recipe.rotation != self.recipe_rotation:  # one without takes the graph as is
            raise SystemExit(f"recipe {recipe.name}: rotation {recipe.rotation} differs from the bench graph's "
                             f"{self.recipe_rotation}; measure it with --recipe instead of --variant")
        batches = self.calibration if calibration is None else calibration
        grids, _ = (calibrate_grids(self.graph, recipe, batches, gptq_bits=gptq_bits) if recipe.is_calibrated
                    else ({}, None))
        return recipe_weights(self.graph, recipe, grids)

    def resampled_calibration(self, seed: int, share: float = RESAMPLE_SHARE) -> list:
        """Batches of a seeded random ``share`` of the calibration texts: another draw of the same kind of text."""
        rows = calibration_split()[0]
        keep = sorted(random.Random(seed).sample(range(len(rows)), round(share * len(rows))))
        return batches_for(self.tokenizer, [rows[i] for i in keep])

    def measure(self, label: str, replacements: dict) -> dict:
        from bench.activation_sensitivity import agreement_row, print_row

        started = time.perf_counter()
        row = agreement_row(label, self.embed(replacements), self.reference, self.queries)
        self.rows.append(row)
        print_row(row, time.perf_counter() - started)
        return row


def all_int4_decoder() -> QuantRecipe:
    """Every decoder weight GPTQ int4 block 32, the table and head float, float activations."""
    g4 = {"bits": 4, "granularity": "block", "block_size": 32, "algorithm": "gptq"}
    return parse_recipe({"name": "all-int4-decoder", "description": "per-layer sensitivity", "rules": {
        "embedding": {"bits": 32}, "attention": g4, "projections": g4, "feed_forward": g4, "head": {"bits": 32}}})


def layer_group(name: str) -> str | None:
    return next((group for group, parts in LAYER_GROUPS.items() if part_of(name) in parts), None)


def int4_mb_saved(graph: torch.nn.Module, names) -> float:
    """MB that int4 block 32 saves over int8 per channel on the named weights."""
    sizes = {name: value.numel() for name, value in graph.state_dict().items()}
    return sum(sizes[n] for n in names) * INT4_SAVES / 1e6


def layer_sensitivity(model_dir: str, pairs: int, recipe: QuantRecipe | None = None) -> tuple[list[dict], dict]:
    """(one row per decoder layer and group: drift = mean 1 - cosine with that alone int4, and drift per MB
    saved; the int4 weights) on ``pairs`` pairs."""
    small = WeightBench(model_dir, pairs, recipe)  # rotated as the recipe is, so its int4 weights mix in
    int4 = small.weights(all_int4_decoder())
    rows = []
    for layer in sorted({layer_of(name) for name in int4}):
        for group in LAYER_GROUPS:
            chosen = {n: f for n, f in int4.items() if layer_of(n) == layer and layer_group(n) == group}
            cosine = (small.embed(chosen) * small.reference).sum(axis=1)
            saved = int4_mb_saved(small.graph, chosen)
            row = {"layer": layer, "group": group, "drift": float(1 - cosine.mean()), "mb_saved": round(saved, 4)}
            row["drift_per_mb"] = row["drift"] / saved
            rows.append(row)
            print(f"layer {layer:>2} {group:<8} drift {row['drift']:.2e} ({row['drift_per_mb']:.2e} per MB)", flush=True)
    return rows, int4


def cheapest_mix(rows: list[dict], budget_mb: float) -> set[tuple[int, str]]:
    """The (layer, group) items to put at int4, least drift per MB first, until they save ``budget_mb``."""
    chosen, saved = set(), 0.0
    for row in sorted(rows, key=lambda r: r["drift_per_mb"]):
        if saved >= budget_mb:
            break
        chosen.add((row["layer"], row["group"]))
        saved += row["mb_saved"]
    return chosen


def with_rules(recipe: QuantRecipe, rules: dict, label: str) -> QuantRecipe:
    """``recipe`` with ``rules`` replacing its rules of the same keys; a ``layer_rules`` key replaces its
    per-layer rules."""
    data = copy.deepcopy(recipe.to_dict())
    data["name"] = "variant"
    data["description"] = label
    rules = dict(rules)
    if "layer_rules" in rules:
        data["layer_rules"] = rules.pop("layer_rules")
    data["rules"].update(rules)
    return parse_recipe(data, where=f"variant {label!r}")


def recipe_bench(args: argparse.Namespace) -> tuple[WeightBench, QuantRecipe, dict]:
    """(the bench, the recipe, its weights) for parsed ``--model --recipe --threads``, after measuring the
    recipe's weights as the first row."""
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    bench = WeightBench(args.model, recipe=recipe)
    print(f"{len(bench.reference)} texts; one pass takes {bench.pass_seconds:.0f} s", flush=True)
    weights = bench.weights(recipe)
    bench.measure(f"recipe {recipe.name} weights", weights)
    return bench, recipe, weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.weight_agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory (the real embeddinggemma-300m)")
    parser.add_argument("--recipe", default="int4", help="preset name or recipe .json (default int4)")
    parser.add_argument("--parts", action="store_true", help="also each part's weights alone")
    parser.add_argument("--variant", action="append", type=Path, default=[],
                        help="JSON {label: {rule key: rule}}: recipe variants to calibrate and measure "
                             "(a \"layer_rules\" key replaces the per-layer rules)")
    parser.add_argument("--layers", type=int, metavar="PAIRS",
                        help="each decoder layer's int4 groups alone on PAIRS pairs, then the per-layer mix")
    parser.add_argument("--resample", type=int, metavar="N",
                        help=f"N more calibrations, each on a seeded random {RESAMPLE_SHARE * 100:.0f}%% of the calibration "
                             "texts: how far top-10 moves with the calibration alone")
    parser.add_argument("--low-rank", metavar="R[,R...]",
                        help="ranks of an activation-weighted float correction of the int4 decoder weights' error")
    parser.add_argument("--gptq-bits", action="append", default=[], metavar="PART=BITS[,PART=BITS...]",
                        help="a variant: these parts GPTQ-calibrated at these bits (5-8; symmetric, block --gptq-block), "
                             "e.g. gate_proj=6,up_proj=6 (more than 4 bits: what no recipe can say yet)")
    parser.add_argument("--gptq-block", type=int, default=128, help="block of the --gptq-bits parts (default 128)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    bench, recipe, weights = recipe_bench(args)
    if args.parts:
        for part in PARTS:
            chosen = {name: f for name, f in weights.items() if part_of(name) == part}
            if chosen:
                bench.measure(f"only {part}", chosen)
        # what the decoder and head leave with a float table: the ceiling of any embedding-only change
        bench.measure("all but the embedding", {n: f for n, f in weights.items() if part_of(n) != "embedding"})
    for path in args.variant:
        for label, rules in json.loads(path.read_text(encoding="utf-8")).items():
            bench.measure(label, bench.weights(with_rules(recipe, rules, label)))
    for spec in args.gptq_bits:
        measure_gptq_bits(bench, recipe, parse_part_bits(spec), args.gptq_block)
    if args.resample:
        measure_resampled(bench, recipe, args.resample)
    if args.low_rank:
        measure_low_rank(bench, recipe, weights, [int(rank) for rank in args.low_rank.split(",")])
    layers = measure_layer_mix(bench, args.model, recipe, weights, args.layers) if args.layers else []
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": Path(args.model).name, "recipe": recipe.name, "rows": bench.rows,
                                        "layers": layers}, indent=1) + "\n", encoding="utf-8")
    return 0


def parse_part_bits(spec: str) -> dict[str, int]:
    """``gate_proj=6,up_proj=6`` -> {part: bits}; parts as recipes name them, 5-8 bits."""
    chosen = {}
    for item in spec.split(","):
        part, _, bits = item.partition("=")
        if part not in PARTS or not bits.isdigit() or not 5 <= int(bits) <= 8:
            raise SystemExit(f"--gptq-bits {spec!r}: give PART=BITS with a part of {', '.join(PARTS)} and 5-8 bits")
        chosen[part] = int(bits)
    return chosen


def measure_gptq_bits(bench: WeightBench, recipe: QuantRecipe, bits: dict[str, int], block: int) -> dict:
    """The recipe with ``bits``' parts GPTQ-calibrated at those bits on blocks of ``block`` (the others as the
    recipe has them, calibrated again around them)."""
    from embg.quantize.groups import GROUP_OF_PART, GROUP_PARTS

    label = ", ".join(f"{part} int{b}" for part, b in bits.items()) + f" (GPTQ block {block})"
    rule = {"bits": 4, "granularity": "block", "block_size": block, "algorithm": "gptq"}  # the grid's layout
    keys = {}
    for part in bits:  # the recipe's own key for the part: the part, or a group that is only this part
        group = GROUP_OF_PART[part]
        key = part if part in recipe.rules else group if GROUP_PARTS[group] == (part,) else None
        if key is None or part == "embedding":
            raise SystemExit(f"--gptq-bits: recipe {recipe.name} has no rule of its own for {part} "
                             f"(it rules {group} as a whole), or {part} is the table; name parts it rules one by one")
        keys[key] = dict(rule)
    variant = with_rules(recipe, keys, label)
    return bench.measure(label, bench.weights(variant, gptq_bits=bits))


def measure_resampled(bench: WeightBench, recipe: QuantRecipe, draws: int) -> dict:
    """The recipe calibrated ``draws`` more times on resampled calibration texts (seeds 0..draws-1), then the
    spread of top-10 agreement over those draws and the full-set calibration (the first row)."""
    first = bench.rows[0]
    rows = [bench.measure(f"calibrated on resample {seed}", bench.weights(recipe, bench.resampled_calibration(seed)))
            for seed in range(draws)]
    top10 = np.array([row["top10_agreement"] for row in [first, *rows]])
    spread = {"config": f"top-10 over {len(top10)} calibrations", "top10_mean": round(float(top10.mean()), 4),
              "top10_sd": round(float(top10.std(ddof=1)), 4), "top10_min": float(top10.min()),
              "top10_max": float(top10.max())}
    bench.rows.append(spread)
    print(f"{spread['config']}: mean {spread['top10_mean']:.4f} sd {spread['top10_sd']:.4f} "
          f"range {spread['top10_min']:.4f}-{spread['top10_max']:.4f}", flush=True)
    return spread


def measure_low_rank(bench: WeightBench, recipe: QuantRecipe, weights: dict, ranks: list[int]) -> None:
    """--low-rank: each rank's correction on every int4 decoder weight, with the share of weighted error it takes."""
    from bench.low_rank import LowRankCorrection, input_moments

    names = [n for n in weights if layer_of(n) is not None and recipe.rule_for(n).bits == 4]
    params = dict(bench.graph.named_parameters())
    moments = input_moments(bench.graph, names, bench.calibration)
    fixes = {}
    for name in names:
        weight = params[name].detach()
        fixes[name] = LowRankCorrection(weight, weights[name](weight), moments[name])
    for rank in ranks:
        share = float(np.mean([fix.captured(rank) for fix in fixes.values()]))
        replaced = {name: (lambda _w, fix=fix, rank=rank: fix.weight(rank)) for name, fix in fixes.items()}
        row = bench.measure(f"rank {rank} correction on {len(names)} int4 decoder weights", {**weights, **replaced})
        row["weighted_error_removed"] = round(share, 4)
        print(f"  it removes {share:.1%} of their activation-weighted error on average", flush=True)


def measure_layer_mix(bench: WeightBench, model_dir: str, recipe: QuantRecipe, weights: dict, pairs: int) -> list[dict]:
    """--layers: the per-layer scan, then the mix it picks for the bytes the recipe's int4 decoder parts save
    (their other weights int8 per channel, the table and head as the recipe has them), on every pair."""
    rows, int4 = layer_sensitivity(model_dir, pairs, recipe)
    budget = int4_mb_saved(bench.graph, [n for n in weights if layer_group(n) and recipe.rule_for(n).bits == 4])
    chosen = cheapest_mix(rows, budget)
    mix = {n: (int4[n] if (layer_of(n), layer_group(n)) in chosen else int8_channel) if layer_group(n) else f
           for n, f in weights.items()}
    bench.measure(f"per-layer mix: {len(chosen)} of {len(rows)} layer groups int4, same bytes", mix)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
