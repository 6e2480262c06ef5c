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

from embg.quantize.int4_blocks import int8_row_steps, mse_scales, round_to_grid, storable_scales, widened_to_int8

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


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, block: int, bits: int = 4,
                  widened: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(integers int8 [rows, cols], storable scales float32 [rows, cols/block]) for ``weight``, on the symmetric
    ``bits``-bit grid (4: -8..7; 6: -32..31, recipes' ``bits 6``; other widths for bench probes).

    ``widened``: the grid will run widened to int8 per output row (ONNX's 6-bit weights,
    onnx_backend.block_weight_as_int8), which adds its own rounding (docs/measurements.md). Then a
    first sweep chooses the block scales (raised to at least the int8 step), and a second sweep with those
    scales fixed rounds each weight to its 6-bit integer and measures the error on the int8 value it will
    become (int4_blocks.widened_to_int8), so the error GPTQ spreads includes the widening."""
    if COLUMNS_PER_STEP % block:
        raise ValueError(f"block size {block} must divide {COLUMNS_PER_STEP}")
    if weight.shape[1] % block:
        raise ValueError(f"{weight.shape[1]} input columns are not a multiple of the block size {block}")
    hinv = _inverse_cholesky(hessian)
    q, scales = _sweep(weight, hinv, block, bits)
    if widened:
        # A block whose scale is under the row's int8 step can only take multiples of that step, and fewer of
        # them than at the step itself: raise it to the step (storable, and never above the row's largest
        # scale, so the step stays). Small blocks then keep their range instead of clipping what GPTQ adds.
        scales = torch.maximum(scales, storable_scales(int8_row_steps(scales, bits))[:, None])
        q, scales = _sweep(weight, hinv, block, bits, scales)
    return q.to(torch.int8), scales


def _sweep(weight: torch.Tensor, hinv: torch.Tensor, block: int, bits: int, fixed_scales: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """One GPTQ pass: block scales chosen as each block comes up, or ``fixed_scales`` (then the error is
    measured on the int8 widening of the grid, see gptq_quantize)."""
    w = weight.detach().to(torch.float32).clone()
    rows, cols = w.shape
    q = torch.zeros(rows, cols, dtype=torch.float32)
    scales = torch.zeros(rows, cols // block, dtype=torch.float32) if fixed_scales is None else fixed_scales
    steps = int8_row_steps(scales, bits) if fixed_scales is not None else None
    for start in range(0, cols, COLUMNS_PER_STEP):
        end = min(start + COLUMNS_PER_STEP, cols)
        w_step = w[:, start:end].clone()
        errors = torch.zeros_like(w_step)
        h_step = hinv[start:end, start:end]
        for i in range(end - start):
            column = start + i
            if column % block == 0 and fixed_scales is None:  # the block's scale, from the weights as updated so far
                scales[:, column // block] = mse_scales(w_step[:, None, i:i + block], bits=bits)[:, 0]
            scale = scales[:, column // block]
            q[:, column] = round_to_grid(w_step[:, i], scale, bits)
            value = q[:, column] * scale if steps is None else widened_to_int8(q[:, column], scale, steps)
            error = (w_step[:, i] - value) / h_step[i, i]
            w_step[:, i:] -= error[:, None] * h_step[i, i:][None, :]
            errors[:, i] = error
        w[:, end:] -= errors @ hinv[start:end, end:]
    return q, scales
