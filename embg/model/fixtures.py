"""Fixture checkpoints written in the exact on-disk layout of google/embeddinggemma-300m.

Kinds:
  tiny            6 layers (5 sliding : 1 full), hidden 192, 3 query heads of 64 on 1 KV head,
                  an 8192-piece real SentencePiece tokenizer, sliding window 16 (a token sees
                  |q-k| <= 8) so ordinary test texts cross it; 3.8M parameters, seconds to
                  write. Sized so that size ratios between recipes resemble the real model's:
                  the embedding holds ~42% of the parameters, and rows are wide enough that
                  per-row quantization parameters (LiteRT keeps a float scale and an int64
                  zero point per row, per signature) do not dominate as they would at 96.
  tiny-qat-q4_0   tiny with every embedding/linear weight snapped to the llama.cpp Q4_0 grid
  tiny-qat-q8_0   the same on the Q8_0 grid
  tiny-outliers   tiny rewritten so a few residual channels grow to ~9e4 on BOS (embg/model/outliers.py):
                  the activation structure of the real model, for fp16 and int8-activation checks
  full            the real config.json values and vocabulary (307,581,696 parameters with the
                  head), random weights; for benchmarks and slow tests (1.2 GB on disk)
  full-outliers   full with the outlier circuit (peak ~1.25e5, past 65504 from the 8th layer)

Weights are drawn from a seeded generator per tensor (in name order), so the same command
writes the same weights. The transformer is saved by transformers and the head by
sentence-transformers, so the layout is the libraries' own.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from embg.atomic import atomic_directory, check_writable_destination
from embg.errors import EmbgError
from embg.model.weights import expected_transformer_shapes

log = logging.getLogger(__name__)

FIXTURE_VERSION = "1"

# config_sentence_transformers.json prompts of google/embeddinggemma-300m.
PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "BitextMining": "task: search result | query: ",
    "Clustering": "task: clustering | query: ",
    "Classification": "task: classification | query: ",
    "InstructionRetrieval": "task: code retrieval | query: ",
    "MultilabelClassification": "task: classification | query: ",
    "PairClassification": "task: sentence similarity | query: ",
    "Reranking": "task: search result | query: ",
    "Retrieval": "task: search result | query: ",
    "Retrieval-query": "task: search result | query: ",
    "Retrieval-document": "title: none | text: ",
    "STS": "task: sentence similarity | query: ",
    "Summarization": "task: summarization | query: ",
}

# The real model's config.json values (google/embeddinggemma-300m).
FULL_CONFIG: dict[str, Any] = {
    "vocab_size": 262144, "hidden_size": 768, "intermediate_size": 1152, "num_hidden_layers": 24,
    "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 256, "query_pre_attn_scalar": 256,
    "max_position_embeddings": 2048, "sliding_window": 512, "rms_norm_eps": 1e-6,
    "hidden_activation": "gelu_pytorch_tanh", "use_bidirectional_attention": True,
    "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
    "attention_bias": False, "attention_dropout": 0.0, "attn_logit_softcapping": None,
    "final_logit_softcapping": None, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
}
TINY_CONFIG: dict[str, Any] = {
    **FULL_CONFIG, "vocab_size": 8192, "hidden_size": 192, "intermediate_size": 384, "num_hidden_layers": 6,
    "head_dim": 64, "query_pre_attn_scalar": 64, "sliding_window": 16,
}


@dataclass(frozen=True)
class FixtureKind:
    config: dict[str, Any]
    head: tuple[int, int]  # (Dense 1 out, Dense 2 out): 768 -> 3072 -> 768 in the real model
    seed: int = 0
    snap: str | None = None  # "q4_0" / "q8_0": weights snapped onto that grid
    tokenizer_vocab: int = 8192
    notes: dict[str, Any] = field(default_factory=dict)
    shaper: str | None = None  # name in SHAPERS: rewrites the random weights (e.g. real activation outliers)
    shaper_args: dict[str, Any] = field(default_factory=dict)


FIXTURE_KINDS: dict[str, FixtureKind] = {
    "tiny": FixtureKind(TINY_CONFIG, (768, 192)),
    "tiny-qat-q4_0": FixtureKind(TINY_CONFIG, (768, 192), snap="q4_0"),
    "tiny-qat-q8_0": FixtureKind(TINY_CONFIG, (768, 192), snap="q8_0"),
    "full": FixtureKind(FULL_CONFIG, (3072, 768)),
    "full-qat-q4_0": FixtureKind(FULL_CONFIG, (3072, 768), snap="q4_0"),
    "tiny-outliers": FixtureKind(TINY_CONFIG, (768, 192), shaper="outliers",
                                 shaper_args={"channels": 2, "peak": 9e4, "power": 1.2}),
    "full-outliers": FixtureKind(FULL_CONFIG, (3072, 768), shaper="outliers",
                                 shaper_args={"channels": 3, "peak": 1.25e5, "power": 0.55}),
}


def _shape_outliers(tensors: dict[str, torch.Tensor], kind: FixtureKind) -> dict[str, Any]:
    from embg.model.outliers import shape_outliers

    return shape_outliers(tensors, kind.config, kind.seed, **kind.shaper_args)


SHAPERS = {"outliers": _shape_outliers}


def snap_to_grid(weight: torch.Tensor, grid: str) -> torch.Tensor:
    """llama.cpp Q4_0 / Q8_0 round trip along the last axis in blocks of 32 (symmetric, one scale per block).

    Q4_0: d = m / -8 where m is the block's value of largest magnitude (sign kept), q = clamp(round(x/d), -8, 7).
    Q8_0: d = max|x| / 127, q = round(x/d). Dequantized value d * q.
    """
    from embg.quantize.grids import GRIDS

    return GRIDS[grid].snap(weight)


def _random_weights(kind: FixtureKind, notes: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    shapes = expected_transformer_shapes(kind.config)
    hidden = kind.config["hidden_size"]
    shapes["head.0.weight"] = (kind.head[0], hidden)
    shapes["head.1.weight"] = (kind.head[1], kind.head[0])
    tensors = {}
    for index, name in enumerate(sorted(shapes)):
        gen = torch.Generator().manual_seed(kind.seed * 1_000_003 + index)
        shape = shapes[name]
        if len(shape) == 1:  # RMSNorm scales, applied as (1 + w)
            tensors[name] = torch.randn(shape, generator=gen) * 0.1
        elif name == "embed_tokens.weight":
            tensors[name] = torch.randn(shape, generator=gen) * 0.05
        else:  # unit-gain linear maps so every layer matters
            tensors[name] = torch.randn(shape, generator=gen) / shape[1] ** 0.5
    if kind.shaper:
        shaped = SHAPERS[kind.shaper](tensors, kind)
        if notes is not None:
            notes.update(shaped)
    if kind.snap:
        for name, value in tensors.items():
            if value.ndim == 2 and not name.startswith("head."):
                tensors[name] = snap_to_grid(value, kind.snap)
    return tensors


def write_fixture(kind_name: str, out: Path) -> Path:
    """Write fixture ``kind_name`` to ``out`` atomically; returns ``out``."""
    if kind_name not in FIXTURE_KINDS:
        raise EmbgError(f"unknown fixture kind {kind_name!r}; choose one of {', '.join(FIXTURE_KINDS)}")
    kind = FIXTURE_KINDS[kind_name]
    check_writable_destination(out, is_fixture, "fixture checkpoint")  # before the weights are drawn
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    try:  # sentence-transformers >= 6 moved the modules; older releases keep `models`
        from sentence_transformers.sentence_transformer import modules as st_models
    except ImportError:  # pragma: no cover
        from sentence_transformers import models as st_models
    from transformers import Gemma3TextConfig, Gemma3TextModel

    from embg.model.tiny_tokenizer import write_tiny_tokenizer

    shaper_notes: dict[str, Any] = {}
    tensors = _random_weights(kind, shaper_notes)
    config = Gemma3TextConfig(**kind.config)
    out = Path(out)
    with atomic_directory(out, is_fixture, "fixture checkpoint", lambda message: log.info("%s", message)) as tmp:
        stage = tmp / ".transformer"
        with torch.device("meta"):
            model = Gemma3TextModel(config)
        body = {k: v for k, v in tensors.items() if not k.startswith("head.")}
        model.load_state_dict(body, strict=True, assign=True)
        model.save_pretrained(str(stage), safe_serialization=True)
        write_tiny_tokenizer(stage, vocab_size=kind.tokenizer_vocab, seed=kind.seed,
                             model_max_length=config.max_position_embeddings)
        transformer = st_models.Transformer(str(stage), max_seq_length=config.max_position_embeddings)
        hidden = config.hidden_size
        dense = []
        for i, (fan_in, fan_out) in enumerate(((hidden, kind.head[0]), (kind.head[0], kind.head[1]))):
            layer = st_models.Dense(fan_in, fan_out, bias=False, activation_function=torch.nn.Identity())
            layer.linear.weight.data.copy_(tensors[f"head.{i}.weight"])
            dense.append(layer)
        pooling = st_models.Pooling(hidden, pooling_mode="mean")
        st = SentenceTransformer(modules=[transformer, pooling, *dense, st_models.Normalize()],
                                 prompts=PROMPTS, similarity_fn_name="cosine", device="cpu")
        st.save(str(tmp))
        # transformers 5 does not re-save tokenizer.model; apps need the SentencePiece file itself.
        os.replace(stage / "tokenizer.model", tmp / "tokenizer.model")
        _remove_tree(stage)
        record = {"kind": kind_name, "version": FIXTURE_VERSION, "seed": kind.seed, "snap": kind.snap,
                  "python": sys.version.split()[0], "torch": torch.__version__}
        if kind.shaper:
            record.update(shaper=kind.shaper, shaper_args=kind.shaper_args, shaper_notes=shaper_notes)
        (tmp / FIXTURE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return out


FIXTURE_RECORD = "embg_fixture.json"


def is_fixture(directory: Path) -> bool:
    """An earlier fixture (it carries embg_fixture.json): the only directory --out may replace."""
    return (Path(directory) / FIXTURE_RECORD).is_file()


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def ensure_fixture(kind_name: str, cache_root: Path) -> Path:
    """The fixture in the cache, written on first use (keyed by kind, version and Python build)."""
    tag = f"{kind_name}-v{FIXTURE_VERSION}-py{sys.version_info.major}{sys.version_info.minor}"
    directory = Path(cache_root) / tag
    if not (directory / "modules.json").is_file():
        log.info("writing fixture %s to %s", kind_name, directory)
        write_fixture(kind_name, directory)
    return directory
