"""The fixed pieces of every rotation: the Sylvester Hadamard matrix and seeded random signs
(used by rotation.py to rotate, and by down_guard.py to measure a rotation before choosing it)."""

from __future__ import annotations

import math

import torch


def hadamard(n: int) -> torch.Tensor:
    """The normalised Sylvester Hadamard matrix of size ``n`` (a power of two), float64."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"a Hadamard block needs a power-of-two size, got {n}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(n)


def kron_sizes(n: int) -> tuple[int, int]:
    """(a, c) with a * c = n, both powers of two, a <= c as near as can be: H_n = H_a (x) H_c (Sylvester)."""
    a = 1 << ((n.bit_length() - 1) // 2)
    return a, n // a


def block_hadamard(x: torch.Tensor, outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """x [..., d] times the block-diagonal H_b (b = a * c) on the last axis, as two small products.

    With H_b = H_a (x) H_c, a block read as X [a, c] maps to H_a X H_c: X @ H_c, then H_a on the other
    axis (a transpose each way). a + c multiply-adds per element instead of b: 24 against 128 for
    b = 128; on the real checkpoint it took 20-23 ms off a 256-token pass of every rotated file, on both
    runtimes (docs/measurements.md)."""
    shape, a, c = x.shape, outer.shape[0], inner.shape[0]
    # 2-D products and 3-D transposes: LiteRT's converter refuses batch_matmul of higher rank
    z = (x.reshape(-1, c) @ inner).reshape(-1, a, c).transpose(1, 2).reshape(-1, a) @ outer
    return z.reshape(-1, c, a).transpose(1, 2).reshape(shape)


def random_signs(dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(dim, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0)
