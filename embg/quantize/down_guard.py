"""Which layers' down_proj input to rotate: measured per layer on the calibration texts.

Rotating down_proj's input (rotation.py, ``down``) spreads every token's outliers over all 1152
channels, so per-row int8 rounding of that input costs little. But it also spreads the rounding
noise over all channels. Where down_proj writes into a residual channel with a huge
post-feed-forward norm gain, and only a few (normally silent) units feed it, the unrotated input
rounds those units almost exactly, while rotated noise reaches them and the gain multiplies it
(the outlier fixture: gain ~9e4, cosine 0.63 with every layer rotated). So ``"down": "auto"``
rotates a layer only when its rounding error, as the next layers see it (after the norm, gain
included), is smaller rotated than unrotated.

Per token t of layer l, with m = down_proj's output and g the post-feed-forward norm's gain, the
error the residual stream receives is about g * (m_q - m) / rms(m). Both ways use the recipe's
down_proj weight rounding and symmetric int8 rows for the input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from embg.quantize.calibration_texts import Batch
from embg.quantize.hadamard import block_hadamard, hadamard, kron_sizes, random_signs
from embg.quantize.simulate import int8_rows
from embg.quantize.torch_threads import single_thread

#: a layer is rotated when its rotated error is at most this share of the unrotated one
ROTATE_WHEN_RATIO_AT_MOST = 1.0
GUARD_SEED = 1152


@dataclass(frozen=True)
class DownChoice:
    layers: tuple[int, ...]  # the layers whose down_proj input is rotated
    error_ratio: tuple[float, ...]  # per layer: rotated error / unrotated error

    def to_dict(self) -> dict[str, object]:
        return {"rule": f"rotated where its int8 rounding error after the post-feed-forward norm is "
                        f"<= {ROTATE_WHEN_RATIO_AT_MOST:g}x the unrotated one (calibration texts)",
                "error_ratio": [round(r, 4) for r in self.error_ratio]}


class _LayerErrors:
    """Accumulates one layer's squared errors, rotated and unrotated, from down_proj's inputs."""

    def __init__(self, weight: torch.Tensor, gain: torch.Tensor, signs: torch.Tensor, block: int,
                 quantize_weight: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.weight = weight.float()
        self.gain = gain.float()
        self.signs = signs.float()
        self.factors = tuple(hadamard(n).float() for n in kron_sizes(block))  # as the exported graph runs it
        self.unrotated_weight = quantize_weight(self.weight)
        self.rotated_weight = quantize_weight(self.rotate(self.weight))
        self.unrotated = self.rotated = 0.0

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """x D H on the last axis (H block-diagonal)."""
        return block_hadamard(x * self.signs, *self.factors)

    def add(self, h: torch.Tensor) -> None:
        h = h.float()
        exact = h @ self.weight.T
        scale = self.gain / exact.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-30)  # what the norm applies
        unrotated = int8_rows(h) @ self.unrotated_weight.T
        rotated = int8_rows(self.rotate(h)) @ self.rotated_weight.T
        self.unrotated += float(((unrotated - exact) * scale).double().pow(2).sum())
        self.rotated += float(((rotated - exact) * scale).double().pow(2).sum())

    @property
    def ratio(self) -> float:
        return self.rotated / self.unrotated if self.unrotated > 0 else (1.0 if self.rotated == 0 else float("inf"))


def choose_down_layers(graph: torch.nn.Module, batches: Sequence[Batch], block: int,
                       quantize_weight: Callable[[torch.Tensor], torch.Tensor]) -> DownChoice:
    """Run ``graph`` (float, before any down rotation) on ``batches`` and choose the layers whose
    down_proj input is better rotated (block-``block`` Hadamard with random signs), padding excluded.
    ``quantize_weight`` rounds a down_proj weight as the recipe will."""
    generator = torch.Generator().manual_seed(GUARD_SEED)
    errors: list[_LayerErrors] = []
    hooks = []
    real_tokens: list[torch.Tensor] = []  # one item: the current batch's mask [B, S]
    for layer in graph.layers:
        weight = layer.mlp.down_proj.weight.detach()
        intermediate = weight.shape[1]
        gain = layer.post_feedforward_layernorm.gain().detach()
        errors.append(_LayerErrors(weight, gain, random_signs(intermediate, generator), block,
                                   quantize_weight))

        def hook(_module, inputs, _output, accumulate=errors[-1]) -> None:
            h = inputs[0]
            mask = torch.zeros(h.shape[:2], dtype=torch.bool)  # the graph may pad to whole attention blocks
            mask[:, :real_tokens[-1].shape[1]] = real_tokens[-1]
            accumulate.add(h[mask])
        hooks.append(layer.mlp.down_proj.register_forward_hook(hook))
    try:
        with torch.no_grad(), single_thread():
            for ids, mask in batches:
                real_tokens[:] = [mask.bool()]
                graph(ids, mask)
    finally:
        for handle in hooks:
            handle.remove()
    ratios = tuple(e.ratio for e in errors)
    return DownChoice(tuple(i for i, r in enumerate(ratios) if r <= ROTATE_WHEN_RATIO_AT_MOST), ratios)
