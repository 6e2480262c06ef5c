"""Quantized weights simulated in torch: the export graph run with some weights replaced.

Used to compare int4 choices before exporting (embg/quantize/int4_choice.py) and by the
sensitivity benchmark (bench/sensitivity.py). Weight-only: what the targets add (dynamic int8
activations) is not simulated. Min-max is simulated as LiteRT's quantizer does it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from embg.quantize.calibration_texts import Batch
from embg.quantize.torch_threads import single_thread
from embg.quantize.int4_blocks import QMAX, blocks_of, dequantize, round_to_grid, storable_scales



def minmax_int4(weight: torch.Tensor, block: int) -> torch.Tensor:
    """LiteRT's min-max int4: scale max|w| / 7 per block, bf16 as XNNPACK keeps it."""
    rows = []
    for start in range(0, weight.shape[0], 8192):  # the 262144-row embedding table in pieces
        blocks = blocks_of(weight[start:start + 8192], block)
        scales = storable_scales(blocks.abs().amax(-1) / QMAX)
        rows.append(dequantize(round_to_grid(blocks, scales[..., None]).reshape(blocks.shape[0], -1), scales))
    return torch.cat(rows)


def minmax_onnx_blocks(weight: torch.Tensor, block: int, bits: int) -> torch.Tensor:
    """ONNX's min-max blocks, the only target of ``bits 6``: the exporter's own rounding
    (onnx_backend.block_symmetric, on the [in, out] layout it quantizes)."""
    from embg.quantize.onnx_backend import block_symmetric, dequantize_blocks

    q, scales = block_symmetric(weight.detach().to(torch.float32).numpy().T.copy(), bits, block)
    return torch.from_numpy(dequantize_blocks(q, scales, block).T.copy())


def int8_channel(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8 (max|w| / 127), as both targets' int8 recipes store weights."""
    rows = []
    for start in range(0, weight.shape[0], 8192):  # the 262144-row table in pieces: no full-size temporaries
        part = weight[start:start + 8192]
        scales = (part.abs().amax(1, keepdim=True) / 127).clamp(min=1e-30)
        rows.append(torch.clamp(torch.round(part / scales), -127, 127) * scales)
    return torch.cat(rows)


def outputs_with(graph: torch.nn.Module, batches: list[Batch],
                 weight_of: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None) -> torch.Tensor:
    """Graph outputs for ``batches`` with each named weight w replaced by ``weight_of[name](w)``; restored after."""
    params = dict(graph.named_parameters())
    original = {name: params[name].detach().clone() for name in weight_of or {}}
    with torch.no_grad(), single_thread():
        try:
            for name, replace in (weight_of or {}).items():
                params[name].copy_(replace(original[name]))
            return torch.cat([graph(ids, mask) for ids, mask in batches])
        finally:
            for name, value in original.items():
                params[name].copy_(value)


def grid_weight(grid) -> Callable[[torch.Tensor], torch.Tensor]:
    """A replacement that puts an exact grid (integers, scales as numpy) in place of the weight."""
    q, scales = grid
    return lambda _weight: dequantize(torch.from_numpy(q), torch.from_numpy(scales))


def recipe_weights(graph: torch.nn.Module, recipe, grids: dict) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Replacements for every weight ``recipe`` quantizes: exact grids where given, else the rule simulated
    (int4 block min-max as LiteRT, int6 blocks as ONNX, int8 per channel); float rules (bits 32, 16) are left alone."""
    from embg.quantize.groups import part_of

    replacements: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    for name, value in graph.state_dict().items():
        part = part_of(name) if value.ndim == 2 else None
        rule = recipe.rule_for(name) if part else None
        if rule is None or not rule.is_integer:  # float32 and fp16 rules: not simulated as integers
            continue
        if name in grids:
            replacements[name] = grid_weight(grids[name])
        elif rule.bits == 4:
            replacements[name] = partial(minmax_int4, block=rule.block_size or 32)
        elif rule.bits == 6:
            replacements[name] = partial(minmax_onnx_blocks, block=rule.block_size, bits=6)
        else:
            replacements[name] = int8_channel
    return replacements


# Dynamic int8 activations, simulated on a linear layer's input (bench/activation_sensitivity.py).

def int8_rows(x: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 per row (token), one scale max|x| / 127: the ONNX presets' grid."""
    scale = (x.abs().amax(-1, keepdim=True) / 127).clamp(min=1e-30)
    return torch.round(x / scale).clamp(-127, 127) * scale


def int8_rows_asymmetric(x: torch.Tensor) -> torch.Tensor:
    """Asymmetric int8 per row over [min(x, 0), max(x, 0)]: XNNPACK's dynamic-range grid (LiteRT), by the
    same function the LiteRT export graph computes it with (embg/quantize/litert_split.py)."""
    from embg.quantize.litert_split import xnnpack_int8_rows

    return xnnpack_int8_rows(x)


def int8_rows_asymmetric_two_pass(x: torch.Tensor) -> torch.Tensor:
    """LiteRT's residual_pass: XNNPACK's rows, then their rounding residual on its grid in turn."""
    first = int8_rows_asymmetric(x)
    return first + int8_rows_asymmetric(x - first)


def int8_rows_two_pass(x: torch.Tensor) -> torch.Tensor:
    """The rows, then their rounding residual, each symmetric int8 per row (the recipe's residual_pass)."""
    first = int8_rows(x)
    return first + int8_rows(x - first)


def with_float_channels(quantize: Callable[[torch.Tensor], torch.Tensor], kept) -> Callable[[torch.Tensor], torch.Tensor]:
    """``quantize`` on every channel but ``kept`` (indices), which pass through in float (float_channels)."""
    if kept is None or len(kept) == 0:
        return quantize
    index = torch.as_tensor(kept, dtype=torch.long)

    def split(x: torch.Tensor) -> torch.Tensor:
        rest = x.clone()
        rest[..., index] = 0
        out = quantize(rest)
        out[..., index] = x[..., index]
        return out
    return split


def outputs_with_activations(graph: torch.nn.Module, batches: list[Batch],
                             activation_of: dict[str, Callable[[torch.Tensor], torch.Tensor]],
                             weight_of: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None) -> torch.Tensor:
    """``outputs_with`` where the input of each linear module named in ``activation_of`` (by its weight's
    name) is replaced by ``activation_of[name](input)``."""
    hooks = []
    try:
        for name, module in graph.named_modules():
            replace = activation_of.get(f"{name}.weight")
            if isinstance(module, torch.nn.Linear) and replace is not None:
                hooks.append(module.register_forward_pre_hook(lambda _m, args, f=replace: (f(args[0]),)))
        return outputs_with(graph, batches, weight_of)
    finally:
        for hook in hooks:
            hook.remove()
