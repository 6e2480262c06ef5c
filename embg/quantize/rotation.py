"""Rotations that make int4 weights easier to quantize, with the float function unchanged.

For any orthogonal R, ``x W^T = (x R)(W R)^T``. A weight's large entries sit in a few input
columns; after a (sign-randomised) Hadamard rotation every block of 32 holds a mix of all of
them, so one scale per block fits it better (the "incoherence" of QuIP#/QuaRot). On the real
checkpoint this moved int4 top-10 agreement more than any calibration change
(docs/measurements.md). What is rotated, and what it costs at run time:

* q/k/v and gate/up inputs: one block-diagonal Hadamard per input (b = 128 by default), run as two
  small float products through its Kronecker factors H_8 (x) H_16 (hadamard.block_hadamard); the
  random signs fold into the RMSNorm gain in front of it, so they cost nothing.
* o_proj's input: free. The attention output is P v, so rotating v's head dimension inside
  v_proj (W_v <- R^T W_v) rotates o_proj's input too (W_o <- W_o R).
* the embedding table: rows stored as E s M^T (s the embedding scale, M orthogonal: two stages
  of the same Hadamard blocks with signs and a stride permutation between them, so every channel
  mixes with every other); after the lookup two small products per token give E s back.
* down_proj's input (after the gated activation), with ``down``: its signs fold into up_proj's
  output rows (gelu(g) * (u D) = (gelu(g) * u) D), the Hadamard blocks are one more product per
  layer on the [.., intermediate] activation. Without ``down`` it is left alone.

  ``"down": "auto"`` rotates it only in the layers where that lowers the rounding error the next
  layers see (embg/quantize/down_guard.py): where down_proj writes into a residual channel with a
  huge norm gain fed by normally silent units (the outlier fixture, gain ~9e4), rotated noise reaches
  that channel and the model collapses (cosine mean 0.61); unrotated it does not.

The presets ``int4-rotated`` and ``int8-rotated`` use it (down ``"auto"``: every layer on the real
checkpoint, none on the outlier fixture) with no float channels (rotated activations do not need them).

The rotations are fixed (seeded signs, exact Hadamard entries), so the same checkpoint always
gives the same file. Buffers are named so that no recipe ever quantizes them (groups.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from embg.quantize.groups import INPUT_ROTATION, TABLE_ROTATION
from embg.quantize.hadamard import block_hadamard, hadamard, kron_sizes, random_signs

SEED = 20261204


def block_size_for(dims: tuple[int, ...], largest: int) -> int:
    """The largest power of two <= ``largest`` dividing every dim (128 on the real model)."""
    block = largest
    while block > 1 and any(d % block for d in dims):
        block //= 2
    return block


def _register_factors(module: nn.Module, name: str, block: int) -> None:
    """H_block as its two Kronecker factors (block_hadamard): ``name`` holds H_c, ``outer_{name}`` H_a."""
    a, c = kron_sizes(block)
    module.register_buffer(name, hadamard(c).float())
    module.register_buffer(f"outer_{name}", hadamard(a).float())


def _factors(module: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(H_a, H_c) as _register_factors stored them."""
    return getattr(module, f"outer_{name}"), getattr(module, name)


def _unrotate(y: torch.Tensor, outer: torch.Tensor, inner: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """y M for TableUnrotation: Hadamard blocks, signs, a stride permutation, Hadamard blocks again."""
    lead, dim, block = y.shape[:-1], y.shape[-1], outer.shape[0] * inner.shape[0]
    z = block_hadamard(y, outer, inner) * signs
    return block_hadamard(z.reshape(*lead, dim // block, block).transpose(-1, -2).reshape(*lead, dim), outer, inner)


class TableUnrotation(nn.Module):
    """y -> y M, an orthogonal M mixing every channel with every other (_unrotate). The table is stored
    as E s M^T (s the embedding scale), so the lookup followed by this gives E s. No multiply follows a
    product, so a converter cannot fold one into the Hadamard constant (the checks find it by value)."""

    def __init__(self, dim: int, block: int, generator: torch.Generator) -> None:
        super().__init__()
        # the decoder's block size: the same Hadamard factors, which the converters store once
        _register_factors(self, TABLE_ROTATION, block)
        self.register_buffer("table_signs", random_signs(dim, generator).float())

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return _unrotate(y, *_factors(self, TABLE_ROTATION), self.table_signs)

    def matrix(self) -> torch.Tensor:
        """M as float64 [dim, dim]."""
        dim = self.table_signs.shape[0]
        outer, inner = _factors(self, TABLE_ROTATION)
        return _unrotate(torch.eye(dim, dtype=torch.float64), outer.double(), inner.double(), self.table_signs.double())


class BlockRotation(nn.Module):
    """x -> x reshaped [..., n, b] @ H_b: a block-diagonal Hadamard on the last axis, as two small
    products (block_hadamard)."""

    def __init__(self, block: int) -> None:
        super().__init__()
        self.block = block
        _register_factors(self, INPUT_ROTATION, block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return block_hadamard(x, *_factors(self, INPUT_ROTATION))


def _rotate_inputs(linears: list[nn.Linear], rotation: torch.Tensor) -> None:
    """W <- W R for linears that now see x R."""
    for linear in linears:
        linear.weight.copy_((linear.weight.double() @ rotation).to(linear.weight.dtype))


def rotate_graph(graph: nn.Module, block: int = 128, table: bool = True,
                 down: bool | Sequence[int] = False) -> dict[str, Any]:
    """Rotate, in place, the inputs of every decoder layer's q/k/v, o and gate/up weights (block
    Hadamard, signs in the norms), with ``table`` the embedding table and with ``down`` down_proj's
    input (True: every layer's; a sequence: those layers'). The fp32 function is unchanged up to
    rounding. Returns what the manifest records."""
    if getattr(graph, "rotated", None):
        raise ValueError("the graph is already rotated")
    down_layers = _down_layers(down, len(graph.layers))
    hidden = graph.embed_tokens.weight.shape[1]
    head_dim = graph.layers[0].self_attn.head_dim
    intermediate = graph.layers[0].mlp.down_proj.weight.shape[1]
    block = _graph_block(graph, block, bool(down_layers))
    generator = torch.Generator().manual_seed(SEED)
    H = hadamard(block)
    shared = BlockRotation(block)
    with torch.no_grad():
        for index, layer in enumerate(graph.layers):
            attention, mlp = layer.self_attn, layer.mlp
            for norm, module, linears in ((layer.input_layernorm, attention,
                                           [attention.q_proj, attention.k_proj, attention.v_proj]),
                                          (layer.pre_feedforward_layernorm, mlp, [mlp.gate_proj, mlp.up_proj])):
                signs = random_signs(hidden, generator)
                gain = norm.gain().double() * signs  # the signs ride on the norm's gain: x D then H
                norm.weight.copy_((gain - norm.unit_offset).to(norm.weight.dtype))
                rotation = signs[:, None] * torch.block_diag(*[H] * (hidden // block))
                _rotate_inputs(linears, rotation)
                module.rotate_input = shared  # one module: one constant in the file, not one per layer
            # v's head dimension rotated inside v_proj: P (v R) = (P v) R, so o_proj's input is rotated too
            head = random_signs(head_dim, generator)[:, None] * torch.block_diag(*[H] * (head_dim // block))
            v = attention.v_proj.weight
            v.copy_((head.T @ v.double().reshape(-1, head_dim, v.shape[1])).reshape(v.shape).to(v.dtype))
            heads_out = torch.block_diag(*[head] * attention.heads)
            _rotate_inputs([attention.o_proj], heads_out)
            if down is not False:  # h D H: D rides on up_proj's output rows, H is one product before down_proj
                signs = random_signs(intermediate, generator)  # drawn for every layer: the same draws whichever are chosen
                if index not in down_layers:
                    continue
                mlp.up_proj.weight.copy_((signs[:, None] * mlp.up_proj.weight.double()).to(mlp.up_proj.weight.dtype))
                _rotate_inputs([mlp.down_proj], signs[:, None] * torch.block_diag(*[H] * (intermediate // block)))
                mlp.rotate_hidden = shared
        report = {"block": block, "table": bool(table), "down": bool(down_layers)}
        if down is not False and not isinstance(down, bool):
            report["down_layers"] = sorted(down_layers)
        if table:
            unrotation = TableUnrotation(hidden, block, generator)
            rotation = unrotation.matrix().T * graph.embed_scale.double()  # E s M^T: the lookup then M gives E s
            table_weight = graph.embed_tokens.weight
            for start in range(0, table_weight.shape[0], 16384):  # the 262144-row table in pieces
                rows = table_weight[start:start + 16384]
                rows.copy_((rows.double() @ rotation).to(rows.dtype))
            graph.unrotate_table = unrotation
    graph.rotated = report
    return report


def _down_layers(down: bool | Sequence[int], layer_count: int) -> set[int]:
    if isinstance(down, bool):
        return set(range(layer_count)) if down else set()
    layers = {int(i) for i in down}
    if any(not 0 <= i < layer_count for i in layers):
        raise ValueError(f"down rotation names layers {sorted(layers)}; the graph has {layer_count}")
    return layers


def rotate_for(graph: nn.Module, recipe: Any,
               calibration: Callable[[], Sequence[tuple[torch.Tensor, torch.Tensor]]] | None = None,
               progress: Callable[[str], None] = lambda message: None) -> dict[str, Any] | None:
    """Rotate ``graph`` as ``recipe`` (a QuantRecipe) asks, before calibration; None when it asks for none.
    ``"down": "auto"`` chooses the layers on ``calibration()``'s token batches (down_guard.py)."""
    if not recipe.rotation:
        return None
    fields = dict(recipe.rotation)  # parse_recipe fills block, table and down
    guard = None
    if fields["down"] == "auto":
        if calibration is None:
            raise ValueError('rotation.down "auto" needs calibration texts')
        guard = _guard_choice(graph, recipe, calibration(), _graph_block(graph, fields["block"], True), progress)
        fields["down"] = guard.layers
    report = rotate_graph(graph, **fields)
    if guard is not None:
        report["down_guard"] = guard.to_dict()
    return report


def _guard_choice(graph: nn.Module, recipe: Any, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], block: int,
                  progress: Callable[[str], None]):
    """choose_down_layers' answer, from the calibration cache when this graph, recipe, block, batches and
    guard code were measured before (exporting one checkpoint to both targets measures once)."""
    from embg.quantize import calibration_cache
    from embg.quantize.down_guard import DownChoice, choose_down_layers

    key = calibration_cache.cache_key(graph, {"down_guard": recipe.weight_rules(), "block": block}, list(batches),
                                      ("embg.quantize.down_guard", "embg.quantize.simulate", "embg.quantize.hadamard"))
    cached = calibration_cache.load_decision(key)
    if cached is not None:
        progress("down_proj's rotation guard: its per-layer choice found in the calibration cache")
        return DownChoice(tuple(cached["layers"]), tuple(cached["error_ratio"]))
    progress(f"measuring, layer by layer, whether rotating down_proj's input lowers its int8 rounding error "
             f"({sum(len(ids) for ids, _ in batches)} calibration texts; about a minute for the full model)")
    guard = choose_down_layers(graph, batches, block, _down_weight_rounding(recipe, graph))
    calibration_cache.store_decision(key, {"layers": list(guard.layers), "error_ratio": list(guard.error_ratio)})
    return guard


def _graph_block(graph: nn.Module, largest: int, down: bool) -> int:
    """The block size rotate_graph uses: it must divide hidden, head_dim and, with ``down``, intermediate."""
    dims = (graph.embed_tokens.weight.shape[1], graph.layers[0].self_attn.head_dim)
    return block_size_for((*dims, graph.layers[0].mlp.down_proj.weight.shape[1]) if down else dims, largest)


def _down_weight_rounding(recipe: Any, graph: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """How ``recipe`` rounds down_proj weights, as simulate.recipe_weights simulates it (identity if float)."""
    from embg.quantize.simulate import recipe_weights

    name = next(n for n, _ in graph.named_parameters() if n.endswith("mlp.down_proj.weight"))
    return recipe_weights(graph, recipe, {}).get(name, lambda weight: weight)
