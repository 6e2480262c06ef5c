"""Where the int4 weights cost retrieval agreement, on a real checkpoint (torch simulation, float activations).

    python -m bench.weight_agreement --model DIR [--recipe int4] [--parts] [--variant FILE.json ...]
                                     [--threads N] [--out FILE.json]

Embeds the 477 query/document pairs of the validator's ``retrieval`` set (954 texts, each with its
task prompt) with the float graph and with the recipe's weights (calibrated grids as the exporter
makes them, from the calibration cache when it has them), and reports cosine min / mean against the
float graph and top-10 agreement (embg.parity.metrics.retrieval, as embg-validate computes it).
Weight-only: the run-time int8 activations are bench/activation_sensitivity.py's subject.

* ``--parts``: each part's quantized weights alone (the others float), to see which part costs most,
  and every part but the embedding (the ceiling of any change to the table alone);
* ``--variant``: a JSON object {label: {rule key: rule, ...}}; each entry replaces those rules of the
  recipe, is calibrated, and measured (e.g. the decoder's GPTQ at block 64).

One pass over the 954 texts takes ~3 minutes on one thread; each new calibration ~2.5 minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from embg.checkpoint.load import load_model
from embg.quantize.calibrate import calibrate_grids
from embg.quantize.calibration_texts import batches_for, calibration_split
from embg.quantize.groups import part_of
from embg.quantize.recipe import QuantRecipe, load_recipe, parse_recipe
from embg.quantize.simulate import outputs_with, recipe_weights
from embg.textdata.sets import TEXT_SETS

PARTS = ("embedding", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "head")


class WeightBench:
    def __init__(self, model_dir: str) -> None:
        from bench.sensitivity import eval_batches

        model = load_model(model_dir)
        self.graph = model.graph()
        rows = TEXT_SETS.get("retrieval")()
        self.batches, order, _ = eval_batches(model.tokenizer, rows)
        self.inverse = np.argsort(order)
        self.queries = sum(1 for row in rows if row.is_query)
        self.calibration = batches_for(model.tokenizer, calibration_split()[0])
        started = time.perf_counter()
        self.reference = self.embed({})
        self.pass_seconds = time.perf_counter() - started
        self.rows: list[dict] = []

    def embed(self, replacements: dict) -> np.ndarray:
        out = outputs_with(self.graph, self.batches, replacements).double().numpy()[self.inverse]
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def weights(self, recipe: QuantRecipe) -> dict:
        grids, _ = calibrate_grids(self.graph, recipe, self.calibration) if recipe.is_calibrated else ({}, None)
        return recipe_weights(self.graph, recipe, grids)

    def measure(self, label: str, replacements: dict) -> dict:
        from bench.activation_sensitivity import agreement_row, print_row

        started = time.perf_counter()
        row = agreement_row(label, self.embed(replacements), self.reference, self.queries)
        self.rows.append(row)
        print_row(row, time.perf_counter() - started)
        return row


def with_rules(recipe: QuantRecipe, rules: dict, label: str) -> QuantRecipe:
    data = copy.deepcopy(recipe.to_dict())
    data["name"] = "variant"
    data["description"] = label
    data["rules"].update(rules)
    return parse_recipe(data, where=f"variant {label!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.weight_agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory (the real embeddinggemma-300m)")
    parser.add_argument("--recipe", default="int4", help="preset name or recipe .json (default int4)")
    parser.add_argument("--parts", action="store_true", help="also each part's weights alone")
    parser.add_argument("--variant", action="append", type=Path, default=[],
                        help="JSON {label: {rule key: rule}}: recipe variants to calibrate and measure")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    bench = WeightBench(args.model)
    print(f"{len(bench.reference)} texts; one pass takes {bench.pass_seconds:.0f} s", flush=True)
    weights = bench.weights(recipe)
    bench.measure(f"recipe {recipe.name} weights", weights)
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
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": Path(args.model).name, "recipe": recipe.name, "rows": bench.rows},
                                       indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
