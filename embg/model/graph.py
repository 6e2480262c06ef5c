"""The one export graph: (input_ids [B,S], attention_mask [B,S]) -> sentence_embedding float32 [B,D].

It holds the whole embedder (embedding, every Gemma 3 layer, mean pooling, both Dense layers,
L2 normalisation and an optional Matryoshka truncation) and is what every target converts.
It re-states transformers' Gemma3TextModel with three deliberate differences, each a converter
trap found on this architecture (docs/converter-traps.md):

* masks are built here as finite additive tensors (``finfo.min``, never ``-inf``; in the graph's
  activation dtype with ``mask_floor``, which fp16 can hold in the fp16-safe graph), so a query row
  whose keys are all masked (padding wider than the sliding window) gives no NaN; the sliding
  layers compute attention only inside their window's band once the length makes that cheaper
  (embg/model/attention.py), exactly;
* query heads are grouped onto the shared KV head by a reshape of the *query*, never by
  ``repeat_kv`` (litert-torch turns repeat_kv + transpose into a wrong RESHAPE, silently);
* the head is ``x @ W.T`` (a MatMul), not ``nn.Linear`` on a 2-D tensor (which exports as Gemm,
  which the ONNX quantizers skip).

A recipe with ``fp16_safe`` rewrites it further (embg/model/fp16_safe.py: residual scaled down,
RMSNorm, pooling and the L2 norm restated) so no intermediate nears fp16's limit; every float
created in ``forward`` follows the activation dtype, so the same graph runs and exports in fp16.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Gemma3TextConfig

from embg.errors import CheckpointError
from embg.model.attention import (MASK_MIN, Band, BandLayout, additive, band_block_for, band_layout,
                                  banded_attention, dense_attention, sliding_band, window_mask)
from embg.model.spec import CheckpointSpec

SLIDING, FULL = "sliding_attention", "full_attention"


def text_config(spec: CheckpointSpec) -> Gemma3TextConfig:
    """transformers' own reading of config.json, so window and rope follow the reference exactly."""
    config = Gemma3TextConfig.from_dict(dict(spec.config))
    if config.hidden_activation != "gelu_pytorch_tanh":
        raise CheckpointError(f"hidden_activation {config.hidden_activation!r} is not Gemma 3's gelu_pytorch_tanh")
    return config


class RMSNorm(nn.Module):
    """Gemma's RMSNorm: x / rms(x) * (1 + w).

    The fp16-safe rewrite (embg/model/fp16_safe.py) sets ``row_scaled``: each row is first divided
    by its own max |x|, so no square or mean can leave fp16's range whatever the input (rms(x/m) =
    rms(x)/m, eps becomes eps/m^2: the same function), and ``unit_offset`` 0 with the gain itself
    stored in ``weight`` (1 + w in fp16 loses digits when w is near -1).
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))
        self.unit_offset = 1.0
        self.row_scaled = False
        self.divides = False  # x / sqrt(...): the form onnxruntime fuses (fusable_norms)

    def gain(self) -> torch.Tensor:
        return self.weight if self.unit_offset == 0.0 else self.unit_offset + self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.row_scaled:
            return row_scaled_rms_norm(x, self.eps, self.gain())
        if self.divides:
            return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.gain()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.gain()


@contextmanager
def fusable_norms(graph: nn.Module) -> Iterator[None]:
    """Every RMSNorm written as x / sqrt(mean(x^2) + eps) * gain while inside. onnxruntime fuses that
    pattern into one SimplifiedLayerNormalization kernel; the rsqrt form (Sqrt, Reciprocal, Mul) stays
    six separate ops per norm, 145 norms per pass (3-4% of a real int8 pass). Same function; rounding only."""
    norms = [m for m in graph.modules() if isinstance(m, RMSNorm) and not m.row_scaled]
    for norm in norms:
        norm.divides = True
    try:
        yield
    finally:
        for norm in norms:
            norm.divides = False


ROW_FLOOR = 2.0**-14  # fp16's smallest normal number: rows below it are all-but-zero and eps dominates


def row_max(x: torch.Tensor) -> torch.Tensor:
    """max |x| over the last axis, never below ROW_FLOOR (no division by zero).

    As an inf-norm: ``abs().amax()`` on fp16 exports with casts to float32 around both ops."""
    return torch.linalg.vector_norm(x, ord=float("inf"), dim=-1, keepdim=True).clamp(min=ROW_FLOOR)


def row_scaled_rms_norm(x: torch.Tensor, eps: float, gain: torch.Tensor) -> torch.Tensor:
    """RMSNorm on x / max|x|: squares <= 1 and their mean in [1/D, 1], for any input."""
    m = row_max(x)
    y = x / m
    return y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + (eps**0.5 / m).pow(2)) * gain


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, config: Gemma3TextConfig) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scaling = config.query_pre_attn_scalar**-0.5
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, hidden, bias=False)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.rotate_input = nn.Identity()  # a block Hadamard after rotate_graph (embg/quantize/rotation.py)
        self.dense_query_blocks = 1  # > 1: dense products split by query (LiteRT's conversion; attention.py)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | Band) -> torch.Tensor:
        batch, seq, _ = x.shape
        x = self.rotate_input(x)
        # [B, S, heads, D] throughout: rope tables are [1, S, 1, D].
        q = self.q_norm(self.q_proj(x).view(batch, seq, self.heads, self.head_dim))
        k = self.k_norm(self.k_proj(x).view(batch, seq, self.kv_heads, self.head_dim))
        v = self.v_proj(x).view(batch, seq, self.kv_heads, self.head_dim)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if isinstance(mask, Band):
            out = banded_attention(q, k, v, mask, self.scaling)
        else:
            out = dense_attention(q, k, v, mask, self.scaling, self.dense_query_blocks)
        return self.o_proj(out)


class MLP(nn.Module):
    def __init__(self, config: Gemma3TextConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.rotate_input = nn.Identity()  # a block Hadamard after rotate_graph (embg/quantize/rotation.py)
        self.rotate_hidden = nn.Identity()  # down_proj's input, when rotate_graph(down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.rotate_input(x)
        return self.down_proj(self.rotate_hidden(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, config: Gemma3TextConfig, layer_type: str) -> None:
        super().__init__()
        self.layer_type = layer_type
        eps = config.rms_norm_eps
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps)
        self.pre_feedforward_layernorm = RMSNorm(config.hidden_size, eps)
        self.post_feedforward_layernorm = RMSNorm(config.hidden_size, eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | Band) -> torch.Tensor:
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, mask))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class DecoderInputs(NamedTuple):
    embeddings: torch.Tensor  # [B, S, hidden], already scaled by sqrt(hidden)
    masks: dict[str, Any]  # layer type -> what its attention takes (dense additive mask or band masks)
    rope: dict[str, tuple[torch.Tensor, torch.Tensor]]  # layer type -> (cos, sin)
    attention_mask: torch.Tensor  # [B, S'] the mask padded to whole attention blocks (what pooling reads)


class MatMulHead(nn.Module):
    """A bias-free projection written as x @ W.T so every exporter emits MatMul (never Gemm)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.weight.t())


class EmbeddingGemmaGraph(nn.Module):
    """The whole embedder as one traceable module. Build it with :func:`build_graph`."""

    def __init__(self, config: Gemma3TextConfig, dense_shapes: list[tuple[int, int]], output_dim: int) -> None:
        super().__init__()
        self.window = int(config.sliding_window)  # already the bidirectional |q-k| < window bound
        self.band_halo = self.window - 1  # keys a query block needs on either side: |q-k| <= window - 1
        # None: every sliding layer computes one dense [S, S] product (the graph before banding).
        self.band_block: int | None = band_block_for(self.band_halo)
        self.mask_floor = MASK_MIN  # the fp16-safe rewrite sets a floor fp16 can hold
        self.fp16_safe = False  # set by embg/model/fp16_safe.py: pooling and L2 norm restated for fp16
        self.rotated: dict | None = None  # set by embg/quantize/rotation.py: {"block": b, "table": bool}
        self.output_dim = output_dim
        self.full_dim = dense_shapes[-1][1]
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.register_buffer("embed_scale", torch.tensor(config.hidden_size**0.5), persistent=False)
        self.layers = nn.ModuleList(DecoderLayer(config, t) for t in config.layer_types[: config.num_hidden_layers])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.head = nn.ModuleList(MatMulHead(i, o) for i, o in dense_shapes)
        dim = config.head_dim
        for layer_type in (SLIDING, FULL):
            base = config.rope_parameters[layer_type]["rope_theta"]
            inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
            self.register_buffer(f"inv_freq_{layer_type}", inv_freq, persistent=False)

    def _rope(self, positions: torch.Tensor, layer_type: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # angles in float32 even in an fp16 graph: position * frequency needs more than fp16's 11 bits
        freqs = positions[:, None] * getattr(self, f"inv_freq_{layer_type}")[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[None, :, None].to(dtype), emb.sin()[None, :, None].to(dtype)  # [1, S, 1, D]

    def band_layout(self, seq: int) -> BandLayout | None:
        """The sliding layers' blocks, or None where one dense product is cheaper (a short fixed length).

        A symbolic length (the dynamic ONNX export) always bands: the layout then degrades to a single
        dense block for short inputs, so one graph serves every length.
        """
        if self.band_block is None:
            return None
        layout = band_layout(seq, self.band_block, self.band_halo)
        return layout if isinstance(seq, torch.SymInt) or layout.saves_work else None

    def attention_manifest(self) -> dict[str, object]:
        """How the sliding layers compute attention, for the bundle manifest."""
        return {"sliding_window": self.window - 1,  # a token sees keys with |q-k| <= this
                "sliding": "dense" if self.band_block is None else "banded", "band_block": self.band_block}

    def _masks(self, attention_mask: torch.Tensor, positions: torch.Tensor, layout: BandLayout | None,
               dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor | Band]:
        """Built once per forward and shared by every layer of a type, in the activation ``dtype``
        with ``mask_floor`` for masked keys (one fp16 can hold in the fp16-safe graph)."""
        floor = self.mask_floor
        sliding = (window_mask(attention_mask, positions, self.window, dtype, floor) if layout is None
                   else sliding_band(attention_mask, positions, layout, self.window, self.band_halo, dtype, floor))
        return {FULL: additive(attention_mask[:, None, None, :] > 0, dtype, floor), SLIDING: sliding}

    def decoder_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> DecoderInputs:
        """What every decoder layer takes: the scaled embeddings, and per layer type the mask and rope."""
        seq = input_ids.shape[1]
        layout = self.band_layout(seq)
        if layout is not None and (isinstance(seq, torch.SymInt) or layout.padded != seq):
            # Whole blocks: pad with masked positions (fewer than `blocks` of them), cut nothing later.
            input_ids = F.pad(input_ids, (0, layout.padded - seq))
            attention_mask = F.pad(attention_mask, (0, layout.padded - attention_mask.shape[1]))
        # Positions come from the input rather than arange(S): with fixed shapes a converter would
        # otherwise fold rope tables and window masks into per-bucket constants (MBs per signature).
        # (a comparison on the data, which no converter folds; it is always true for a 0/1 mask).
        positions = torch.cumsum((attention_mask[0] >= 0).to(torch.float32), dim=0) - 1.0
        if self.rotated and self.rotated["table"]:  # rows stored rotated and scaled (embg/quantize/rotation.py)
            x = self.unrotate_table(self.embed_tokens(input_ids))
        else:
            x = self.embed_tokens(input_ids) * self.embed_scale
        dtype = x.dtype  # float32, or float16 for an fp16 export: masks and rope follow it
        return DecoderInputs(x, self._masks(attention_mask, positions, layout, dtype),
                             {t: self._rope(positions, t, dtype) for t in (SLIDING, FULL)}, attention_mask)

    def run_layer(self, layer: DecoderLayer, x: torch.Tensor, inputs: DecoderInputs) -> torch.Tensor:
        cos, sin = inputs.rope[layer.layer_type]
        return layer(x, cos, sin, inputs.masks[layer.layer_type])

    def pool(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final norm, then the mean over real tokens: what the head projects (the mask of decoder_inputs)."""
        x = self.norm(x)
        if self.fp16_safe:  # mean as shares (1/count, from the mask in float32) times tokens: no large sum
            weights = attention_mask.to(torch.float32).unsqueeze(1)  # [B, 1, S]
            shares = (weights / weights.sum(dim=-1, keepdim=True).clamp(min=1.0)).to(x.dtype)
            return torch.matmul(shares, x).squeeze(1)
        weights = attention_mask.to(x.dtype).unsqueeze(-1)
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        inputs = self.decoder_inputs(input_ids, attention_mask)
        x = inputs.embeddings
        for layer in self.layers:
            x = self.run_layer(layer, x, inputs)
        pooled = self.pool(x, inputs.attention_mask)
        for projection in self.head:
            pooled = projection(pooled)
        if self.fp16_safe:  # L2 norm of x / max|x|: its squares stay <= 1
            pooled = pooled / row_max(pooled)
        embedding = F.normalize(pooled, p=2.0, dim=-1)
        if self.output_dim != self.full_dim:
            embedding = F.normalize(embedding[:, : self.output_dim], p=2.0, dim=-1)
        return embedding.float()  # an fp16 graph still returns float32 (a no-op in float32)


def build_graph(spec: CheckpointSpec, state_dict: dict[str, torch.Tensor], output_dim: int | None = None) -> EmbeddingGemmaGraph:
    """The export graph for ``spec`` with its weights loaded strictly, in eval mode, float32."""
    output_dim = spec.output_dim if output_dim is None else output_dim
    if output_dim not in spec.matryoshka_dims:
        raise CheckpointError(f"--dim {output_dim} is not one of this model's Matryoshka dims {list(spec.matryoshka_dims)}")
    graph = EmbeddingGemmaGraph(text_config(spec), [(d.in_features, d.out_features) for d in spec.dense], output_dim)
    graph.load_state_dict(state_dict, strict=True)
    return graph.eval().requires_grad_(False)
