"""What the benchmark runs: variants (fixture x target x recipe), shapes, and the FLOP model.

A full run uses the real architecture (``full``: random weights; ``full-qat-q4_0``: the same
weights snapped onto the Q4_0 grid); ``--quick`` runs the same code on the tiny fixtures.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BASELINE = "eager-fp32"  # PyTorch eager fp32 via sentence-transformers, measured in the same loop


@dataclass(frozen=True)
class Variant:
    name: str  # e.g. "tflite-int4", "onnx-int4-qat@q4_0"
    fixture: str  # fixture kind written by embg.fixtures
    target: str  # "onnx" | "tflite"
    recipe: str  # preset name, or a bench-derived recipe (bench/exports.py DERIVED_RECIPES: int4-naive, int8-products)
    qat: bool = False  # needs the int4-qat recipe (skipped, with the reason, when it does not work yet)
    options: tuple[tuple[str, str], ...] = ()  # export options, e.g. (("attention", "dense"),)

    @property
    def runtime(self) -> str:
        return {"onnx": "onnxruntime", "tflite": "litert"}[self.target]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Shape:
    """One timed input: ``tokens`` real tokens per row, ``batch`` rows, optionally padded to ``pad_to``."""

    key: str
    tokens: int
    batch: int = 1
    pad_to: int | None = None  # the fixed-length case: same query, padded (mask 0) to this many positions


@dataclass(frozen=True)
class Plan:
    mode: str  # "full" | "quick"
    fixture: str
    qat_fixture: str
    variants: tuple[Variant, ...]
    shapes: tuple[Shape, ...]
    tflite_buckets: tuple[int, ...] | None  # None: the target's default buckets (what --bits 4 writes)
    repeats: int
    threads: tuple[int, ...]
    excluded: tuple[str, ...] = ()  # variants of the mode left out with --variants (reported as skipped)


def _variants(fixture: str, qat_fixture: str) -> tuple[Variant, ...]:
    plain = [Variant(f"{t}-{r}", fixture, t, r) for t in ("onnx", "tflite") for r in ("fp32", "int8", "int4")]
    qat = [Variant(f"{t}-{r}@q4_0", qat_fixture, t, r, qat=True)
           for t in ("onnx", "tflite") for r in ("int4-qat", "int4-naive")]
    # The graph before banded sliding-window attention: what banding changes, measured in the same loop.
    dense = [Variant(f"{t}-int8-dense", fixture, t, "int8", options=(("attention", "dense"),)) for t in ("onnx", "tflite")]
    # int8 scores and weighted values (recipe field attention_products; ONNX only, LiteRT keeps them fp32).
    products = [Variant("onnx-int8-products", fixture, "onnx", "int8-products")]
    return tuple(plain + dense + products + qat)


def _bits_variants(model: str) -> tuple[Variant, ...]:
    """What `embg-export --bits N` writes: the generic preset and --bits's own choice (the target's preferred
    preset where it holds on this checkpoint, a QAT grid). The real checkpoint's default rows; not in the
    random-weight plan, where --bits 4 would calibrate GPTQ on random weights."""
    from embg.quantize.recipe import BITS_TO_PRESET

    return tuple(Variant(f"{t}-bits{b}", model, t, BITS_TO_PRESET[b], options=(("auto_qat", "true"),))
                 for t in ("onnx", "tflite") for b in (8, 4))


FULL_SHAPES = (
    Shape("q16", 16), Shape("s64", 64), Shape("s256", 256), Shape("s512", 512), Shape("s1024", 1024),
    Shape("s2048", 2048),
    Shape("s256_b8", 256, batch=8), Shape("q16_pad256", 16, pad_to=256),
)
QUICK_SHAPES = (Shape("q16", 16), Shape("s64", 64), Shape("s256", 256), Shape("s256_b8", 256, batch=8),
                Shape("q16_pad256", 16, pad_to=256))
# Smoke test: one bundle per target (the QAT pair runs with --quick --variants ...; each tiny export is ~1 min here).
QUICK_VARIANTS = ("onnx-int8", "tflite-int4")


def make_plan(quick: bool, threads: tuple[int, ...], only: tuple[str, ...] = (), repeats: int | None = None) -> Plan:
    if quick:
        fixture, qat_fixture = "tiny", "tiny-qat-q4_0"
        variants = _variants(fixture, qat_fixture)
        only = only or QUICK_VARIANTS
        shapes, buckets, default_repeats = QUICK_SHAPES, (64, 256), 2
    else:
        fixture, qat_fixture = "full", "full-qat-q4_0"
        variants = _variants(fixture, qat_fixture)
        # The target's default buckets (32..2048): what `embg-export --target tflite --bits 4` writes.
        shapes, buckets, default_repeats = FULL_SHAPES, None, 5
    if only:
        unknown = sorted(set(only) - {v.name for v in variants})
        if unknown:
            raise SystemExit(f"unknown variant(s) {unknown}; choose from {[v.name for v in variants]}")
    excluded = tuple(v.name for v in variants if only and v.name not in only)
    if only:
        variants = tuple(v for v in variants if v.name in only)
    return Plan("quick" if quick else "full", fixture, qat_fixture, variants, shapes, buckets,
                repeats or default_repeats, threads, excluded)


def real_plan(model: str, only: tuple[str, ...], repeats: int | None = None) -> Plan:
    """Variants of a real checkpoint directory (no QAT pairs: those need a QAT checkpoint), 1 thread."""
    variants = tuple(v for v in _variants(model, "") if not v.qat) + _bits_variants(model)
    unknown = sorted(set(only) - {v.name for v in variants})
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {[v.name for v in variants]}")
    chosen = tuple(v for v in variants if v.name in only)
    return Plan("real", model, "", chosen, (), None, repeats or 3, (1,),
                tuple(v.name for v in variants if v.name not in only))


def model_flops(config: dict[str, Any], seq_len: int, head: tuple[int, ...] = (), banded: bool = True) -> dict[str, float]:
    """Multiply-add FLOPs (2 per MAC) of one forward pass at ``seq_len`` tokens, batch 1.

    Counts what the exported graphs execute: full layers' attention is a dense S x S product;
    sliding layers' too with ``banded=False`` (the graph before banding), else each query block
    multiplies only its band's keys (embg/model/attention.py; dense while that saves nothing).
    The embedding lookup is free; norms, softmax and RoPE are ignored (<1%).
    """
    s, d = seq_len, config["hidden_size"]
    heads, kv, hd = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    ff, layers = config["intermediate_size"], config["num_hidden_layers"]
    qkvo = 2 * s * d * (heads * hd + 2 * kv * hd) + 2 * s * heads * hd * d
    mlp = 2 * s * d * ff * 3  # gate, up, down
    dense = 2 * 2 * s * s * hd * heads  # scores and weighted sum
    sliding = dense
    if banded:
        layout = sliding_layout(config, s)
        sliding = 2 * 2 * layout.padded * layout.keys * hd * heads
    types = config.get("layer_types") or ["sliding_attention"] * layers
    n_sliding = sum(t == "sliding_attention" for t in types[:layers])
    attention = n_sliding * sliding + (layers - n_sliding) * dense
    head_flops, width = 0, d
    for out in head:  # the sentence-transformers Dense layers act on the pooled vector only
        head_flops += 2 * width * out
        width = out
    linear = layers * (qkvo + mlp)
    return {"linear": float(linear), "attention": float(attention), "head": float(head_flops),
            "total": float(linear + attention + head_flops)}


def sliding_layout(config: dict[str, Any], seq_len: int):
    """The band the export graph uses at ``seq_len`` (the graph's own rule, from config.json)."""
    from transformers import Gemma3TextConfig

    from embg.model.attention import band_block_for, band_layout

    halo = int(Gemma3TextConfig.from_dict(dict(config)).sliding_window) - 1  # transformers' bidirectional bound
    return band_layout(seq_len, band_block_for(halo), halo)


def fixture_config(directory: Path) -> tuple[dict[str, Any], tuple[int, ...]]:
    """config.json of a checkpoint directory and its Dense head widths."""
    config = json.loads((Path(directory) / "config.json").read_text())
    head = []
    for sub in ("2_Dense", "3_Dense"):
        path = Path(directory) / sub / "config.json"
        if path.is_file():
            head.append(int(json.loads(path.read_text())["out_features"]))
    return config, tuple(head)
