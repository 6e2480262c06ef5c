"""Low-rank corrections of int4 weight error, weighted by real activations (LQER / ZeroQuant-V2's LoRC).

For a linear weight W [out, in] and its quantized Q, the error E = W - Q costs tr(E H E^T) on inputs
with second moment H = E[x x^T]. With H = S S (S symmetric), the rank-r C minimising ||(E - C) S|| is
SVD_r(E S) S^-1: the correction a runtime would add as two thin float products (x B^T) A^T beside the
int4 product. ``bench.weight_agreement --low-rank R`` measures what it buys on a real checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from embg.quantize.gptq import HessianAccumulator

DAMPING = 1e-4  # of the mean diagonal: inputs the calibration texts never use would make S singular


def input_moments(graph: torch.nn.Module, names: list[str], batches: list) -> dict[str, torch.Tensor]:
    """weight name -> E[x x^T] (float64) of that linear layer's input over the real tokens of ``batches``,
    in the float graph."""
    modules = dict(graph.named_modules())
    accumulators = {name: HessianAccumulator(modules[name.removesuffix(".weight")].weight.shape[1]) for name in names}
    mask_now: list[torch.Tensor] = []

    def record(name: str):
        def hook(_module, args) -> None:
            x, mask = args[0], mask_now[0]
            if x.dim() == 3 and x.shape[1] != mask.shape[1]:  # the graph pads to whole attention blocks
                mask = F.pad(mask, (0, x.shape[1] - mask.shape[1]))
            accumulators[name].add(x, mask if x.dim() == 3 else None)
        return hook

    handles = [modules[name.removesuffix(".weight")].register_forward_pre_hook(record(name)) for name in names]
    try:
        with torch.no_grad():
            for ids, mask in batches:
                mask_now[:] = [mask]
                graph(ids, mask)
    finally:
        for handle in handles:
            handle.remove()
    return {name: acc.hessian / max(1, acc.rows) for name, acc in accumulators.items()}


class LowRankCorrection:
    """The activation-weighted SVD of one weight's quantization error, cut to any rank."""

    def __init__(self, weight: torch.Tensor, quantized: torch.Tensor, moment: torch.Tensor) -> None:
        moment = moment + DAMPING * moment.diagonal().mean() * torch.eye(moment.shape[0], dtype=moment.dtype)
        values, vectors = torch.linalg.eigh(moment)
        root = (vectors * values.sqrt()) @ vectors.T
        inverse_root = (vectors * values.rsqrt()) @ vectors.T
        self.quantized = quantized.to(torch.float64)
        u, s, vt = torch.linalg.svd((weight.to(torch.float64) - self.quantized) @ root, full_matrices=False)
        self.left, self.values, self.right = u, s, vt @ inverse_root

    def captured(self, rank: int) -> float:
        """Share of the weighted error energy a rank-``rank`` correction removes."""
        energy = self.values ** 2
        return float(energy[:rank].sum() / energy.sum())

    def weight(self, rank: int) -> torch.Tensor:
        """Q + C_rank as float32."""
        correction = (self.left[:, :rank] * self.values[:rank]) @ self.right[:rank]
        return (self.quantized + correction).to(torch.float32)
