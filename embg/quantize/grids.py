"""llama.cpp Q4_0 / Q8_0 grids: blocks of 32 along the input axis, symmetric, one scale per block.

QAT checkpoints (embeddinggemma-300m-qat-q4_0/-q8_0-unquantized) are trained so their float
weights sit on (or very near) these grids. Recovering the exact integers and scales lets the
exporter carry the QAT weights losslessly instead of re-deriving min-max scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BLOCK = 32
# A block is on the grid when every weight is within this fraction of its scale from q * scale.
ON_GRID_TOLERANCE = 1e-3


@dataclass(frozen=True)
class GridFit:
    q: torch.Tensor  # int8 [rows, blocks, 32]
    scale: torch.Tensor  # float32 [rows, blocks]
    blocks: int
    off_grid: int
    max_error: float  # in units of the block's scale


@dataclass(frozen=True)
class Grid:
    name: str
    bits: int
    qmin: int
    qmax: int

    def _blocks(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.shape[-1] % BLOCK:
            raise ValueError(f"last axis {weight.shape[-1]} is not a multiple of {BLOCK}")
        return weight.reshape(*weight.shape[:-1], weight.shape[-1] // BLOCK, BLOCK).to(torch.float32)

    def scales(self, weight: torch.Tensor) -> torch.Tensor:
        """llama.cpp's scale per block, stored as fp16 as in its block structs.

        Q4_0 keeps the sign of the largest-magnitude value (d = m / -8), so its scales can be negative.
        """
        blocks = self._blocks(weight)
        if self.name == "q4_0":
            index = blocks.abs().argmax(dim=-1, keepdim=True)
            scale = (blocks.gather(-1, index) / -8.0).squeeze(-1)
        else:
            scale = blocks.abs().amax(dim=-1) / 127.0
        return scale.to(torch.float16).to(torch.float32)

    def quantize(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(integers int8 [..., n_blocks, 32], scales float32 [..., n_blocks]) as llama.cpp computes them."""
        blocks = self._blocks(weight)
        scale = self.scales(weight)
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)
        q = torch.clamp(torch.round(blocks / safe[..., None]), self.qmin, self.qmax)
        q = torch.where(scale[..., None] == 0, torch.zeros_like(q), q)
        return q.to(torch.int8), scale

    def dequantize(self, q: torch.Tensor, scale: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return (q.to(torch.float32) * scale[..., None]).reshape(shape)

    def snap(self, weight: torch.Tensor) -> torch.Tensor:
        q, scale = self.quantize(weight)
        return self.dequantize(q, scale, weight.shape)

    def fit(self, weight: torch.Tensor) -> "GridFit":
        """How well ``weight`` sits on this grid, block by block (error relative to each block's scale)."""
        q, scale = self.quantize(weight)
        error = (self.dequantize(q, scale, weight.shape) - weight.to(torch.float32)).abs()
        error = self._blocks(error).amax(dim=-1) / scale.abs().clamp(min=1e-30)
        off = int((error > ON_GRID_TOLERANCE).sum())
        return GridFit(q, scale, int(error.numel()), off, float(error.max()) if error.numel() else 0.0)


GRIDS = {"q4_0": Grid("q4_0", 4, -8, 7), "q8_0": Grid("q8_0", 8, -127, 127)}
