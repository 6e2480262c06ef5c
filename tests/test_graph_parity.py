"""The export graph equals sentence-transformers on the same checkpoint directory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embg.model.graph import FULL, SLIDING
from embg.parity.path import cosine_rows
from embg.textdata.builtin import parity_texts

TEXTS = parity_texts()


def graph_embed(model, texts, prompt, dim=None):
    batch = model.tokenizer.encode(texts, prompt=prompt)
    with torch.no_grad():
        out = model.graph(dim)(torch.as_tensor(batch.input_ids), torch.as_tensor(batch.attention_mask))
    return out.numpy(), batch


@pytest.mark.parametrize("prompt", [None, "query", "document"])
def test_graph_matches_sentence_transformers(tiny_model, tiny_reference, prompt):
    ours, batch = graph_embed(tiny_model, TEXTS, prompt)
    # The batch is padded to its longest text, so short texts carry padding far wider than the window.
    window = tiny_model.graph().window
    lengths = batch.attention_mask.sum(1)
    assert lengths.max() - lengths.min() > 2 * window and lengths.max() > 4 * window
    ref = tiny_reference.encode(TEXTS, prompt_name=prompt, batch_size=len(TEXTS))
    cos = cosine_rows(ours, ref)
    assert cos.min() >= 0.999999, cos
    assert np.abs(ours - ref).max() <= 1e-5


@pytest.mark.parametrize("dim", [128, 64, 32])
def test_matryoshka_dims_match(tiny_model, tiny_reference, dim):
    assert dim in tiny_model.spec.matryoshka_dims
    ours, _ = graph_embed(tiny_model, TEXTS, "query", dim)
    ref = tiny_reference.encode(TEXTS, prompt_name="query", dim=dim, batch_size=len(TEXTS))
    assert ours.shape == (len(TEXTS), dim)
    assert cosine_rows(ours, ref).min() >= 0.999999
    assert np.abs(ours - ref).max() <= 1e-5


def test_single_text_batches_equal_padded_batch(tiny_model):
    padded, _ = graph_embed(tiny_model, TEXTS, "document")
    alone = np.concatenate([graph_embed(tiny_model, [t], "document")[0] for t in TEXTS])
    assert np.abs(padded - alone).max() <= 1e-5
    assert np.isfinite(padded).all()


def test_causal_mask_would_be_caught(tiny_model, tiny_reference):
    """The parity check must be able to fail: a causal mask gives visibly different embeddings."""
    graph = tiny_model.graph()
    original = graph._masks
    floor = torch.finfo(torch.float32).min

    def causal(attention_mask, positions, layout, dtype=torch.float32):
        masks = original(attention_mask, positions, layout, dtype)
        future = positions[None, :] > positions[:, None]
        band = masks[SLIDING]  # banded on these lengths: each block's keys are band.index
        key_pos = band.index.reshape(layout.blocks, layout.keys).to(torch.float32)
        band_future = key_pos[:, None, :] > positions.reshape(layout.blocks, layout.block)[:, :, None]
        return {FULL: masks[FULL].masked_fill(future[None, None], floor),
                SLIDING: band._replace(mask=band.mask.masked_fill(band_future[None, :, None], floor))}

    graph._masks = causal
    batch = tiny_model.tokenizer.encode(TEXTS, prompt="query")
    with torch.no_grad():
        ours = graph(torch.as_tensor(batch.input_ids), torch.as_tensor(batch.attention_mask)).numpy()
    ref = tiny_reference.encode(TEXTS, prompt_name="query", batch_size=len(TEXTS))
    assert cosine_rows(ours, ref).min() < 0.99
