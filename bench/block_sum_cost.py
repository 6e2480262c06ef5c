"""What exact Q4_0 costs on LiteRT, on full-size linear shapes: the block-sum correction for negative
scales (`int4-qat`) and the residual pass on every input (`int4-qat-exact`); with ``--block-sizes``,
what XNNPACK's products cost per weight layout instead (per-channel int8, int4 blocks of 32/64/128,
per-channel int4), all with dynamic int8 activations.

    python -m bench.block_sum_cost [--layers 4] [--repeats 30] [--out DIR] [--block-sizes]

Builds the linear layers of N decoder layers at the real model's shapes (q/k/v/o/gate/up/down),
as plain int4 block-32 layers, with every layer carrying its float block-sum correction (half the
blocks flipped, as Q4_0 gives), and with that plus each input in two dynamic int8 passes
(embg/quantize/litert_split.py); converts each with litert-torch, quantizes with the `int4-qat`
recipe and times one 256-token input at 1 thread, interleaved. Prints sizes and median latencies;
the ratios are what carry over (absolute ms on a shared box are noise). Attention, norms and the
embedding are not in it, so the whole model's relative cost is lower.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from embg.export.tflite_target import convert_float
from embg.quantize.groups import part_of
from embg.quantize.litert_split import split_activations
from embg.quantize.negative_scales import BLOCK, BlockSumCorrectedLinear
from embg.quantize.recipe import load_recipe
from embg.quantize.tflite_backend import quantize_tflite
from embg.runtimes.litert_rt import make_interpreter

HIDDEN, TOKENS = 768, 256
SHAPES = {"q_proj": (768, HIDDEN), "k_proj": (256, HIDDEN), "v_proj": (256, HIDDEN), "o_proj": (HIDDEN, 768),
          "gate_proj": (1152, HIDDEN), "up_proj": (1152, HIDDEN), "down_proj": (HIDDEN, 1152)}


def _linear(out: int, k: int, corrected: bool) -> nn.Module:
    weight = torch.randn(out, k) * 0.02
    if corrected:
        blocks = (out, k // BLOCK)
        return BlockSumCorrectedLinear(weight, torch.rand(blocks) * 2e-3 * (torch.rand(blocks) < 0.5))
    layer = nn.Linear(k, out, bias=False)
    layer.weight.data = weight
    return layer


class _Layer(nn.Module):
    def __init__(self, corrected: bool) -> None:
        super().__init__()
        for name, (out, k) in SHAPES.items():
            setattr(self, name, _linear(out, k, corrected))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        o = self.o_proj(q * torch.cat([k, v, k], -1))  # stands in for attention: keeps every layer live
        return x + self.down_proj(nn.functional.gelu(self.gate_proj(o)) * self.up_proj(o))


class _Stack(nn.Module):
    def __init__(self, layers: int, corrected: bool) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(1024, HIDDEN)
        self.layers = nn.ModuleList(_Layer(corrected) for _ in range(layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids) * attention_mask[..., None].to(torch.float32)
        for layer in self.layers:
            x = layer(x)
        return x.mean(1)


LAYOUTS = {"int8 per channel": {"bits": 8, "granularity": "channel"},
           "int4 block 32": {"bits": 4, "granularity": "block", "block_size": 32},
           "int4 block 64": {"bits": 4, "granularity": "block", "block_size": 64},
           "int4 block 128": {"bits": 4, "granularity": "block", "block_size": 128},
           "int4 per channel": {"bits": 4, "granularity": "channel"}}


def _layout_recipe(rule: dict):
    from embg.quantize.recipe import parse_recipe

    return parse_recipe({"name": "layout", "activations": "dynamic_int8_per_row",
                         "rules": {"embedding": {"bits": 8, "granularity": "channel"}, "head": {"bits": 32},
                                   "attention": rule, "projections": rule, "feed_forward": rule}})


def _time(runners: dict, repeats: int) -> dict[str, float]:
    """Median ms per runner, interleaved: each repetition runs every runner once."""
    ids = (np.arange(TOKENS, dtype=np.int32)[None] * 7) % 1024
    mask = np.ones((1, TOKENS), np.int32)
    times: dict[str, list[float]] = {label: [] for label in runners}
    for _ in range(repeats):
        for label, runner in runners.items():
            start = time.perf_counter()
            runner(input_ids=ids, attention_mask=mask)
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) * 1e3 for label, values in times.items()}


def _runner(graph: nn.Module, recipe, out: Path, label: str):
    slug = label.replace(" ", "-").replace("+", "-")
    float_path, path = out / f"{slug}.float.tflite", out / f"{slug}.tflite"
    convert_float(graph, (TOKENS,), float_path)
    quantize_tflite(float_path, path, graph, recipe)
    print(f"{label}: {path.stat().st_size / 1e6:.2f} MB")
    return make_interpreter(path, threads=1)[0].get_signature_runner(f"seq{TOKENS}")


def block_sizes(layers: int, repeats: int, out: Path) -> dict[str, float]:
    """Each weight layout on the same plain layers; prints medians and ratios to per-channel int8."""
    runners = {label: _runner(_Stack(layers, False).eval().requires_grad_(False), _layout_recipe(rule), out, label)
               for label, rule in LAYOUTS.items()}
    medians = _time(runners, repeats)
    base = medians["int8 per channel"]
    for label, ms in medians.items():
        print(f"{label}: median {ms:.1f} ms, {ms / base:.3f}x int8 per channel ({repeats} runs, {TOKENS} tokens, 1 thread)")
    return medians


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="keep the .tflite files here")
    parser.add_argument("--block-sizes", action="store_true",
                        help="instead: per-channel int8 vs int4 blocks of 32/64/128 vs per-channel int4")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="embg-block-sum-"))
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if args.block_sizes:
        block_sizes(args.layers, args.repeats, out)
        return 0
    runners = {}
    for label in ("plain", "corrected", "corrected+residual"):
        graph = _Stack(args.layers, label != "plain").eval().requires_grad_(False)
        if label == "corrected+residual":
            split_activations(graph, None, 0, tuple(SHAPES), lambda name: part_of(name) in SHAPES)
        runners[label] = _runner(graph, load_recipe("int4-qat"), out, label)
    medians = _time(runners, args.repeats)
    for label, ms in medians.items():
        print(f"{label}: median {ms:.1f} ms ({args.repeats} runs, {TOKENS} tokens, 1 thread)")
    print(f"corrected / plain: {medians['corrected'] / medians['plain']:.3f}; "
          f"corrected+residual / corrected: {medians['corrected+residual'] / medians['corrected']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
