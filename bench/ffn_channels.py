"""Which feed-forward channels the int4 gate/up weights cost most, and what int8 rows for them would buy.

    python -m bench.ffn_channels --model DIR [--recipe int4-rotated] [--shares 0.1,0.25] [--random 0.25]
                                 [--threads N] [--out FILE.json]

gate_proj and up_proj at int8 are the one change that took simulated top-10 agreement past 0.95, at
18.6 MB over the 185 MB budget (docs/measurements.md). A layer's intermediate channels can be split
into two products (rows of one at int8, the rest int4, down_proj's columns permuted alike: the same
float function), so this measures whether a few channels carry that gain.

Each channel j of each layer is scored on the calibration texts, with the float model's own inputs:
sum over tokens of (h_q - h)_j^2 * |down column j|^2 / |MLP output|^2, where h = gelu(gate) * up and
h_q the same with the recipe's int4 gate/up rows (the error channel j sends through down_proj, against
what the post-feed-forward norm divides by). Then the top ``--shares`` of all channels get int8 gate/up
rows (per channel, as the recipes store int8) and the 477 retrieval pairs are measured as
bench.weight_agreement does; ``--random`` the same share picked at random, as the control.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.weight_agreement import WeightBench, recipe_bench
from embg.quantize.simulate import int8_channel, single_thread



def int8_row_extra_bytes(columns: int) -> int:
    """Bytes an int8 row (one fp32 scale) costs over an int4 block-32 row (bf16 scales)."""
    return (columns + 4) - (columns // 2 + columns // 32 * 2)


def mlp_weight_names(layer: int) -> tuple[str, str]:
    return f"layers.{layer}.mlp.gate_proj.weight", f"layers.{layer}.mlp.up_proj.weight"


def channel_scores(bench: WeightBench, quantized: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Per decoder layer, each intermediate channel's share of the int4 gate/up error (module docstring)."""
    graph = bench.graph
    mlps = [layer.mlp for layer in graph.layers]
    with torch.no_grad():  # |down column j|^2 as the graph applies it (after any rotation of its input)
        reach = [mlp.down_proj(mlp.rotate_hidden(torch.eye(mlp.gate_proj.out_features))).pow(2).sum(1) for mlp in mlps]
    scores = [torch.zeros(mlp.gate_proj.out_features, dtype=torch.float64) for mlp in mlps]
    mask_now: list[torch.Tensor] = []

    def hook(layer: int) -> Callable:
        gate_name, up_name = mlp_weight_names(layer)

        def score(mlp, args, out):
            mask = mask_now[0]  # real tokens only, not padding (the graph may pad to whole attention blocks)
            keep = F.pad(mask, (0, args[0].shape[1] - mask.shape[1])).reshape(-1).bool()
            x = mlp.rotate_input(args[0]).reshape(-1, args[0].shape[-1])[keep]
            out = out.reshape(-1, out.shape[-1])[keep]
            h = F.gelu(F.linear(x, mlp.gate_proj.weight), approximate="tanh") * F.linear(x, mlp.up_proj.weight)
            h_q = F.gelu(F.linear(x, quantized[gate_name]), approximate="tanh") * F.linear(x, quantized[up_name])
            per_token = 1.0 / out.pow(2).sum(1, keepdim=True).clamp(min=1e-12)
            scores[layer] += ((h_q - h).pow(2) * per_token).sum(0).double() * reach[layer].double()
        return score

    hooks = [mlp.register_forward_hook(hook(i)) for i, mlp in enumerate(mlps)]
    try:
        with torch.no_grad(), single_thread():
            for ids, mask in bench.calibration:
                mask_now[:] = [mask]
                graph(ids, mask)
    finally:
        for handle in hooks:
            handle.remove()
    return scores


def with_int8_rows(weights: dict, quantized: dict[str, torch.Tensor], chosen: list[torch.Tensor]) -> dict:
    """The recipe's replacements with gate/up rows of ``chosen[layer]`` channels int8 per channel."""
    replaced = dict(weights)
    for layer, rows in enumerate(chosen):
        if len(rows) == 0:
            continue
        for name in mlp_weight_names(layer):
            def mixed(weight: torch.Tensor, name: str = name, rows: torch.Tensor = rows) -> torch.Tensor:
                out = quantized[name].clone()
                out[rows] = int8_channel(weight)[rows]
                return out
            replaced[name] = mixed
    return replaced


def split_by_layer(flat: list[int], width: int, layers: int) -> list[torch.Tensor]:
    """Channel indices over all layers (layer * width + channel) -> each layer's channels, sorted."""
    picked = torch.tensor(sorted(flat), dtype=torch.long)
    return [picked[picked // width == layer] - layer * width for layer in range(layers)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ffn_channels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory (the real embeddinggemma-300m)")
    parser.add_argument("--recipe", default="int4-rotated", help="preset name or recipe .json (default int4-rotated)")
    parser.add_argument("--shares", default="0.1,0.25", help="shares of all channels given int8 rows, top-scored first")
    parser.add_argument("--random", type=float, default=0.25, help="the control: this share at random (0: none)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    bench, recipe, weights = recipe_bench(args)
    params = dict(bench.graph.named_parameters())
    layers = len(bench.graph.layers)
    names = [name for layer in range(layers) for name in mlp_weight_names(layer)]
    if missing := [name for name in names if name not in weights or recipe.rule_for(name).bits != 4]:
        raise SystemExit(f"recipe {recipe.name}: gate/up must be int4 to measure int8 rows for them ({missing[0]})")
    with torch.no_grad():
        quantized = {name: weights[name](params[name].detach()) for name in names}
    scores = channel_scores(bench, quantized)
    flat = torch.cat(scores)
    width = len(scores[0])
    order = torch.argsort(flat, descending=True).tolist()
    cumulative = torch.cumsum(flat[order], 0) / flat.sum()
    concentration = {f"{share:.2f}": round(float(cumulative[max(1, int(share * len(flat))) - 1]), 4)
                     for share in (0.05, 0.1, 0.2, 0.3, 0.5)}
    print(f"share of the score carried by the top channels: {concentration}", flush=True)
    picks = [(f"top {share:.0%}", order[:int(share * len(flat))]) for share in map(float, args.shares.split(","))]
    if args.random:
        picks.append((f"random {args.random:.0%}", random.Random(0).sample(range(len(flat)), int(args.random * len(flat)))))
    for label, flat_rows in picks:
        mb = len(flat_rows) * 2 * int8_row_extra_bytes(params[names[0]].shape[1]) / 1e6
        row = bench.measure(f"{label} channels' gate/up rows int8 (+{mb:.1f} MB)",
                            with_int8_rows(weights, quantized, split_by_layer(flat_rows, width, layers)))
        row.update(channels=len(flat_rows), extra_mb=round(mb, 2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": Path(args.model).name, "recipe": recipe.name,
                                        "score_concentration": concentration, "rows": bench.rows}, indent=1) + "\n",
                            encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
