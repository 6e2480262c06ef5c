"""SmoothQuant-style scaling: move activation outliers into the weights before quantizing.

For a linear layer fed by x, ``(x / s) @ (W * s).T == x @ W.T`` for any per-input-channel s > 0.
Picking ``s_j = max|x_j|^alpha / max|W_:,j|^(1-alpha)`` (calibrated on real texts) flattens the
activation channels that make int8 activation scales coarse and moves that range into weights,
which are quantized per output channel. The division by s is folded where it costs nothing:

* q/k/v and gate/up read an RMSNorm output ``x/rms(x) * (1+w)``: (1+w) becomes (1+w)/s (Gemma's
  norms multiply by (1+w), so the stored weight becomes (1+w)/s - 1);
* down_proj reads ``gelu(gate) * up``: up_proj's row j is divided by s_j;
* o_proj reads ``softmax(.) @ v``: v_proj's row j is divided by s_j (attention is linear in v).

The fp32 function is unchanged (tests hold it to 1e-5 of the original graph); only the recipe's
``"smoothing": {"alpha": a}`` turns it on. Head and embedding are never touched.
"""

from __future__ import annotations

from typing import Any

import torch

from embg.model.graph import EmbeddingGemmaGraph

MIN_SCALE, MAX_SCALE = 1e-3, 1e3  # keep folded weights in a sane range whatever the calibration says


def input_maxima(graph: EmbeddingGemmaGraph, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-channel max |input| of every linear layer in the decoder, over real (unpadded) tokens."""
    maxima: dict[str, torch.Tensor] = {}
    current_mask: list[torch.Tensor] = []

    def hook(name: str):
        def record(_module, inputs, _output) -> None:
            x = inputs[0].detach().abs()
            keep = current_mask[0].reshape(-1) > 0
            if x.shape[0] * x.shape[1] == keep.numel():  # [B, S, C] token rows, padding dropped
                x = x.reshape(-1, x.shape[-1])[keep]
            value = x.reshape(-1, x.shape[-1]).amax(0)
            maxima[name] = torch.maximum(maxima[name], value) if name in maxima else value
        return record

    handles = []
    for i, layer in enumerate(graph.layers):
        for attr in ("q_proj", "o_proj"):
            handles.append(getattr(layer.self_attn, attr).register_forward_hook(hook(f"{i}.{attr}")))
        for attr in ("gate_proj", "down_proj"):
            handles.append(getattr(layer.mlp, attr).register_forward_hook(hook(f"{i}.{attr}")))
    try:
        with torch.no_grad():
            for ids, mask in batches:
                current_mask[:] = [mask]
                graph(ids, mask)
    finally:
        for handle in handles:
            handle.remove()
    return maxima


def _scales(act_max: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    w_max = torch.stack([w.abs().amax(0) for w in weights]).amax(0)
    s = act_max.clamp(min=1e-5) ** alpha / w_max.clamp(min=1e-5) ** (1.0 - alpha)
    return s.clamp(MIN_SCALE, MAX_SCALE)


def smooth_graph(graph: EmbeddingGemmaGraph, batches: list[tuple[torch.Tensor, torch.Tensor]],
                 alpha: float) -> dict[str, Any]:
    """Fold SmoothQuant scales into ``graph`` in place; returns a summary for the manifest."""
    maxima = input_maxima(graph, batches)
    before, after = [], []
    with torch.no_grad():
        for i, layer in enumerate(graph.layers):
            attn, mlp = layer.self_attn, layer.mlp
            # q/k/v after input_layernorm
            s = _scales(maxima[f"{i}.q_proj"], [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight], alpha)
            layer.input_layernorm.weight.copy_((1.0 + layer.input_layernorm.weight) / s - 1.0)
            for lin in (attn.q_proj, attn.k_proj, attn.v_proj):
                lin.weight.mul_(s)
            before.append(float(maxima[f"{i}.q_proj"].max()))
            after.append(float((maxima[f"{i}.q_proj"] / s).max()))
            # gate/up after pre_feedforward_layernorm
            s = _scales(maxima[f"{i}.gate_proj"], [mlp.gate_proj.weight, mlp.up_proj.weight], alpha)
            norm = layer.pre_feedforward_layernorm
            norm.weight.copy_((1.0 + norm.weight) / s - 1.0)
            mlp.gate_proj.weight.mul_(s)
            mlp.up_proj.weight.mul_(s)
            # down_proj after gelu(gate) * up: divide up_proj's rows
            s = _scales(maxima[f"{i}.down_proj"], [mlp.down_proj.weight], alpha)
            mlp.up_proj.weight.div_(s[:, None])
            mlp.down_proj.weight.mul_(s)
            before.append(float(maxima[f"{i}.down_proj"].max()))
            after.append(float((maxima[f"{i}.down_proj"] / s).max()))
            # o_proj after softmax @ v: divide v_proj's rows (per head_dim channel, shared by the query heads)
            heads = attn.heads // attn.kv_heads
            act = maxima[f"{i}.o_proj"].view(heads, attn.kv_heads * attn.head_dim).amax(0)
            w = attn.o_proj.weight.view(-1, heads, attn.kv_heads * attn.head_dim).abs().amax((0, 1))
            s = (act.clamp(min=1e-5) ** alpha / w.clamp(min=1e-5) ** (1.0 - alpha)).clamp(MIN_SCALE, MAX_SCALE)
            attn.v_proj.weight.div_(s[:, None])
            attn.o_proj.weight.mul_(s.repeat(heads))
    return {"alpha": alpha, "layers": len(graph.layers),
            "input_max_before": round(max(before), 3), "input_max_after": round(max(after), 3)}


def calibration_batches(tokenizer, max_length: int = 256) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Built-in parity texts with the query and document prompts: the calibration set."""
    from embg.textdata.builtin import DOCUMENTS, QUERIES, parity_texts

    batches = []
    for texts, prompt in ((parity_texts(), "query"), (QUERIES + DOCUMENTS, "document")):
        prompt = prompt if prompt in tokenizer.prompts else None
        encoded = tokenizer.encode(texts, prompt=prompt, max_length=max_length)
        batches.append((torch.as_tensor(encoded.input_ids), torch.as_tensor(encoded.attention_mask)))
    return batches
