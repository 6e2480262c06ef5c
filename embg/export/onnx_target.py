"""ONNX target: torch.onnx dynamo export at opset 21 with dynamic batch and sequence, then the recipe.

The dynamo exporter folds ``W.T`` into anonymous initializers (``t_3``, ``val_0``); weights get
their torch names back by value so recipes can address layer groups, and the quantizers name
their nodes after them.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from embg.errors import ExportError
from embg.bundle import INPUT_NAMES, OUTPUT_NAME
from embg.bundle.digest import array_digest
from embg.export.base import ExportJob, ExportTarget, TargetResult, register_target
from embg.export.completeness import check_onnx_file
from embg.model.graph import fusable_norms
from embg.quiet import captured_native_output

OPSET = 21
# Above this the weights go to one external .data file next to the .onnx (protobuf caps files at 2 GB).
EXTERNAL_DATA_BYTES = 1 << 30


def _quiet_exporter() -> None:
    warnings.filterwarnings("ignore")
    for name in ("torch.onnx", "torch.export", "torch._export", "torch.fx.experimental.symbolic_shapes",
                 "torch._dynamo", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)


def export_fp32(graph: torch.nn.Module, max_positions: int):
    """The ONNX ModelProto of ``graph`` (float32, or float16 for a half graph) with dynamic batch and sequence axes.

    The banded sliding layers compute their block count and padding from the symbolic length.
    ``backed_size_oblivious`` keeps torch.export from specialising those sizes on the sample
    (a block count of 1 vs 2, say), and deferred runtime asserts keep the symbolic shape
    arithmetic (ceil-divisions, a min) as graph nodes instead of unsolvable guards: one file
    serves every length from 1 to ``max_positions``.
    """
    import torch.fx.experimental._config as fx_config

    _quiet_exporter()
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("sequence", min=1, max=max_positions)
    ids = torch.full((2, 16), 5, dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    mask[1, 9:] = 0
    with fx_config.patch(backed_size_oblivious=True), fusable_norms(graph):
        program = torch.export.export(
            graph, (ids, mask), strict=False, prefer_deferred_runtime_asserts_over_guards=True,
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
        )
    onnx_program = torch.onnx.export(program, dynamo=True, opset_version=OPSET, verbose=False,
                                     input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME])
    return onnx_program.model_proto


def quantize_products(model, layers: int) -> dict[str, int]:
    """int8 scores and weighted values; every layer must have exactly one of each."""
    from embg.quantize.onnx_attention import quantize_attention_products

    counts = dict(quantize_attention_products(model))
    if counts != {"scores": layers, "values": layers}:
        raise ExportError(f"int8 attention products: expected {layers} score and {layers} value products, found {counts}")
    return counts


def restore_weight_names(model, graph: torch.nn.Module) -> dict[str, str]:
    """Rename folded 2-D initializers after the torch parameter they hold (as W or W.T); name their nodes."""
    from onnx import numpy_helper

    by_digest: dict[str, str] = {}
    for name, param in graph.state_dict().items():
        if param.ndim == 2:
            array = param.detach().numpy()
            by_digest.setdefault(array_digest(array), name)
            by_digest.setdefault(array_digest(array.T), name)
    renamed: dict[str, str] = {}
    present = {i.name for i in model.graph.initializer}
    for init in model.graph.initializer:
        if len(init.dims) != 2 or init.name in by_digest.values():
            continue
        param = by_digest.get(array_digest(numpy_helper.to_array(init)))
        if param and param not in present:
            renamed[init.name] = param
            present.add(param)
            init.name = param
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
                if node.op_type in ("MatMul", "Gather"):
                    node.name = f"{renamed[name]}/{node.op_type}"
                    uses[node.name] = uses.get(node.name, 0) + 1
                    if uses[node.name] > 1:  # a shared constant (the rotations' Hadamard block): one name per use
                        node.name += f"_{uses[node.name] - 1}"
    for node in model.graph.node:  # weights the exporter kept under their own name (the embedding)
        if node.op_type == "Gather" and node.input[0] in by_digest.values():
            node.name = f"{node.input[0]}/Gather"
    matrices = {n: p.detach().numpy() for n, p in graph.state_dict().items() if p.ndim == 2}
    # a tensor several modules share (the rotations' one Hadamard block) is one initializer under its first name
    exported_values = {array_digest(matrices[n]) for n in present if n in matrices}
    missing = [n for n, a in matrices.items() if n not in present and array_digest(a) not in exported_values]
    if missing:
        raise ExportError(f"ONNX export: could not find the exported copy of {missing[:3]}")
    return renamed


def strip_debug_info(model) -> None:
    """Drop the exporter's per-node metadata: stack traces with local paths, hundreds of KB on small models."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.metadata_props[:]
    model.doc_string = ""


def model_nbytes(model) -> int:
    return sum(len(init.raw_data) for init in model.graph.initializer)


def save_model(model, path: Path) -> list[str]:
    """Save ``model`` (external data when large); returns the file names written."""
    import onnx

    data_name = path.name + ".data"
    if model_nbytes(model) > EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        return [path.name, data_name]
    onnx.save_model(model, str(path))
    return [path.name]


def files_size(directory: Path, names: list[str]) -> int:
    return sum(os.path.getsize(directory / n) for n in names)


@register_target
class OnnxTarget(ExportTarget):
    name = "onnx"
    extension = ".onnx"
    runtime = "onnxruntime"
    accepted_options = frozenset({"web_compatible"})
    why_not = {"seq_lens": "an ONNX bundle takes any sequence length up to the model's positions (dynamic axes)"}
    # --bits 4: 6-bit weights where int4 costs most, within the same 185 MB (LiteRT has no 6-bit weights). On
    # the real checkpoint top-10 agreement 0.953 against int4's 0.930, the 35 built-in texts' cosine 0.9824 /
    # 0.9961 against 0.9826 / 0.9935; 247 ms against --bits 8's 281 at 256 tokens. docs/measurements.md.
    # --bits 8: as on LiteRT (embg/export/tflite_target.py): int8-rotated, 8 MB smaller and ~12% faster than int8
    # on the real checkpoint at the same floors; int8 where rotation does not tame the outliers.
    bits_presets = {4: "int4-rotated-int6", 8: "int8-rotated"}

    def export(self, job: ExportJob, bundle: Path) -> TargetResult:
        from embg.quantize.onnx_backend import op_counts, quantize_onnx_model, verify_quantized

        job.progress(f"exporting to ONNX (opset {OPSET}, dynamic batch and sequence)")
        graph = job.graph
        if job.recipe.is_fp16:
            from embg.model.fp16_safe import to_half

            job.progress("fp16 weights and activations (the fp16-safe graph in half precision)")
            graph = to_half(copy.deepcopy(job.graph))
        model = export_fp32(graph, job.model.spec.max_positions)
        restore_weight_names(model, graph)
        strip_debug_info(model)
        fp32_bytes = model_nbytes(model) * (2 if job.recipe.is_fp16 else 1)  # fp16: every weight at half size
        quant: dict[str, Any] = {}
        if job.recipe.is_fp16:  # bits 16 rules are not is_float: never into the int quantizer
            from embg.export.onnx_fp16 import check_fp16_compute

            quant["fp16"] = check_fp16_compute(model)
        elif any(not rule.is_float for rule in job.recipe.all_rules()):
            from embg.quantize.channel_peaks import float_channel_peaks

            peaks = float_channel_peaks(job, job.recipe.float_channels_on(self.name))
            job.progress(f"quantizing with recipe {job.recipe.name}")
            web = job.options.web_compatible
            with captured_native_output("onnxruntime quantization"):  # its log lines go to the root logger
                model, plan = quantize_onnx_model(model, job.recipe, job.grids, web_compatible=web, channel_peaks=peaks)
            quant["ops"] = verify_quantized(model, plan)
            if peaks:
                quant["float_channels"] = {"per_activation": job.recipe.float_channels_on(self.name),
                                           "calibration_texts": "built-in calibration set"}
            if job.grids:
                from embg.quantize.onnx_backend import verify_grids

                # only weights the plan kept on their grid (--web-compatible stores the embedding as int8 rows)
                quant["qat_grid"] = verify_grids(model, {w: g for w, g in job.grids.items() if w in plan.carried})
            quant["notes"] = plan.notes
            quantized_bytes = model_nbytes(model)
            if quantized_bytes >= fp32_bytes:
                raise ExportError(f"quantized weights ({quantized_bytes} B) are not smaller than fp32 ({fp32_bytes} B)")
        if job.recipe.attention_products == "int8":
            job.progress("attention products (scores, weighted values) in int8 with per-row scales")
            quant["attention_products"] = quantize_products(model, len(job.graph.layers))
        path = bundle / f"{job.stem}{self.extension}"
        files = save_model(model, path)
        # against the model, not the plan: every weight the recipe quantizes is integers in the written file
        check_onnx_file(path, job.graph, job.recipe)
        size = files_size(bundle, files)
        job.progress(f"wrote {path.name} ({size / 1e6:.1f} MB)")
        return TargetResult(
            model_file=path.name,
            files=files,
            manifest={
                "opset": OPSET,
                "inputs": [{"name": n, "dtype": "int64", "shape": ["batch", "sequence"]} for n in INPUT_NAMES],
                "outputs": [{"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", job.graph.output_dim]}],
                "dynamic_axes": {"batch": "any", "sequence": f"1..{job.model.spec.max_positions}"},
                "max_sequence_length": job.model.spec.max_positions,
                "size_bytes": size,
                "fp32_weight_bytes": fp32_bytes,
                "op_counts": dict(sorted(op_counts(model).items())),
                "quantization": quant,
            },
        )
