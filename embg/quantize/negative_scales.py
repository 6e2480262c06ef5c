"""Q4_0 blocks with a negative scale, carried exactly on LiteRT.

Q4_0 gives every block d = m / -8 (m its largest-magnitude weight), so about half of all blocks
have d < 0, and XNNPACK (LiteRT's CPU engine) refuses negative int4 block scales. Storing such a
block as |d| with -q would need -(-8) = 8, which int4 lacks. Instead the block is stored as
q' = -q - 1 (always in -8..7) with scale |d|, which is exact up to a per-block constant:

    d * q = |d| * q' + |d|        so   w . x = |d| * (q' . x) + |d| * sum(x over the block)

The second term is one small float product per layer: the input's block sums [tokens, K/32]
times a [out, K/32] matrix holding |d| where d < 0 and 0 elsewhere. The export graph for LiteRT
gets it as :class:`BlockSumCorrectedLinear`; the embedding table needs none (LiteRT's
EMBEDDING_LOOKUP is not run by XNNPACK and takes negative block scales as they are).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embg.quantize.groups import CORRECTION  # the buffer's name: no recipe group ever quantizes it

BLOCK = 32


def fold_block(q: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q' int8 [rows, cols], scales > 0 [rows, blocks], correction [rows, blocks]) for a grid (q, d).

    q' * scale + correction (per block) equals q * d exactly. All-zero blocks (d = 0, which XNNPACK
    also refuses) get scale 1 with q' = 0.
    """
    rows, cols = q.shape
    blocks = q.reshape(rows, cols // BLOCK, BLOCK).astype(np.int16)
    negative = scales < 0
    zero = scales == 0
    folded = np.where(negative[..., None], -blocks - 1, np.where(zero[..., None], 0, blocks))
    positive = np.where(zero, 1.0, np.abs(scales)).astype(np.float32)
    correction = np.where(negative, -scales, 0.0).astype(np.float32)
    return folded.astype(np.int8).reshape(rows, cols), positive, correction


def block_sums(x: torch.Tensor) -> torch.Tensor:
    """Sum of each block of 32 along the last axis: [..., K] -> [..., K/32]."""
    return x.reshape(*x.shape[:-1], x.shape[-1] // BLOCK, BLOCK).sum(dim=-1)


class BlockSumCorrectedLinear(nn.Module):
    """x @ W_pos.T + block_sums(x) @ C.T: the Q4_0 layer with every block scale made positive.

    ``weight`` is the positive-scale form (what the quantizer finds by value and the grid patch
    overwrites with q' and |d|); the correction stays float (its entries are fp16 scales, exact).
    """

    def __init__(self, weight: torch.Tensor, correction: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.register_buffer(CORRECTION, correction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight) + F.linear(block_sums(x), getattr(self, CORRECTION))


def fold_negative_scales(graph: nn.Module, grids: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Replace, in place, every linear layer whose grid has a negative block scale by its corrected form.

    Returns the names of the folded weights and what the corrections add (float32 bytes).
    """
    folded, extra = [], 0
    for name, (q, scales) in grids.items():
        module_path, _, leaf = name.rpartition(".")
        module = graph.get_submodule(module_path)
        if leaf != "weight" or not isinstance(module, nn.Linear) or not (scales < 0).any():
            continue
        q_pos, positive, correction = fold_block(q, scales)
        rows, cols = q_pos.shape
        weight = (q_pos.reshape(rows, -1, BLOCK).astype(np.float32) * positive[..., None]).reshape(rows, cols)
        parent_path, _, child = module_path.rpartition(".")
        parent = graph.get_submodule(parent_path) if parent_path else graph
        setattr(parent, child, BlockSumCorrectedLinear(torch.from_numpy(weight), torch.from_numpy(correction)))
        folded.append(name)
        extra += correction.nbytes
    return {"weights": folded, "correction_bytes": extra}
