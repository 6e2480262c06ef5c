"""Attention for the export graph: dense, or banded for the sliding-window layers, with finite masks.

A sliding layer's query sees only keys with ``|q-k| < window``. Computing its scores as one dense
[S, S] product and masking most of them away costs O(S^2); the banded form cuts the (padded)
sequence into query blocks and multiplies each block only with the ``keys`` consecutive positions
that hold its window: O(S * (block + 2 * halo)). It is exact: every key a query may see is in its
block's key range, and the same finite mask removes the rest, so softmax weights are identical.

Both forms keep the graph's converter-safe re-statements: query heads are folded onto the shared
KV head by a reshape of the *query* (never ``repeat_kv``), masks are finite (``finfo.min``, never
``-inf``; in an fp16 graph a floor fp16 can hold), and every index and mask is computed from
positions derived from the input. Masks follow the activation dtype, so both forms run in fp16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

MASK_MIN = torch.finfo(torch.float32).min


@dataclass(frozen=True)
class BandLayout:
    """How a sliding layer's attention is cut into blocks (ints; SymInts in a dynamic-shape export).

    The sequence, padded to ``blocks * block``, is cut into ``blocks`` query blocks of ``block``
    positions; each block attends to ``keys`` consecutive key positions that cover its window
    (``halo`` = window - 1 positions on either side), shifted inwards at the sequence ends so
    every key is a real position and none repeats.
    """

    blocks: int
    block: int
    keys: int

    @property
    def padded(self) -> int:
        return self.blocks * self.block

    @property
    def saves_work(self) -> bool:
        """Fewer scores than one dense [S, S] product (short sequences: keys == padded)."""
        return self.keys < self.padded


def band_block_for(halo: int) -> int:
    """Query block of the banded sliding layers: half the halo (128 on the real model, 4 on tiny).

    Smaller blocks waste fewer scores (each block computes block + 2 * halo keys) but make more,
    smaller products; at 1024-2048 tokens 128 was fastest on ONNX Runtime and tied on LiteRT.
    """
    return max(1, halo // 2)


def band_layout(seq: int, block: int, halo: int) -> BandLayout:
    """Blocks of at most ``block`` queries, as even as possible (padding < ``blocks`` positions).

    While one block and its two halos would span the whole sequence anyway (``seq <= block +
    2 * halo``) there is one block: the dense product, without the cost of cutting it up. Written
    with integer arithmetic only (no branch), so a symbolic ``seq`` gives one graph for every length.
    """
    many = torch.sym_min(seq // (block + 2 * halo + 1), 1)  # 0 or 1
    blocks = 1 + many * ((seq + block - 1) // block - 1)
    size = (seq + blocks - 1) // blocks
    return BandLayout(blocks, size, torch.sym_min(size + 2 * halo, blocks * size))


class Band(NamedTuple):
    """What every sliding layer of one forward shares: the layout, key positions and the mask."""

    layout: BandLayout
    index: torch.Tensor  # [blocks * keys] int64: the key positions of each query block, block-major
    mask: torch.Tensor  # [batch, blocks, 1, block, keys] finite additive mask (window and padding)


def additive(allowed: torch.Tensor, dtype: torch.dtype = torch.float32, floor: float = MASK_MIN) -> torch.Tensor:
    """0 where allowed, ``floor`` elsewhere, in ``dtype``: finite, so a fully masked row gives no NaN.

    ``floor`` defaults to float32's ``finfo.min``; an fp16 graph passes one fp16 can hold (the
    fp16-safe rewrite's ``mask_floor``), and it is never taken below ``finfo(dtype).min`` (which
    would round to ``-inf``)."""
    floor = max(float(floor), float(torch.finfo(dtype).min))
    return torch.where(allowed, torch.zeros((), dtype=dtype), torch.full((), floor, dtype=dtype))


def window_mask(attention_mask: torch.Tensor, positions: torch.Tensor, window: int,
                dtype: torch.dtype = torch.float32, floor: float = MASK_MIN) -> torch.Tensor:
    """[B, 1, S, S]: keys that are not padding and within ``|q-k| < window`` of the query."""
    in_window = (positions[:, None] - positions[None, :]).abs() < window
    return additive((attention_mask[:, None, None, :] > 0) & in_window[None, None], dtype, floor)


def sliding_band(attention_mask: torch.Tensor, positions: torch.Tensor, layout: BandLayout, window: int,
                 halo: int, dtype: torch.dtype = torch.float32, floor: float = MASK_MIN) -> Band:
    """The band of every sliding layer: key positions per query block and the window/padding mask.

    ``attention_mask`` and ``positions`` cover the padded sequence (``layout.padded`` positions).
    Everything is computed from ``positions`` (from the input), so no converter folds it into
    per-bucket constants. Positions stay float32 (exact up to 2^24); only the mask is in ``dtype``.
    """
    blocks, block, keys = layout.blocks, layout.block, layout.keys
    query_pos = positions.reshape(blocks, block)
    offsets = positions[:keys]
    last_start = positions[-1] - offsets[-1]  # padded - keys: the last key window that stays inside
    starts = torch.minimum((query_pos[:, 0] - halo).clamp(min=0.0), last_start)
    key_pos = starts[:, None] + offsets[None, :]  # [blocks, keys]
    in_window = (query_pos[:, :, None] - key_pos[:, None, :]).abs() < window  # [blocks, block, keys]
    index = key_pos.reshape(-1).to(torch.int64)
    keys_ok = torch.index_select(attention_mask > 0, 1, index).reshape(-1, blocks, 1, 1, keys)
    return Band(layout, index, additive(keys_ok & in_window[None, :, None], dtype, floor))


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                    scaling: float, query_blocks: int = 1) -> torch.Tensor:
    """[B, S, H, D] queries against every key; ``mask`` [B, 1, S or 1, S]. Returns [B, S, H * D].

    ``query_blocks`` > 1 (a fixed length it divides): the same products in that many query blocks, each
    against its own gathered copy of the keys and values (split_dense_attention)."""
    if query_blocks > 1 and isinstance(q.shape[1], int) and q.shape[1] % query_blocks == 0:
        return split_dense_attention(q, k, v, mask, scaling, query_blocks)
    batch, seq, heads, dim = q.shape
    kv_heads = k.shape[2]
    # Fold each KV head's query group into the sequence axis: [B, KV, G*S, D] x [B, KV, D, S].
    q = q.transpose(1, 2).reshape(batch, kv_heads, heads // kv_heads * seq, dim)
    scores = torch.matmul(q, k.permute(0, 2, 3, 1)) * scaling
    scores = scores.reshape(batch, heads, seq, seq) + mask
    probs = torch.softmax(scores, dim=-1).reshape(batch, kv_heads, heads // kv_heads * seq, seq)
    out = torch.matmul(probs, v.transpose(1, 2)).reshape(batch, heads, seq, dim)
    return out.transpose(1, 2).reshape(batch, seq, heads * dim)


def split_dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scaling: float,
                          blocks: int) -> torch.Tensor:
    """dense_attention in ``blocks`` query blocks, each with its own copy of every key and value (a gather).

    Why: with one batch of one, litert-torch turns q x k^T into a FULLY_CONNECTED whose weights are the keys,
    and XNNPACK runs such a dynamic-weight product about 5x slower than a BATCH_MATMUL (on 256 x 256 keys of
    the real model's shape: 7.9 against 1.5 ms at 512 tokens). A batch of blocks keeps it a BATCH_MATMUL; the
    copies cost [blocks, S, D] per layer. Same products and sums as the dense form."""
    batch, seq = q.shape[:2]
    index = torch.arange(seq, device=q.device).repeat(blocks)
    # a key mask [B, 1, 1, S] broadcasts over every block; a [B, 1, S, S] mask is cut into the query blocks
    rows = (mask.reshape(batch, 1, 1, 1, seq) if mask.shape[2] == 1
            else mask.reshape(batch, 1, blocks, seq // blocks, seq).transpose(1, 2))
    return _query_block_attention(q, k, v, index, blocks, seq // blocks, seq, rows, scaling)


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, band: Band, scaling: float) -> torch.Tensor:
    """Each query block against its own ``keys`` positions only. Same inputs and output as dense."""
    layout = band.layout
    return _query_block_attention(q, k, v, band.index, layout.blocks, layout.block, layout.keys, band.mask, scaling)


def _query_block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, blocks: int,
                           block: int, keys: int, mask: torch.Tensor, scaling: float) -> torch.Tensor:
    """``blocks`` query blocks of ``block`` rows (S = blocks x block), each against the ``keys`` key positions
    ``index`` gathers for it, ``mask`` added to the scores [B, blocks, heads, block, keys]. Returns [B, S, H * D]."""
    batch, seq, heads, dim = q.shape
    kv_heads = k.shape[2]
    groups = heads // kv_heads
    q = q.reshape(batch, blocks, block, heads, dim).transpose(2, 3).reshape(batch, blocks, kv_heads, groups * block, dim)
    k = torch.index_select(k, 1, index).reshape(batch, blocks, keys, kv_heads, dim)
    v = torch.index_select(v, 1, index).reshape(batch, blocks, keys, kv_heads, dim)
    scores = torch.matmul(q, k.permute(0, 1, 3, 4, 2)) * scaling  # [B, N, KV, G*block, keys]
    scores = scores.reshape(batch, blocks, heads, block, keys) + mask
    probs = torch.softmax(scores, dim=-1).reshape(batch, blocks, kv_heads, groups * block, keys)
    out = torch.matmul(probs, v.transpose(2, 3)).reshape(batch, blocks, heads, block, dim)
    return out.transpose(2, 3).reshape(batch, seq, heads * dim)
