"""Where dynamic int8 activations cost retrieval agreement, on a real checkpoint (torch simulation).

    python -m bench.activation_sensitivity --model DIR [--texts retrieval] [--parts] [--rotation JSON] [--out FILE.json]

Every row runs the graph in torch with the `int8` preset's weights (per-channel int8, float head) and
some linear inputs rounded as a target rounds them at run time (embg/quantize/simulate.py), and
compares it with the float graph: cosine min / mean over the texts and, on the retrieval pairs,
top-10 agreement (embg.parity.metrics.retrieval, as embg-validate computes it):

* weights only: activations float (what int8 weights alone cost);
* ONNX grid: symmetric int8 per row with the preset's calibrated float channels (the ONNX `int8`
  preset before residual_pass), then with its residual_pass parts in two passes (the preset now),
  with down_proj's input float, and with 128 float channels for down_proj;
* LiteRT grid: XNNPACK's asymmetric int8 per row (its own formula), every channel (the LiteRT preset
  before float channels); with the preset's float channels; and with its residual_pass parts in two
  passes on XNNPACK's grid (the preset now);
* ``--parts``: one part's input at a time on the ONNX grid (which activation costs the most);
* ``--rotation '{"down": true}'``: the same rows on a graph rotated as a recipe's ``rotation`` field
  asks (embg/quantize/rotation.py): whether spreading the outlier channels makes the float channels
  and second passes unnecessary.

The simulation tracks the exported files: ONNX grid 0.9757 here against 0.9753 measured on the real
ONNX bundle with embg-validate. One pass over the 954 retrieval texts takes ~2.5 minutes on one thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from embg.checkpoint.load import load_model
from embg.parity.metrics import retrieval
from embg.quantize.calibration_texts import batches_for, calibration_split
from embg.quantize.channel_peaks import largest_channels, linear_input_peaks
from embg.quantize.groups import part_of
from embg.quantize.recipe import load_recipe, parse_recipe
from embg.quantize.rotation import rotate_for
from embg.quantize.simulate import (int8_rows, int8_rows_asymmetric, int8_rows_asymmetric_two_pass, int8_rows_two_pass,
                                    outputs_with_activations, recipe_weights, with_float_channels)
from embg.textdata.sets import TEXT_SETS

def linear_weights(graph: torch.nn.Module) -> list[str]:
    """The decoder's linear weights whose inputs the presets quantize (not the head's)."""
    return [f"{name}.weight" for name, module in graph.named_modules()
            if isinstance(module, torch.nn.Linear) and part_of(f"{name}.weight") not in (None, "head")]


class ActivationBench:
    def __init__(self, model_dir: str, texts: str, rotation: dict | None = None) -> None:
        """``rotation``: a recipe's rotation field (``"down": "auto"`` measured on the calibration texts)."""
        from bench.sensitivity import eval_batches

        model = load_model(model_dir)
        self.graph = model.graph()
        self.rotation = None
        if rotation:
            recipe = parse_recipe({**load_recipe("int8").to_dict(), "rotation": rotation})
            self.rotation = rotate_for(self.graph, recipe, lambda: batches_for(model.tokenizer, calibration_split()[0]))
        rows = TEXT_SETS.get(texts)()
        self.batches, order, _ = eval_batches(model.tokenizer, rows)
        self.inverse = np.argsort(order)
        self.queries = sum(1 for row in rows if row.is_query) if texts == "retrieval" else 0
        self.weights = recipe_weights(self.graph, load_recipe("int8"), {})
        self.peaks = linear_input_peaks(self.graph, batches_for(model.tokenizer, calibration_split()[0]))
        self.linear = linear_weights(self.graph)
        started = time.perf_counter()
        self.reference = self.embed({}, weights=False)
        self.pass_seconds = time.perf_counter() - started
        self.rows: list[dict] = []

    def embed(self, activation_of: dict, weights: bool = True) -> np.ndarray:
        out = outputs_with_activations(self.graph, self.batches, activation_of, self.weights if weights else None)
        out = out.double().numpy()[self.inverse]
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def grid(self, rounding, float_channels: int = 0, parts=None, exact=(), wider: dict | None = None) -> dict:
        """activation_of for every linear input (or those of ``parts``), ``exact`` parts left float;
        ``wider`` part -> float channels for that part instead of ``float_channels``."""
        chosen = {}
        for name in self.linear:
            part = part_of(name)
            if part in exact or (parts is not None and part not in parts):
                continue
            count = (wider or {}).get(part, float_channels)
            kept = largest_channels(self.peaks[name], count) if count else None
            chosen[name] = with_float_channels(rounding(part), kept)
        return chosen

    def measure(self, label: str, activation_of: dict) -> dict:
        started = time.perf_counter()
        row = agreement_row(label, self.embed(activation_of), self.reference, self.queries)
        self.rows.append(row)
        print_row(row, time.perf_counter() - started)
        return row


def agreement_row(label: str, ours: np.ndarray, reference: np.ndarray, queries: int) -> dict:
    """Cosine min / mean of unit rows ``ours`` against ``reference`` and, when the first ``queries`` rows are
    queries (the rest their documents), top-10 agreement as embg-validate computes it."""
    cosine = (ours * reference).sum(axis=1)
    row = {"config": label, "cosine_min": round(float(cosine.min()), 5), "cosine_mean": round(float(cosine.mean()), 5)}
    if queries:
        q = queries
        row["top10_agreement"] = retrieval(ours[:q], ours[q:], reference[:q], reference[q:])["top10_overlap_mean"]
    return row


def print_row(row: dict, seconds: float) -> None:
    top10 = f" top-10 {row['top10_agreement']:.4f}" if "top10_agreement" in row else ""
    print(f"{row['config']:<58} cos min {row['cosine_min']:.5f} mean {row['cosine_mean']:.5f}{top10} "
          f"({seconds:.0f} s)", flush=True)


def two_pass_on(parts: tuple[str, ...], rounding=int8_rows, two_pass=int8_rows_two_pass):
    """Per part: ``two_pass`` for ``parts``, ``rounding`` for the others."""
    return lambda part: two_pass if part in parts else rounding


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.activation_sensitivity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory (the real embeddinggemma-300m)")
    parser.add_argument("--texts", default="retrieval", help="named text set (retrieval gives top-10 agreement)")
    parser.add_argument("--parts", action="store_true", help="also each part's input alone on the ONNX grid")
    parser.add_argument("--rotation", type=json.loads,
                        help='a recipe\'s rotation field, e.g. \'{"down": true}\' or \'{"down": "auto"}\'')
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    rotation = None
    if args.rotation is not None:  # validated as a recipe field, defaults filled in
        rotation = parse_recipe({**load_recipe("int8").to_dict(), "rotation": args.rotation}).rotation
    bench = ActivationBench(args.model, args.texts, rotation)
    print(f"{len(bench.reference)} texts; one pass takes {bench.pass_seconds:.0f} s", flush=True)
    preset = load_recipe("int8")  # its float channels and residual passes, whatever they are now
    kept, passes = preset.float_channels_on("onnx"), preset.residual_pass_on("onnx")
    litert_kept, litert_parts = preset.float_channels_on("tflite"), preset.residual_pass_on("tflite")
    onnx, litert = two_pass_on(()), two_pass_on((), int8_rows_asymmetric)
    litert_passes = two_pass_on(litert_parts, int8_rows_asymmetric, int8_rows_asymmetric_two_pass)
    bench.measure("int8 weights, float activations", {})
    bench.measure("ONNX grid: per row, no float channels", bench.grid(onnx, 0))
    bench.measure(f"ONNX grid: per row, {kept} float channels", bench.grid(onnx, kept))
    bench.measure(f"ONNX grid, {'+'.join(passes)} in two passes (the preset)", bench.grid(two_pass_on(passes), kept))
    bench.measure("ONNX grid, down_proj input float", bench.grid(onnx, kept, exact=("down_proj",)))
    bench.measure("ONNX grid, 128 float channels for down_proj", bench.grid(onnx, kept, wider={"down_proj": 128}))
    bench.measure("LiteRT grid: asymmetric per row, every channel", bench.grid(litert))
    bench.measure(f"LiteRT grid, {litert_kept} float channels", bench.grid(litert, litert_kept))
    bench.measure(f"LiteRT grid, {'+'.join(litert_parts)} in two passes (the preset)", bench.grid(litert_passes, litert_kept))
    if args.parts:
        for part in sorted({part_of(name) for name in bench.linear}):
            bench.measure(f"only {part} input int8 (ONNX grid, no float channels)", bench.grid(onnx, 0, {part}))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": Path(args.model).name, "texts": args.texts, "rotation": bench.rotation,
                                        "rows": bench.rows},
                                       indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
