"""GPTQ (Frantar et al., 2022) onto the positive-scale int4 block grid of embg/quantize/int4_blocks.py.

Rounding each weight to its nearest grid point ignores which inputs the layer actually sees.
GPTQ quantizes the input columns of ``W [rows, cols]`` one at a time and spreads each column's
rounding error over the columns not yet quantized, weighted by the inverse Hessian ``H = X^T X``
of the layer's real inputs ``X``: errors move to where the inputs make them cheap. A block's
scale is chosen when its first column comes up, from the already-updated weights (per-block MSE
clip search), then stays fixed, so the result is exactly integers x storable scales.
"""

from __future__ import annotations

import torch

from embg.quantize.int4_blocks import mse_scales, round_to_grid

DAMPING = 0.01  # of the mean Hessian diagonal, added to the diagonal (GPTQ's default)
COLUMNS_PER_STEP = 128  # lazy batch updates: propagate errors to later columns in steps of this width


class HessianAccumulator:
    """``sum x x^T`` over the real (unpadded) token rows a linear layer sees, in float64."""

    def __init__(self, columns: int) -> None:
        self.hessian = torch.zeros(columns, columns, dtype=torch.float64)
        self.rows = 0

    def add(self, inputs: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """``inputs [..., columns]``; ``keep`` (same leading shape) selects the rows that count."""
        rows = inputs.reshape(-1, inputs.shape[-1])
        if keep is not None:
            rows = rows[keep.reshape(-1) > 0]
        rows = rows.to(torch.float32)
        self.hessian += (rows.T @ rows).to(torch.float64)
        self.rows += rows.shape[0]


def _inverse_cholesky(hessian: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor of H^-1 after damping (GPTQ's numerically stable form)."""
    h = hessian.clone()
    dead = torch.diag(h) == 0  # inputs never active in calibration: nothing to weigh their errors by
    h[dead, dead] = 1.0
    h += DAMPING * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True).to(torch.float32)


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, block: int, bits: int = 4
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(integers int8 [rows, cols], storable scales float32 [rows, cols/block]) for ``weight``, on the symmetric
    ``bits``-bit grid (4: -8..7; 6: -32..31, recipes' ``bits 6``; other widths for bench probes)."""
    if COLUMNS_PER_STEP % block:
        raise ValueError(f"block size {block} must divide {COLUMNS_PER_STEP}")
    w = weight.detach().to(torch.float32).clone()
    rows, cols = w.shape
    if cols % block:
        raise ValueError(f"{cols} input columns are not a multiple of the block size {block}")
    hinv = _inverse_cholesky(hessian)
    q = torch.zeros(rows, cols, dtype=torch.float32)
    scales = torch.zeros(rows, cols // block, dtype=torch.float32)
    for start in range(0, cols, COLUMNS_PER_STEP):
        end = min(start + COLUMNS_PER_STEP, cols)
        w_step = w[:, start:end].clone()
        errors = torch.zeros_like(w_step)
        h_step = hinv[start:end, start:end]
        for i in range(end - start):
            column = start + i
            if column % block == 0:  # the block's scale, from the weights as updated so far
                scales[:, column // block] = mse_scales(w_step[:, None, i:i + block], bits=bits)[:, 0]
            scale = scales[:, column // block]
            q[:, column] = round_to_grid(w_step[:, i], scale, bits)
            error = (w_step[:, i] - q[:, column] * scale) / h_step[i, i]
            w_step[:, i:] -= error[:, None] * h_step[i, i:][None, :]
            errors[:, i] = error
        w[:, end:] -= errors @ hinv[start:end, end:]
    return q.to(torch.int8), scales
