"""Where LiteRT spends the time, by timing sub-graphs of the export graph (1 thread, batch 1).

    python bench/profile_litert.py --model DIR [--bundle B ...] [--tokens 256,2048] [--repeats 5] [--json out.json]

ai-edge-litert's Python API exposes no per-op profiler, so this converts parts of the real export
graph (one sliding layer, one full layer, and the attention core of each: scores, mask, softmax,
weighted values) into small .tflite files with one signature per length, fp32 and int8 (the int8
preset's dynamic-range rules, on the layers' weights), in both attention forms (dense [S, S]
and banded), and times them in one interleaved loop together with whole bundles. Per forward:
20 sliding + 4 full layers; what the layers do not explain (embedding, masks and rope built once,
pooling, head) is the bundle's time minus the layers'.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.profile_onnx import token_inputs  # noqa: E402
from embg.model.attention import Band, banded_attention, dense_attention  # noqa: E402

SLIDING, FULL = "sliding_attention", "full_attention"


class LayerPart(nn.Module):
    """One decoder layer with its rope tables and mask as inputs (``layers.0.*`` names: the recipe's groups)."""

    def __init__(self, layer: nn.Module, layout) -> None:
        super().__init__()
        self.layers = nn.ModuleList([layer])
        self.layout = layout

    def forward(self, x, cos, sin, mask, index=None):
        return self.layers[0](x, cos, sin, mask if index is None else Band(self.layout, index, mask))


class CorePart(nn.Module):
    """The attention core alone: q, k, v in, attention output out (no weights)."""

    def __init__(self, scaling: float, layout) -> None:
        super().__init__()
        self.scaling = scaling
        self.layout = layout

    def forward(self, q, k, v, mask, index=None):
        if index is None:
            return dense_attention(q, k, v, mask, self.scaling)
        return banded_attention(q, k, v, Band(self.layout, index, mask), self.scaling)


def part_inputs(graph, layer_type: str, tokens: int, banded: bool) -> tuple[dict[str, torch.Tensor], Any]:
    """Inputs of a layer (x, cos, sin, mask[, index]) at ``tokens`` and the layout, as the graph builds them."""
    saved = graph.band_block
    if not banded:
        graph.band_block = None
    try:
        layout = graph.band_layout(tokens) if layer_type == SLIDING else None
    finally:
        graph.band_block = saved
    width = layout.padded if layout is not None else tokens
    mask = torch.ones(1, width, dtype=torch.long)
    mask[0, tokens:] = 0
    positions = torch.arange(width, dtype=torch.float32)
    masks = graph._masks(mask, positions, layout, torch.float32)
    cos, sin = graph._rope(positions, layer_type, torch.float32)
    hidden = graph.embed_tokens.weight.shape[1]
    inputs = {"x": torch.randn(1, width, hidden) * 10, "cos": cos, "sin": sin}
    chosen = masks[layer_type]
    if isinstance(chosen, Band):
        inputs.update(mask=chosen.mask, index=chosen.index)
    else:
        inputs["mask"] = chosen
    return inputs, layout


def core_inputs(attention, layer_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    width = layer_inputs["x"].shape[1]
    out = {"q": torch.randn(1, width, attention.heads, attention.head_dim),
           "k": torch.randn(1, width, attention.kv_heads, attention.head_dim),
           "v": torch.randn(1, width, attention.kv_heads, attention.head_dim), "mask": layer_inputs["mask"]}
    if "index" in layer_inputs:
        out["index"] = layer_inputs["index"]
    return out


def convert(parts: dict[str, tuple[nn.Module, dict[str, torch.Tensor]]], path: Path) -> None:
    """One .tflite with a signature per named part."""
    import litert_torch

    converter = None
    for name, (module, sample) in parts.items():
        module = module.eval()
        converter = (litert_torch.signature(name, module, sample_kwargs=sample) if converter is None
                     else converter.signature(name, module, sample_kwargs=sample))
    converter.convert().export(str(path))


def build_parts(model_dir: str, tokens: list[int], work: Path) -> dict[str, dict[str, Any]]:
    """{file kind: {"path", "signatures": {name: (inputs as numpy)}}}: layer files fp32 + int8, core files."""
    from embg.checkpoint.load import load_model
    from embg.quantize.recipe import load_recipe
    from embg.quantize.tflite_backend import quantize_tflite

    graph = load_model(model_dir).graph()
    first = {t: next(i for i, layer in enumerate(graph.layers) if layer.layer_type == t) for t in (SLIDING, FULL)}
    layer_parts, core_parts, feeds = {}, {}, {}
    for n in tokens:
        for layer_type in (SLIDING, FULL):
            for banded in ((False, True) if layer_type == SLIDING else (False,)):
                inputs, layout = part_inputs(graph, layer_type, n, banded)
                if banded and layout is None:
                    continue  # this length keeps the dense form
                key = f"{'sliding' if layer_type == SLIDING else 'full'}_{'banded' if banded else 'dense'}_{n}"
                layer = graph.layers[first[layer_type]]
                layer_parts[key] = (LayerPart(layer, layout), inputs)
                core = core_inputs(layer.self_attn, inputs)
                core_parts[key] = (CorePart(layer.self_attn.scaling, layout), core)
                feeds[("layer", key)] = {k: v.numpy() for k, v in inputs.items()}
                feeds[("core", key)] = {k: v.numpy() for k, v in core.items()}
    files = {"layer-fp32": work / "layer-fp32.tflite", "core": work / "core.tflite", "layer-int8": work / "layer-int8.tflite"}
    convert(layer_parts, files["layer-fp32"])
    convert(core_parts, files["core"])
    probe = nn.Module()
    probe.layers = nn.ModuleList([graph.layers[first[SLIDING]], graph.layers[first[FULL]]])
    quantize_tflite(files["layer-fp32"], files["layer-int8"], probe, load_recipe("int8"))
    out: dict[str, dict[str, Any]] = {}
    for kind, path in files.items():
        role = "core" if kind == "core" else "layer"
        out[kind] = {"path": path, "feeds": {key: feed for (r, key), feed in feeds.items() if r == role}}
    return out


def _signature_runner(path: Path, name: str):
    from embg.runtimes.litert_rt import make_interpreter

    interpreter, _ = make_interpreter(path, threads=1)
    return interpreter.get_signature_runner(name)


def time_all(parts: dict[str, dict[str, Any]], bundles: list[Path], tokens: list[int], repeats: int) -> dict[str, Any]:
    from embg.bundle import Artifact
    from embg.runtimes import load_all, load_runtime

    load_all()
    calls: dict[str, Any] = {}
    for kind, entry in parts.items():
        for key, feed in entry["feeds"].items():
            runner = _signature_runner(entry["path"], key)
            typed = {k: (v.astype(np.int32) if v.dtype == np.int64 else v) for k, v in feed.items()}
            calls[f"{kind}/{key}"] = (lambda runner=runner, typed=typed: runner(**typed))
    for bundle in bundles:
        runtime = load_runtime("litert", Artifact.load(bundle), threads=1)
        for n in tokens:
            ids, mask = token_inputs(n)["input_ids"], token_inputs(n)["attention_mask"]
            calls[f"bundle/{bundle.name}/{n}"] = (lambda runtime=runtime, ids=ids, mask=mask: runtime.embed(ids, mask))
    for call in calls.values():
        call()  # warm-up: XNNPACK packing, arenas
    samples: dict[str, list[float]] = defaultdict(list)
    names = list(calls)
    for rep in range(repeats):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            start = time.perf_counter()
            calls[name]()
            samples[name].append((time.perf_counter() - start) * 1000.0)
    return {name: round(statistics.median(values), 2) for name, values in samples.items()}


def breakdown(medians: dict[str, float], bundles: list[Path], tokens: list[int]) -> dict[str, Any]:
    """Per bundle and length: the whole forward and its parts (20 sliding + 4 full layers, cores, the rest)."""
    from embg.bundle import Artifact

    out: dict[str, Any] = {}
    for bundle in bundles:
        manifest = Artifact.load(bundle).manifest
        precision = "fp32" if manifest["recipe"]["name"] == "fp32" else "int8"
        banded = manifest.get("attention", {}).get("sliding") == "banded"
        for n in tokens:
            sliding_key = f"sliding_banded_{n}" if banded and f"core/sliding_banded_{n}" in medians else f"sliding_dense_{n}"
            sliding = medians[f"layer-{precision}/{sliding_key}"]
            full = medians[f"layer-{precision}/full_dense_{n}"]
            total = medians[f"bundle/{bundle.name}/{n}"]
            cores = 20 * medians[f"core/{sliding_key}"] + 4 * medians[f"core/full_dense_{n}"]
            layers = 20 * sliding + 4 * full
            out[f"{bundle.name}/{n}"] = {
                "total_ms": total, "sliding_form": sliding_key.split("_")[1],
                "attention_core_ms": round(cores, 1),
                "projections_mlp_norms_ms": round(layers - cores, 1),
                "outside_layers_ms": round(total - layers, 1),
                "per_sliding_layer_ms": sliding, "per_full_layer_ms": full,
                "per_sliding_core_ms": medians[f"core/{sliding_key}"],
                "per_full_core_ms": medians[f"core/full_dense_{n}"],
            }
    return out


def render(rows: dict[str, Any]) -> str:
    lines = ["| bundle @ tokens | total ms | attention cores (20 sliding + 4 full) | projections, MLP, norms "
             "| outside the layers | sliding form |", "|---|---:|---:|---:|---:|---|"]
    for name, row in rows.items():
        total = row["total_ms"]
        cells = [f"{row[k]:.0f} ({row[k] / total * 100:.0f}%)"
                 for k in ("attention_core_ms", "projections_mlp_norms_ms", "outside_layers_ms")]
        lines.append(f"| {name} | {total:.0f} | " + " | ".join(cells) + f" | {row['sliding_form']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/profile_litert.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory (the bundles' model)")
    parser.add_argument("--bundle", action="append", type=Path, default=[], help="a TFLite bundle to time whole")
    parser.add_argument("--tokens", default="256,2048")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--work", type=Path, help="keep the part files here (default: a temporary directory)")
    args = parser.parse_args(argv)
    tokens = [int(t) for t in args.tokens.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="embg-litert-parts-"))
    work.mkdir(parents=True, exist_ok=True)
    parts = build_parts(args.model, tokens, work)
    medians = time_all(parts, args.bundle, tokens, args.repeats)
    rows = breakdown(medians, args.bundle, tokens)
    if args.json:
        args.json.write_text(json.dumps({"tokens": tokens, "repeats": args.repeats, "medians_ms": medians,
                                         "breakdown": rows}, indent=1) + "\n")
    print(json.dumps(medians, indent=1))
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
