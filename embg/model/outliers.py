"""Outlier fixtures: seeded weights whose activations have the structure of the real model.

Real trained Gemma 3 weights grow a few residual channels to ~1.25e5 by the last layers (past
fp16's 65504 from about the 8th layer), carried by tokens such as BOS, while every other token
stays at ordinary magnitudes; random weights stay below ~35 and so hide every precision trap
(fp16 overflow, per-tensor int8 activations). This module rewrites a random fixture so that its
activations look like that, and the model stays a working embedder.

How (the "massive activation" circuit, built from Gemma's own pieces, nothing added):

* ``k`` outlier channels C of the residual stream (2 in tiny, 3 in full, chosen by seed).
* Carrier token: BOS's embedding row gets +A on C (A = 20 after the sqrt(hidden) scale); every
  other row gets a fixed -B on C (B = 3), so ordinary tokens carry a moderate, *negative*
  systematic value there (the channel-wise outlier features of LLM.int8/SmoothQuant).
* ``input_layernorm`` and ``pre_feedforward_layernorm`` have (1+w) = 4 on C: every token's
  normed input has a large column on C (BOS ~40, others ~-10 early on).
* Per layer, dedicated MLP units (one per channel in each 32-wide block of the intermediate
  axis, so block-quantized rows never hold an all-zero block): gate and up read channel c (gains 16 and
  1/16), down_proj writes them only into channel c. GELU's gate opens for BOS (positive c) and
  stays shut (< 1e-9) for ordinary tokens (negative c), so the circuit is token-dependent: BOS's
  down_proj input reaches ~1.5e3 while ordinary tokens' stay ~1.
* ``post_feedforward_layernorm`` has a large (1+w) = G_l on C: for BOS the MLP output is almost
  all on C, so its normed value there is ~sqrt(hidden/k) and the layer adds G_l * sqrt(hidden/k)
  to BOS's residual on C. G_l follows a growth profile T(l) = peak * (l/L)^p (tiny: peak 9e4,
  p 1.2, past 65504 at layer 5 of 6; full: peak 1.25e5, p 0.55, past 65504 at its 8th layer, as
  the real model is).
* Nothing else writes into C: down_proj's row c outside the dedicated units is ~1e-6 of a normal
  weight (the post-FFN gain amplifies whatever lands there); o_proj's row c is 3% of normal (the
  post-attention norm has an ordinary gain on C). Never exactly zero: quantizers divide by maxima.
* BOS is an attention sink, as in trained models: v_proj's columns C are scaled by 0.02, so
  attending to BOS adds little (without it every text shares BOS's value vector: mean pairwise
  cosine 0.9 instead of 0.4).
* The final norm has (1+w) = 0.01 on C, so the pooled embedding is made of ordinary channels
  (as in the real model, the outliers are an internal mechanism, not the meaning).

The result is checked by tests/test_outliers.py (activation profile via forward hooks).
"""

from __future__ import annotations

import math
from typing import Any

import torch

BOS_ID = 2
BLOCK = 32  # quantization block along the intermediate axis
CARRIER_START = 20.0  # BOS's value on C right after the embedding scale
ORDINARY_VALUE = -3.0  # every other token's value on C after the embedding scale
NORM_GAIN = 4.0  # (1+w) of input_layernorm / pre_feedforward_layernorm on C
GATE_GAIN, UP_GAIN, DOWN_GAIN = 16.0, 1.0 / 16.0, 0.25  # a steep gate: shut tight for negative inputs
QUIET = 1e-6  # relative scale of down_proj weights that must not write into C (amplified by the post-FFN gain)
LOW = 0.03  # relative scale of o_proj's row c and the dedicated units' other inputs (not amplified)
FINAL_GAIN = 0.01  # (1+w) of the final norm on C
SINK_VALUE = 0.02  # v_proj's columns C are scaled by this: BOS is an attention sink with a small value


def growth_profile(layers: int, peak: float, power: float) -> list[float]:
    """Target max |residual| on C after each layer: T(l) = peak * (l / L) ** power."""
    return [peak * ((i + 1) / layers) ** power for i in range(layers)]


def shape_outliers(tensors: dict[str, torch.Tensor], config: dict[str, Any], seed: int,
                   channels: int, peak: float, power: float) -> dict[str, Any]:
    """Rewrite ``tensors`` (random fixture weights, in place) into the outlier circuit; returns notes."""
    hidden = int(config["hidden_size"])
    inner = int(config["intermediate_size"])
    layers = int(config["num_hidden_layers"])
    gen = torch.Generator().manual_seed(seed * 7919 + 17)
    chosen = torch.randperm(hidden, generator=gen)[:channels].sort().values.tolist()
    scale = hidden ** 0.5  # the graph multiplies embeddings by sqrt(hidden)

    emb = tensors["embed_tokens.weight"]
    emb[:, chosen] = ORDINARY_VALUE / scale
    emb[BOS_ID, chosen] = CARRIER_START / scale
    # Normed value of BOS on C once C dominates its residual: x_c / rms(x) = sqrt(hidden / k).
    carried = math.sqrt(hidden / channels)
    targets = growth_profile(layers, peak, power)
    gains = []
    previous = CARRIER_START
    for i in range(layers):
        p = f"layers.{i}."
        for norm in ("input_layernorm", "pre_feedforward_layernorm"):
            tensors[p + f"{norm}.weight"][chosen] = NORM_GAIN - 1.0
        # one dedicated unit per channel in every 32-wide block of the intermediate axis, so each
        # block of down_proj's row c has a real weight (block-quantized scales are stored in fp16:
        # an all-quiet block would get scale 0, which XNNPACK refuses)
        blocks = inner // BLOCK
        offsets = torch.stack([torch.randperm(BLOCK, generator=gen)[:channels] for _ in range(blocks)])
        units = (offsets + torch.arange(blocks)[:, None] * BLOCK).T  # [channels, blocks]
        gate, up, down = (tensors[p + f"mlp.{n}_proj.weight"] for n in ("gate", "up", "down"))
        o_proj = tensors[p + "self_attn.o_proj.weight"]
        tensors[p + "self_attn.v_proj.weight"][:, chosen] *= SINK_VALUE
        # o_proj's row c: small (the post-attention norm has an ordinary gain on C, so this writes ~nothing)
        o_proj[chosen, :] = torch.randn((channels, o_proj.shape[1]), generator=gen) * LOW / o_proj.shape[1] ** 0.5
        down[chosen, :] = torch.randn((channels, inner), generator=gen) * QUIET / inner ** 0.5
        for c, unit_row in zip(chosen, units.tolist()):
            gate[unit_row, :] = torch.randn((len(unit_row), hidden), generator=gen) * LOW / hidden ** 0.5
            up[unit_row, :] = torch.randn((len(unit_row), hidden), generator=gen) * LOW / hidden ** 0.5
            gate[unit_row, c] = GATE_GAIN
            up[unit_row, c] = UP_GAIN
            down[:, unit_row] = torch.randn((hidden, len(unit_row)), generator=gen) * QUIET
            down[c, unit_row] = DOWN_GAIN
        gain = max(targets[i] - previous, 1.0) / carried  # (1 + w) on C of post_feedforward_layernorm
        tensors[p + "post_feedforward_layernorm.weight"][chosen] = gain - 1.0
        gains.append(round(gain, 2))
        previous = targets[i]
    tensors["norm.weight"][chosen] = FINAL_GAIN - 1.0
    return {"outlier_channels": chosen, "carrier_token": BOS_ID, "target_profile": [round(t) for t in targets],
            "post_feedforward_gains": gains}


def residual_profile(graph: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[float]:
    """max |residual| after each decoder layer of the export graph, via forward hooks (one forward pass)."""
    maxima: list[float] = []
    hooks = [layer.register_forward_hook(lambda _m, _i, out: maxima.append(float(out.detach().abs().max())))
             for layer in graph.layers]
    try:
        with torch.no_grad():
            graph(input_ids, attention_mask)
    finally:
        for hook in hooks:
            hook.remove()
    return maxima
