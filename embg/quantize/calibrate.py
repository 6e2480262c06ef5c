"""Calibrated grids (int4, or int6 for ``bits 6`` rules): integers and positive scales for every weight whose rule says gptq or mse-clip.

* ``mse-clip`` weights (the embedding table above all) get per-block MSE-optimal scales from
  their values alone (embg/quantize/int4_blocks.py).
* ``gptq`` weights are quantized layer by layer on real text: calibration batches run through
  the export graph; each decoder layer's linear inputs are collected as Hessians (one forward of
  the layer), its gptq weights quantized (embg/quantize/gptq.py), and the layer re-run with the
  quantized weights so later layers calibrate on what the exported model will really compute.
  The head calibrates on the pooled vectors the same way. 6-bit weights with int8 activations run
  widened to int8 per column on ONNX; GPTQ rounds them to those int8 values (gptq_quantize's ``widened``).

The graph's weights are restored afterwards (the exporters find weights by value); the grids go
to the targets through ``ExportJob.grids`` and are read back from the written file.
Deterministic: same weights and texts give the same integers and scales.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from embg.model.graph import EmbeddingGemmaGraph
from embg.quantize.calibration_texts import Batch
from embg.quantize.gptq import HessianAccumulator, gptq_quantize
from embg.quantize.groups import part_of
from embg.quantize.int4_blocks import dequantize, int8_row_steps, quantize_rows, steps_from_scales, widened_to_int8
from embg.quantize.recipe import CALIBRATED_ALGORITHMS, QuantRecipe
from embg.quantize.torch_threads import single_thread

Grid = tuple[np.ndarray, np.ndarray]  # (integers int8 [rows, cols], scales float32 [rows, cols/block])


def calibrated_weights(graph: torch.nn.Module, recipe: QuantRecipe) -> dict[str, tuple[str, int]]:
    """parameter name -> (algorithm, block size) for every 2-D weight a calibrated rule covers."""
    plan = {}
    for name, value in graph.state_dict().items():
        part = part_of(name) if value.ndim == 2 else None
        rule = recipe.rule_for(name) if part is not None else None
        if rule is not None and rule.algorithm in CALIBRATED_ALGORITHMS:
            plan[name] = (rule.algorithm, int(rule.block_size))
    return plan


def calibrate_grids(graph: EmbeddingGemmaGraph, recipe: QuantRecipe, batches: list[Batch],
                    progress: Callable[[str], None] = lambda message: None,
                    gptq_bits: dict[str, int] | None = None) -> tuple[dict[str, Grid], dict[str, Any]]:
    """Grids for every calibrated weight of ``graph`` and a report for the manifest (from the on-disk
    cache when this graph, recipe and batches were calibrated before: embg/quantize/calibration_cache.py).

    GPTQ rounds each weight to its rule's bits (4 or 6); ``gptq_bits`` (benchmarks) overrides them by
    part: part -> bits."""
    from embg.quantize import calibration_cache

    plan = calibrated_weights(graph, recipe)
    widths = {name: (gptq_bits or {}).get(part_of(name), recipe.rule_for(name).bits)
              for name, (algorithm, _) in plan.items() if algorithm == "gptq"}
    bits = {name: width for name, width in widths.items() if width != 4}  # 4 is _gptq_walk's default
    # 6-bit grids run widened to int8 where their activations are int8 (ONNX, onnx_backend.block_weight_as_int8)
    widened = {name for name, width in bits.items()
               if steps_from_scales(width) and recipe.rule_for(name).dynamic_activations}
    rules = recipe.weight_rules() if not gptq_bits else {**recipe.weight_rules(),
                                                         "gptq_bits": dict(sorted(gptq_bits.items()))}
    key = calibration_cache.cache_key(graph, rules, batches)
    cached = calibration_cache.load(key)
    if cached is not None:
        progress("calibrated grids found in the calibration cache (same weights, recipe, texts and code)")
        return cached[0], {**cached[1], "cached": True}
    with single_thread():
        grids, report = _calibrate(graph, plan, batches, progress, bits, widened)
    calibration_cache.store(key, grids, report)
    return grids, report


def _calibrate(graph: EmbeddingGemmaGraph, plan: dict[str, tuple[str, int]], batches: list[Batch],
               progress: Callable[[str], None], bits: dict[str, int], widened: set[str]
               ) -> tuple[dict[str, Grid], dict[str, Any]]:
    started = time.perf_counter()
    params = dict(graph.named_parameters())
    original = {name: params[name].detach().clone() for name in plan}
    grids: dict[str, Grid] = {}
    try:
        with torch.no_grad():
            for name, (algorithm, block) in plan.items():
                if algorithm == "mse-clip":
                    progress(f"calibrating {name}: per-block MSE-clipped int4 scales, block {block}")
                    grids[name] = _set_quantized(params[name], *quantize_rows(params[name], block, "mse"))
            gptq = {name: block for name, (algorithm, block) in plan.items() if algorithm == "gptq"}
            if gptq:
                tokens = sum(int(mask.sum()) for _, mask in batches)
                progress(f"GPTQ on {len(gptq)} weights, {len(batches)} calibration batches ({tokens} tokens)")
                grids.update(_gptq_walk(graph, batches, gptq, progress, bits, widened))
    finally:
        with torch.no_grad():
            for name, value in original.items():
                params[name].copy_(value)
    report = {"algorithms": sorted({a for a, _ in plan.values()}), "weights": len(grids),
              "batches": len(batches), "tokens": sum(int(mask.sum()) for _, mask in batches),
              "seconds": round(time.perf_counter() - started, 1)}
    return {name: (q.numpy(), s.numpy()) for name, (q, s) in grids.items()}, report


def _set_quantized(param: torch.nn.Parameter, q: torch.Tensor, scales: torch.Tensor, widened_bits: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Put the dequantized weight into the graph (later layers calibrate on it): the values the target will
    multiply, so a grid widened to int8 at load goes in widened (``widened_bits``: its width). Return the grid."""
    if widened_bits:
        rows, cols = q.shape
        blocks = q.reshape(rows, scales.shape[1], -1)
        steps = int8_row_steps(scales, widened_bits)[:, None, None]
        param.copy_(widened_to_int8(blocks, scales[..., None], steps).reshape(rows, cols))
    else:
        param.copy_(dequantize(q, scales))
    return q, scales


def _collect_hessians(modules: dict[str, torch.nn.Module], run: Callable[[], None],
                      current_mask: list[torch.Tensor]) -> dict[str, HessianAccumulator]:
    """Hessians of the inputs each module sees while ``run`` runs (padding rows left out).

    Modules fed the very same tensor (q/k/v, gate/up) share one accumulator: X^T X once, not three times.
    """
    hessians = {name: HessianAccumulator(module.weight.shape[1]) for name, module in modules.items()}
    shared: dict[str, str] = {}
    last: list[Any] = [None, None]  # the last input tensor recorded, and whose accumulator holds it

    def hook(name: str):
        def record(_module, args) -> None:
            x = args[0]
            if x is last[0]:
                shared[name] = last[1]
                return
            keep = current_mask[0] if x.dim() == 3 else None  # token rows [B, S, C]; pooled rows are all real
            hessians[name].add(x, keep)
            last[:] = [x, name]
        return record

    handles = [module.register_forward_pre_hook(hook(name)) for name, module in modules.items()]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
        last[:] = [None, None]
    return {name: hessians[shared.get(name, name)] for name in modules}


def _gptq_walk(graph: EmbeddingGemmaGraph, batches: list[Batch], gptq: dict[str, int],
               progress: Callable[[str], None], bits: dict[str, int], widened: set[str]
               ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    modules = dict(graph.named_modules())
    grids: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    inputs = [graph.decoder_inputs(ids, mask) for ids, mask in batches]
    states = [step.embeddings for step in inputs]
    current_mask: list[torch.Tensor] = [inputs[0].attention_mask]  # padded to whole attention blocks

    def quantize(hessians: dict[str, HessianAccumulator]) -> None:
        for name, accumulator in hessians.items():
            weight = f"{name}.weight"
            param = modules[name].weight
            width, widen = bits.get(weight, 4), weight in widened
            grids[weight] = _set_quantized(param, *gptq_quantize(param, accumulator.hessian, gptq[weight], width, widen),
                                           widened_bits=width if widen else 0)

    for index, layer in enumerate(graph.layers):
        started = time.perf_counter()
        prefix = f"layers.{index}."
        linears = {name: modules[name] for name in (w[: -len(".weight")] for w in gptq) if name.startswith(prefix)}

        def run_all(record: bool) -> None:
            for i, step in enumerate(inputs):
                current_mask[0] = step.attention_mask
                output = graph.run_layer(layer, states[i], step)
                if not record:
                    states[i] = output

        if linears:
            quantize(_collect_hessians(linears, lambda: run_all(True), current_mask))
        run_all(False)
        progress(f"calibrated layer {index + 1}/{len(graph.layers)} ({len(linears)} weights, "
                 f"{time.perf_counter() - started:.1f} s)")
    if any(name.startswith("head.") for name in gptq):
        pooled = [graph.pool(x, step.attention_mask) for x, step in zip(states, inputs)]
        for i, module in enumerate(graph.head):  # in order: each projection sees the quantized one before it
            if f"head.{i}.weight" in gptq:
                quantize(_collect_hessians({f"head.{i}": module}, lambda: [module(p) for p in pooled], current_mask))
            pooled = [module(p) for p in pooled]
        progress("calibrated the head")
    return grids
