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


def random_signs(dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(dim, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0)
