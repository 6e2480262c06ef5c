"""QAT checkpoints: recover the exact Q4_0/Q8_0 integers and scales, and carry them into artifacts.

google/embeddinggemma-300m-qat-q4_0-unquantized (and -q8_0) hold float weights trained for
llama.cpp's grid (blocks of 32 along the input axis, symmetric, one fp16 scale per block, Q4_0
scale = m / -8 with m the block's largest-magnitude value). Generic quantizers pick other scales
(LiteRT: max|w| / 7, bf16-rounded) and lose what QAT bought. Here the grid is recovered per
tensor and written into the artifact as is; the manifest records how well each group fit.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Collection

import numpy as np
import torch

from embg.errors import ExportError
from embg.quantize.grids import GRIDS, Grid
from embg.quantize.groups import group_of, part_of
from embg.quantize.recipe import QuantRecipe, load_recipe

log = logging.getLogger(__name__)

# --bits N on a checkpoint found on a QAT grid resolves to the exact-grid preset.
QAT_PRESET_FOR_BITS = {4: ("q4_0", "int4-qat"), 8: ("q8_0", "int8-qat")}


def grid_for_bits(bits: int) -> Grid:
    return GRIDS["q4_0" if bits == 4 else "q8_0"]


def recover_grids(state_dict: dict[str, torch.Tensor], recipe: QuantRecipe, force: bool = False
                  ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """For every weight whose rule says qat-grid: (integers [rows, cols] int8, scales [rows, cols/32] float32).

    Refuses weights that are off the grid unless ``force``; then warns with the off-grid fraction.
    """
    grids: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    stats: dict[str, dict[str, Any]] = defaultdict(lambda: {"tensors": 0, "blocks": 0, "off_grid_blocks": 0,
                                                            "max_error_in_scales": 0.0})
    for name, weight in state_dict.items():
        part = part_of(name)
        if weight.ndim != 2 or part is None or recipe.rule_for(name).algorithm != "qat-grid":
            continue
        group = recipe.rule_key(part)
        grid = grid_for_bits(recipe.rule_for(name).bits)
        fit = grid.fit(weight)
        entry = stats[group]
        entry["grid"] = grid.name
        entry["tensors"] += 1
        entry["blocks"] += fit.blocks
        entry["off_grid_blocks"] += fit.off_grid
        entry["max_error_in_scales"] = max(entry["max_error_in_scales"], round(fit.max_error, 6))
        rows = weight.shape[0]
        grids[name] = (fit.q.reshape(rows, -1).numpy(), fit.scale.numpy())
    for entry in stats.values():
        entry["off_grid_fraction"] = round(entry["off_grid_blocks"] / max(entry["blocks"], 1), 6)
        entry["on_grid"] = entry["off_grid_blocks"] == 0
    off = sum(e["off_grid_blocks"] for e in stats.values())
    total = sum(e["blocks"] for e in stats.values())
    if off:
        worst = ", ".join(f"{g} {e['off_grid_fraction']:.1%}" for g, e in stats.items() if e["off_grid_blocks"])
        message = (f"{off / total:.1%} of weight blocks are off the {next(iter(stats.values()))['grid'].upper()} grid "
                   f"({worst}): this does not look like a QAT checkpoint")
        if not force:
            raise ExportError(f"{message}; use a min-max recipe (--bits 4/8), or --force-grid to round onto the grid anyway")
        log.warning("WARNING: %s; --force-grid: rounding them onto the grid (not lossless)", message)
    report = {"groups": dict(stats), "off_grid_fraction": round(off / max(total, 1), 6), "forced": bool(force and off)}
    return grids, report


def detect_qat_recipe(state_dict: dict[str, torch.Tensor], bits: int) -> QuantRecipe | None:
    """The exact-grid preset when every transformer weight sits on the grid ``--bits`` implies, else None."""
    if bits not in QAT_PRESET_FOR_BITS:
        return None
    grid_name, preset = QAT_PRESET_FOR_BITS[bits]
    grid = GRIDS[grid_name]
    # Small tensors first: a non-QAT checkpoint is rejected after one cheap check.
    names = sorted((n for n, w in state_dict.items() if w.ndim == 2 and group_of(n) not in (None, "head")),
                   key=lambda n: state_dict[n].numel())
    for name in names:
        if state_dict[name].shape[-1] % 32 or grid.fit(state_dict[name]).off_grid:
            return None
    return load_recipe(preset) if names else None


def apply_grids_tflite(path: Path, plan, grids: dict[str, tuple[np.ndarray, np.ndarray]],
                       folded: Collection[str] = ()) -> dict[str, Any]:
    """Overwrite quantized int4 blockwise weights and their fp16 scales with the recovered grid.

    ai-edge-quantizer cannot take given scales, so the file it wrote is patched in place: buffers
    are shared by all signatures, so each is written once. The result is read back and compared.
    ``folded`` names the linear weights whose graph carries a block-sum correction for their
    negative scales (negative_scales.py); they are stored as q' = -q - 1 with |d|, and their
    corrections must be in the file unchanged.
    """
    from embg.quantize import tflite_flatbuffer as fb

    model = fb.read_model(path)
    patched: set[int] = set()
    stored: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for param, op, subgraph, tensor in _grid_tensors(model, plan):
        details = tensor.quantization.details if tensor.quantization else None
        block = block_size(*grids[param])
        if fb.type_name(tensor.type) != "INT4" or details is None or details.blockSize != block:
            raise ExportError(f"{param}: expected an INT4 block-{block} tensor to carry its exact grid")
        if param not in stored:
            stored[param] = litert_storage(op, *grids[param], folded=param in folded, name=param)
        q, scales = stored[param]
        if tensor.buffer not in patched:
            model.buffers[tensor.buffer].data = fb.pack_int4(q)
            scale_buffer = subgraph.tensors[details.scales].buffer
            model.buffers[scale_buffer].data = np.frombuffer(scales.astype(np.float16).tobytes(), np.uint8)
            patched.add(tensor.buffer)
    fb.write_model(model, path)
    model = fb.read_model(path)
    worst = 0.0
    checked: set[tuple[int, int]] = set()
    for param, _, subgraph, tensor in _grid_tensors(model, plan):
        # Signatures share buffers: read each (weights, scales) pair back once, but every pair any signature uses.
        pair = (tensor.buffer, subgraph.tensors[tensor.quantization.details.scales].buffer)
        if pair in checked:
            continue
        checked.add(pair)
        q, scales = stored[param]
        expected = q.astype(np.float32) * np.repeat(scales, block_size(q, scales), axis=1)
        worst = max(worst, float(np.abs(fb.dequantize(model, subgraph, tensor) - expected).max()))
    if worst > 0:
        raise ExportError(f"the planned int4 weights did not survive in the .tflite (max error {worst:g})")
    _check_corrections(model, {name: grids[name] for name in folded})
    blocks = sum(g[1].size for g in grids.values())
    negative = sum(int((grids[name][1] < 0).sum()) for name in stored)
    report = {"buffers_patched": len(patched), "exact": True, "blocks": int(blocks),
              "negative_scale_blocks": int(negative), "max_error_in_scales": 0.0}
    if folded:
        extra = sum(grids[name][1].size * 4 for name in folded)
        flipped = sum(int((grids[name][1] < 0).sum()) for name in folded)
        report["block_sum_corrections"] = {"weights": len(folded), "blocks": flipped, "float_bytes": int(extra)}
        report["note"] = (f"XNNPACK refuses negative block scales: in {len(folded)} linear weights the {flipped} "
                          "blocks with d < 0 are stored as q' = -q - 1 with scale |d|, and the graph adds |d| x the "
                          f"input's block sums in float ({extra / 1e6:.2f} MB); embedding tables keep their negative "
                          "scales (EMBEDDING_LOOKUP takes them): every weight is exact")
    return report


def litert_storage(op: str, q: np.ndarray, scales: np.ndarray, folded: bool, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(integers, block scales) to write for a grid: as they are for EMBEDDING_LOOKUP (not XNNPACK; takes any
    scale), positive (folded, negative_scales.py) for XNNPACK's FULLY_CONNECTED."""
    from embg.quantize.negative_scales import fold_block

    if op == "EMBEDDING_LOOKUP" or (scales > 0).all():  # calibrated grids: positive scales, any block size
        return q, scales
    if (scales < 0).any() and not folded:
        raise ExportError(f"{name}: negative block scales need the graph's block-sum correction on LiteRT")
    q_pos, positive, _ = fold_block(q, scales)
    return q_pos, positive


def _check_corrections(model, folded: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Every folded weight's float correction must be in the file, unquantized and bit-identical."""
    import hashlib

    from embg.quantize import tflite_flatbuffer as fb
    from embg.quantize.negative_scales import fold_block

    present = {use.digest for use in fb.weight_uses(model) if use.type == "FLOAT32"}
    for name, (q, scales) in folded.items():
        correction = fold_block(q, scales)[2]
        if hashlib.sha1(correction.tobytes()).hexdigest() not in present:
            raise ExportError(f"{name}: its block-sum correction is missing from the .tflite or was quantized")


def block_size(q: np.ndarray, scales: np.ndarray) -> int:
    """The block size of a grid: integers [rows, cols], scales [rows, cols/block]."""
    return q.shape[1] // scales.shape[1]


def _grid_tensors(model, plan):
    """(parameter, op name, subgraph, weight tensor) for every op the plan quantizes onto an exact grid."""
    from embg.quantize import tflite_flatbuffer as fb

    for (sg_index, op_index), (param, group, rule) in plan.expected.items():
        if rule.carries_grid:
            subgraph = model.subgraphs[sg_index]
            op = subgraph.operators[op_index]
            name = fb.op_name(model, op)
            yield param, name, subgraph, subgraph.tensors[int(op.inputs[fb.WEIGHT_OPS[name]])]
