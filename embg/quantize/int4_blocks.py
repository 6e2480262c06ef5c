"""The symmetric int4 block grid with positive scales that LiteRT and ONNX Runtime store exactly.

Weights ``w [rows, cols]`` are cut into blocks of ``block`` along the input axis (cols); each block
has one scale ``s > 0`` and integers ``q`` in -8..7 with ``w ~ q * s``. The scales chosen here are
already in the form every runtime keeps unchanged:

* positive normal numbers: XNNPACK (LiteRT CPU) refuses zero or negative block scales;
* bf16-representable: XNNPACK rounds block scales to bf16 when it packs weights;
* at least fp16's smallest normal number (2**-14): LiteRT stores block scales as fp16, ONNX's
  MatMulNBits / GatherBlockQuantized as fp32, and a bf16 value in that range is exact in both.

So integers and scales computed here come back bit-exact from either file (checked on read-back).
"""

from __future__ import annotations

import torch

QMIN, QMAX = -8, 7
SCALE_MIN = 2.0**-14  # fp16's smallest normal number
SCALE_MAX = 65280.0  # the largest bf16 value below fp16's 65504
CHUNK_ROWS = 8192  # rows per step for the 262144-row embedding table (bounds temporary memory)


def storable_scales(scales: torch.Tensor) -> torch.Tensor:
    """``scales`` rounded to bf16 and clamped to [2**-14, 65280]: values LiteRT and ONNX keep exactly."""
    rounded = scales.to(torch.float32).clamp(SCALE_MIN, SCALE_MAX).to(torch.bfloat16).to(torch.float32)
    return rounded.clamp(SCALE_MIN, SCALE_MAX)


def is_storable(scales: torch.Tensor) -> bool:
    """True when every scale is positive, normal and already bf16 (a no-op for storable_scales)."""
    scales = scales.to(torch.float32)
    return bool(((scales >= SCALE_MIN) & (scales <= SCALE_MAX)).all()
                and torch.equal(scales.to(torch.bfloat16).to(torch.float32), scales))


def blocks_of(weight: torch.Tensor, block: int) -> torch.Tensor:
    """``weight [rows, cols]`` as ``[rows, cols/block, block]`` float32."""
    rows, cols = weight.shape
    if cols % block:
        raise ValueError(f"{cols} input columns are not a multiple of the block size {block}")
    return weight.to(torch.float32).reshape(rows, cols // block, block)


def round_to_grid(values: torch.Tensor, scales: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """Integers in -8..7 (or the symmetric ``bits``-bit range) nearest to ``values / scales`` (scales
    broadcast over the last axis)."""
    low, high = _limits(bits)
    return torch.clamp(torch.round(values / scales), low, high)


def _limits(bits: int) -> tuple[int, int]:
    """The symmetric ``bits``-bit integer range (4 bits: QMIN..QMAX)."""
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def range_scales(blocks: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """The smallest scale that fits each block without clipping, using all of -8..7 (or ``bits`` bits).

    A block whose largest magnitude is negative gets |min|/8 (finer than max|w|/7), the positive
    counterpart of llama.cpp's Q4_0 choice d = m / -8.
    """
    low, high = _limits(bits)
    return storable_scales(torch.maximum(blocks.amax(-1) / high, -blocks.amin(-1) / -low))


def mse_scales(blocks: torch.Tensor, steps: int = 32, lowest: float = 0.5,
               weights: torch.Tensor | None = None, bits: int = 4) -> torch.Tensor:
    """Per block, the storable scale in [lowest, 1] x range_scales with the least (weighted) squared error.

    Clipping the few largest values of a block trades their error for a finer grid for all others.
    ``weights`` (broadcast like ``blocks``) weighs the error per element, e.g. by input importance.
    """
    base = range_scales(blocks, bits)
    best, best_error = base, None
    for factor in torch.linspace(lowest, 1.0, steps).tolist():
        scales = storable_scales(base * factor)
        error = (round_to_grid(blocks, scales[..., None], bits) * scales[..., None] - blocks) ** 2
        if weights is not None:
            error = error * weights
        error = error.sum(-1)
        if best_error is None:
            best, best_error = scales, error
        else:
            better = error < best_error
            best = torch.where(better, scales, best)
            best_error = torch.where(better, error, best_error)
    return best


def quantize_rows(weight: torch.Tensor, block: int, method: str = "mse") -> tuple[torch.Tensor, torch.Tensor]:
    """(integers int8 [rows, cols], storable scales float32 [rows, cols/block]) by ``method``
    ("range": range_scales, "mse": mse_scales), chunked over rows so huge tables fit in memory."""
    choose = {"range": range_scales, "mse": mse_scales}[method]
    qs, ss = [], []
    for start in range(0, weight.shape[0], CHUNK_ROWS):
        blocks = blocks_of(weight[start:start + CHUNK_ROWS], block)
        scales = choose(blocks)
        qs.append(round_to_grid(blocks, scales[..., None]).to(torch.int8).reshape(blocks.shape[0], -1))
        ss.append(scales)
    return torch.cat(qs), torch.cat(ss)


def steps_from_scales(bits: int) -> bool:
    """Whether a ``bits``-bit block grid is widened to int8 on a step set by its scales (int8_row_steps):
    grids of 5-7 bits. int4 keeps the step of its largest value, and int8 grids (Q8_0) too, where equal
    block scales make the widening exact."""
    return 4 < bits < 8


def int8_row_steps(scales: torch.Tensor, bits: int) -> torch.Tensor:
    """The int8 step per output row [rows] that a ``bits``-bit block grid (scales [rows, blocks]) is widened
    to on ONNX (onnx_backend.block_weight_as_int8, when steps_from_scales): the row's largest |scale| times the
    grid's largest magnitude, over 127. It depends on the scales alone, so GPTQ can round to the int8
    values the weights will become before it has chosen every integer (gptq.gptq_quantize)."""
    return scales.to(torch.float32).abs().amax(-1) * float(2 ** (bits - 1)) / 127.0


def widened_to_int8(q: torch.Tensor, scales: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """``q * scales`` (same shape, or broadcast) rounded to multiples of ``steps``: the float value of
    the int8 weight onnxruntime will multiply (onnx_backend.block_weight_as_int8 computes the same:
    dense x (1 / step), Round, times step)."""
    return torch.round(q.to(torch.float32) * scales * (1.0 / steps)) * steps


def dequantize(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``q [rows, cols] * scales [rows, cols/block]`` back to float32 weights."""
    rows, cols = q.shape
    block = cols // scales.shape[1]
    return (q.to(torch.float32).reshape(rows, -1, block) * scales[..., None]).reshape(rows, cols)
