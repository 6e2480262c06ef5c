"""Banded sliding-window attention is exact: the same outputs as dense attention with the window mask.

The tiny fixture's window is 16 in config.json, i.e. a token sees |q-k| <= 8, so its query blocks
are 8 positions: short texts cross blocks, and padding wider than the window is easy to build.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embg.model.attention import (BandLayout, band_layout, banded_attention, dense_attention, sliding_band,
                                  window_mask)
from embg.textdata.builtin import parity_texts
from embg.parity.path import cosine_rows

TEXTS = parity_texts()
WINDOW, HEADS, KV_HEADS, DIM = 9, 3, 1, 16  # the tiny fixture's bound: |q-k| < 9
HALO = WINDOW - 1
BLOCK = HALO // 2  # the graph's choice


def _padded_batch(seq: int) -> torch.Tensor:
    """Row 0 full, row 1 padded after 3 tokens (padding far wider than the window), row 2 one token."""
    mask = torch.ones(3, seq, dtype=torch.long)
    mask[1, min(3, seq):] = 0
    mask[2, 1:] = 0
    return mask


def _both(seq: int, mask: torch.Tensor, layout: BandLayout, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(banded, dense-with-window-mask) attention outputs on the same random q, k, v; [B, S, H*D]."""
    gen = torch.Generator().manual_seed(seed)
    batch = mask.shape[0]
    q = torch.randn(batch, seq, HEADS, DIM, generator=gen) * 3
    k = torch.randn(batch, seq, KV_HEADS, DIM, generator=gen) * 3
    v = torch.randn(batch, seq, KV_HEADS, DIM, generator=gen)
    dense = dense_attention(q, k, v, window_mask(mask, torch.arange(seq, dtype=torch.float32), WINDOW), 0.25)
    pad = layout.padded - seq  # the graph pads the whole sequence to whole blocks once, up front
    padded = [F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v)]
    band = sliding_band(F.pad(mask, (0, pad)), torch.arange(layout.padded, dtype=torch.float32), layout, WINDOW, HALO)
    banded = banded_attention(*padded, band, 0.25)[:, :seq]
    return banded, dense


@pytest.mark.parametrize("seq", [1, 5, 8, 9, 17, 23, 24, 40, 61, 100])
def test_banded_equals_dense_with_window_mask(seq):
    mask = _padded_batch(seq)
    layout = band_layout(seq, BLOCK, HALO)
    banded, dense = _both(seq, mask, layout)
    assert torch.isfinite(banded).all()  # padding rows included: their keys are all masked, finitely
    real = mask.bool()
    assert (banded - dense)[real].abs().max() <= 1e-5


def test_layout_covers_the_window_and_pads_little():
    for seq in range(1, 300):
        layout = band_layout(seq, BLOCK, HALO)
        assert 0 <= layout.padded - seq < layout.blocks
        assert layout.keys == min(layout.block + 2 * HALO, layout.padded)
        if seq <= BLOCK + 2 * HALO:  # a block and its halos would see everything: one dense block
            assert (layout.blocks, layout.keys) == (1, seq) and not layout.saves_work
        else:
            assert layout.block <= BLOCK and layout.saves_work


def test_fully_masked_rows_stay_finite():
    seq = 40
    mask = torch.zeros(2, seq, dtype=torch.long)
    mask[0, :2] = 1  # row 0: 38 padding positions, most of their windows hold no real key; row 1: all padding
    banded, _ = _both(seq, mask, band_layout(seq, BLOCK, HALO))
    assert torch.isfinite(banded).all()


def test_block_without_its_neighbours_is_caught():
    """A band whose blocks miss their neighbours' keys differs from the reference: the check can fail."""
    seq = 40
    mask = _padded_batch(seq)
    wrong = BandLayout(blocks=10, block=4, keys=4)  # each block only against its own keys
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, seq, h, DIM, generator=gen) for h in (HEADS, KV_HEADS, KV_HEADS))
    dense = dense_attention(q, k, v, window_mask(mask, torch.arange(seq, dtype=torch.float32), WINDOW), 0.25)
    band = sliding_band(mask, torch.arange(seq, dtype=torch.float32), wrong, WINDOW, halo=0)
    banded = banded_attention(q, k, v, band, 0.25)
    assert (banded - dense)[mask.bool()].abs().max() > 1e-2


def test_graph_uses_a_band_that_follows_the_window(tiny_model):
    graph = tiny_model.graph()
    assert graph.window == WINDOW and graph.band_block == BLOCK  # from config.json, not a fixed 128
    assert graph.band_layout(BLOCK + 2 * HALO) is None  # short fixed lengths keep one dense product
    assert graph.band_layout(100) == band_layout(100, BLOCK, HALO)


@pytest.mark.parametrize("max_len", [41, 99, 2048])
def test_graph_with_band_matches_sentence_transformers(tiny_model, tiny_reference, max_len):
    """Lengths that are not multiples of the block, in one padded batch (short rows: padding >> window)."""
    graph = tiny_model.graph()
    batch = tiny_model.tokenizer.encode(TEXTS, prompt="document", max_length=max_len)
    assert graph.band_layout(batch.input_ids.shape[1]) is not None
    with torch.no_grad():
        ours = graph(torch.as_tensor(batch.input_ids), torch.as_tensor(batch.attention_mask)).numpy()
    ref = tiny_reference.encode(TEXTS, prompt_name="document", batch_size=len(TEXTS), max_length=max_len)
    assert np.isfinite(ours).all()
    assert cosine_rows(ours, ref).min() >= 0.99999


def test_wrong_band_in_the_graph_is_caught(tiny_model, tiny_reference):
    graph = tiny_model.graph()
    graph.band_halo = 0  # blocks without their neighbours: queries near a block edge lose keys
    batch = tiny_model.tokenizer.encode(TEXTS, prompt="query")
    with torch.no_grad():
        ours = graph(torch.as_tensor(batch.input_ids), torch.as_tensor(batch.attention_mask)).numpy()
    ref = tiny_reference.encode(TEXTS, prompt_name="query", batch_size=len(TEXTS))
    assert cosine_rows(ours, ref).min() < 0.999


def _reference_at(reference, prompt, max_len):
    return reference.encode(TEXTS, prompt_name=prompt, batch_size=len(TEXTS), max_length=max_len)


def _runtime(bundle, name):
    from embg.bundle import Artifact
    from embg.runtimes import load_all, load_runtime

    load_all()
    artifact = Artifact.load(bundle)
    return artifact, load_runtime(name, artifact, threads=1)


@pytest.mark.parametrize("max_len", [21, 43, 99, 2048])
def test_onnx_one_file_serves_every_length(tiny_bundle, tiny_model, tiny_reference, max_len):
    """The fp32 ONNX file computes its block count and padding in-graph: padded batch and single texts."""
    import onnx

    artifact, runtime = _runtime(tiny_bundle("onnx", 32), "onnxruntime")
    assert artifact.manifest["attention"]["sliding"] == "banded"
    gathers = sum(n.op_type == "Gather" for n in onnx.load(str(artifact.model_path)).graph.node)
    assert gathers >= 2 * 5  # each of the 5 sliding layers gathers its blocks' keys and values
    batch = tiny_model.tokenizer.encode(TEXTS, prompt="document", max_length=max_len)
    lengths = batch.attention_mask.sum(1)
    padded = runtime.embed(batch.input_ids, batch.attention_mask)
    alone = np.concatenate([runtime.embed(batch.input_ids[i:i + 1, :n], batch.attention_mask[i:i + 1, :n])
                            for i, n in enumerate(lengths)])
    ref = _reference_at(tiny_reference, "document", max_len)
    assert np.isfinite(padded).all()
    assert cosine_rows(padded, ref).min() >= 0.99999
    assert cosine_rows(alone, ref).min() >= 0.99999


def test_tflite_buckets_below_and_above_the_band(tiny_bundle, tiny_model, tiny_reference):
    """20 tokens: one dense block; 46: banded, padded inside the graph to 12 blocks of 4."""
    buckets = (BLOCK + 2 * HALO, 46)
    artifact, runtime = _runtime(tiny_bundle("tflite", 32, buckets), "litert")
    assert [s["sliding"] for s in artifact.manifest["signatures"]] == ["dense", "banded"]
    for bucket in buckets:
        batch = tiny_model.tokenizer.encode(TEXTS, prompt="query", max_length=bucket)
        rows = []
        for i, n in enumerate(batch.attention_mask.sum(1)):  # every row through this bucket: padding >> window
            ids, mask = np.zeros((1, bucket), np.int32), np.zeros((1, bucket), np.int32)
            ids[0, :n], mask[0, :n] = batch.input_ids[i, :n], 1
            rows.append(runtime._run_one(f"seq{bucket}", ids, mask))
        ours = np.concatenate(rows)
        assert np.isfinite(ours).all()
        assert cosine_rows(ours, _reference_at(tiny_reference, "query", bucket)).min() >= 0.99999, bucket
