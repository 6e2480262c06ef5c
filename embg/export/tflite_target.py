"""TFLite/LiteRT target: one .tflite with one signature per sequence bucket (weights shared).

litert-torch has no dynamic sequence length, so each bucket is a fixed-shape signature; apps
pick the smallest bucket that fits (the manifest lists them). Inputs are int32 [1, L].
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from embg.errors import EmbgError, ExportError
from embg.bundle import INPUT_NAMES, OUTPUT_NAME
from embg.export.base import ExportJob, ExportTarget, TargetResult, register_target
from embg.export.completeness import check_float_terms_tflite, check_tflite_file
from embg.quantize.recipe import SIX_BIT_REASON, QuantRecipe
from embg.quantize.tflite_flatbuffer import strip_tensor_names
from embg.quiet import captured_native_output

DEFAULT_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048)  # 32: prompted queries are ~10-30 tokens
MIN_BUCKET = 8


def signature_name(seq_len: int) -> str:
    return f"seq{seq_len}"


def check_buckets(seq_lens: tuple[int, ...], max_positions: int) -> None:
    if not seq_lens:
        raise EmbgError("--seq-lens needs at least one bucket")
    if list(seq_lens) != sorted(set(seq_lens)):
        raise EmbgError(f"--seq-lens must be strictly increasing without duplicates, got {list(seq_lens)}")
    if seq_lens[0] < MIN_BUCKET:
        raise EmbgError(f"--seq-lens: buckets must be at least {MIN_BUCKET} tokens (BOS, EOS and a prompt)")
    if seq_lens[-1] > max_positions:
        raise EmbgError(f"--seq-lens: {seq_lens[-1]} exceeds the model's {max_positions} positions")


class NamedOutput(torch.nn.Module):
    """litert-torch names signature outputs after the keys of a returned dict."""

    def __init__(self, graph: torch.nn.Module) -> None:
        super().__init__()
        self.embedder = graph

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {OUTPUT_NAME: self.embedder(input_ids, attention_mask)}


#: Query blocks of every dense attention product in a LiteRT file: two keep q x k^T a BATCH_MATMUL that XNNPACK
#: runs fast, where one became a dynamic-weight FULLY_CONNECTED (embg/model/attention.py, split_dense_attention).
DENSE_QUERY_BLOCKS = 2


@contextlib.contextmanager
def split_dense_products(graph: torch.nn.Module, blocks: int = DENSE_QUERY_BLOCKS) -> Iterator[None]:
    """Every attention module of ``graph`` splits its dense products into ``blocks`` query blocks meanwhile."""
    modules = [m for m in graph.modules() if hasattr(m, "dense_query_blocks")]
    saved = [m.dense_query_blocks for m in modules]
    for module in modules:
        module.dense_query_blocks = blocks
    try:
        yield
    finally:
        for module, value in zip(modules, saved):
            module.dense_query_blocks = value


def convert_float(graph: torch.nn.Module, seq_lens: tuple[int, ...], path: Path) -> None:
    with captured_native_output("litert-torch import"):  # absl/oneDNN/torchao banners on import
        import litert_torch

    warnings.filterwarnings("ignore")
    for name in ("litert_torch", "torch.export", "jax", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    named = NamedOutput(graph).eval()
    converter = None
    with split_dense_products(graph):
        for seq_len in seq_lens:
            sample = {"input_ids": torch.zeros((1, seq_len), dtype=torch.int32),
                      "attention_mask": torch.ones((1, seq_len), dtype=torch.int32)}
            name = signature_name(seq_len)
            converter = (litert_torch.signature(name, named, sample_kwargs=sample) if converter is None
                         else converter.signature(name, named, sample_kwargs=sample))
        with captured_native_output("litert-torch"):
            converter.convert().export(str(path))


def check_signatures(path: Path, seq_lens: tuple[int, ...], dim: int) -> None:
    """The written file must expose exactly the planned signatures and I/O names."""
    from embg.runtimes.litert_rt import make_interpreter

    interpreter, _ = make_interpreter(path, threads=1)
    found = interpreter.get_signature_list()
    for seq_len in seq_lens:
        entry = found.get(signature_name(seq_len))
        if entry is None or sorted(entry["inputs"]) != sorted(INPUT_NAMES) or entry["outputs"] != [OUTPUT_NAME]:
            raise ExportError(f"converted file lacks signature {signature_name(seq_len)} with inputs "
                              f"{list(INPUT_NAMES)} and output {OUTPUT_NAME}: {found}")


@register_target
class TfliteTarget(ExportTarget):
    name = "tflite"
    extension = ".tflite"
    runtime = "litert"

    accepted_options = frozenset({"seq_lens"})
    # --bits 8: rotated inputs need neither float channels nor down_proj's second pass. On the real checkpoint
    # the same floors as int8 (top-10 0.986), 9 MB smaller and ~11% faster at 256 tokens; int8 where rotation
    # does not tame the outliers (embg/export/bits_choice.py). docs/measurements.md.
    bits_presets = {8: "int8-rotated"}

    def check_request(self, recipe: QuantRecipe, seq_lens: tuple[int, ...], max_positions: int | None) -> None:
        if any(rule.bits == 6 for rule in recipe.all_rules()):
            raise ExportError(f"recipe {recipe.name} has bits 6 weights, which --target tflite cannot carry: "
                              f"{SIX_BIT_REASON}. Export it with --target onnx, or use a recipe with bits 4 or 8 "
                              "(--bits 4 for LiteRT)")
        if seq_lens:
            check_buckets(seq_lens, max_positions or 2048)

    def default_seq_lens(self, max_positions: int) -> tuple[int, ...]:
        return tuple(b for b in DEFAULT_BUCKETS if b <= max_positions) or (max_positions,)

    @staticmethod
    def _fold_negative_scales(job: ExportJob) -> list[str]:
        """Grids with negative block scales (Q4_0) get their exact positive-scale form in the graph (in place)."""
        if not job.grids:
            return []
        from embg.quantize.negative_scales import fold_negative_scales

        folded = fold_negative_scales(job.graph, job.grids)
        if folded["weights"]:
            job.progress(f"{len(folded['weights'])} linear weights have negative Q4_0 block scales, which XNNPACK "
                         f"refuses: stored with |d| plus a float block-sum correction "
                         f"({folded['correction_bytes'] / 1e6:.2f} MB) so the grid stays exact")
        return folded["weights"]

    def _split_activations(self, job: ExportJob) -> dict[str, Any] | None:
        """The recipe's float channels and residual passes as graph ops around XNNPACK's int8 products
        (in place; the float function is unchanged): embg/quantize/litert_split.py."""
        recipe = job.recipe
        count, passes = recipe.float_channels_on(self.name), recipe.residual_pass_on(self.name)
        if recipe.is_float or recipe.is_fp16 or not (count or passes):
            return None
        from embg.quantize.channel_peaks import float_channel_peaks
        from embg.quantize.litert_split import split_activations

        peaks = float_channel_peaks(job, count)
        split = split_activations(job.graph, peaks, count, passes, lambda name: recipe.rule_for(name).is_integer,
                                  job.grids)
        said = []
        if count:
            said.append(f"{split['layers_with_float_channels']} layers keep {count} input channels float "
                        f"({split['float_channel_bytes'] / 1e6:.1f} MB)")
        if passes:
            said.append(f"{split['layers_with_residual_pass']} quantize their input twice ({', '.join(passes)})")
        job.progress(f"activations split around XNNPACK's int8 rows: {'; '.join(said)}")
        calibration = {"calibration_texts": "built-in calibration set"} if count else {}
        return {"float_channels_per_activation": count, **calibration, "residual_pass": list(passes),
                **split}

    def export(self, job: ExportJob, bundle: Path) -> TargetResult:
        from embg.quantize.tflite_backend import quantize_tflite, verify_quantized

        seq_lens = job.seq_lens
        path = bundle / f"{job.stem}{self.extension}"
        float_path = bundle / f".{job.stem}.float.tflite"
        folded = self._fold_negative_scales(job)
        split = self._split_activations(job)
        job.progress(f"converting with litert-torch: {len(seq_lens)} signature(s) {list(seq_lens)}")
        convert_float(job.graph, seq_lens, float_path)
        float_bytes = float_path.stat().st_size  # as converted, names included: the honest baseline
        quant: dict[str, Any] = {}
        if job.recipe.is_float:
            float_path.replace(path)
        else:
            job.progress(f"quantizing with ai-edge-quantizer, recipe {job.recipe.name}")
            with captured_native_output("ai-edge-quantizer"):
                plan = quantize_tflite(float_path, path, job.graph, job.recipe)
            quant["tensors"] = verify_quantized(path, plan)
            quant["notes"] = dict(plan.notes)
            if job.recipe.attention_products != "fp32":
                quant["notes"]["attention_products"] = ("kept fp32: LiteRT has no dynamic int8 product of two "
                                                        "activations (scores, weighted values)")
            if split:
                quant["activation_split"] = split
            for group, note in quant["notes"].items():
                job.progress(f"note: {group}: {note}")
            if job.grids:
                from embg.quantize.qat import apply_grids_tflite

                quant["qat_grid"] = apply_grids_tflite(path, plan, job.grids, folded)
            float_path.unlink()
            if path.stat().st_size >= float_bytes:
                raise ExportError(f"quantized file ({path.stat().st_size} B) is not smaller than float ({float_bytes} B)")
        strip_tensor_names(path)
        check_signatures(path, seq_lens, job.graph.output_dim)
        if not job.recipe.is_float:  # against the model, not the plan: no required weight left in float
            check_tflite_file(path, job.graph, job.recipe, {param for param, _, _ in plan.expected.values()})
            check_float_terms_tflite(path, job.graph)  # and the float terms the export added still float
        size = path.stat().st_size
        job.progress(f"wrote {path.name} ({size / 1e6:.1f} MB)")
        return TargetResult(
            model_file=path.name,
            files=[path.name],
            manifest={
                "inputs": [{"name": n, "dtype": "int32", "shape": [1, "bucket"]} for n in INPUT_NAMES],
                "outputs": [{"name": OUTPUT_NAME, "dtype": "float32", "shape": [1, job.graph.output_dim]}],
                "signatures": [{"name": signature_name(s), "seq_len": s, "batch": 1,
                                "sliding": "dense" if job.graph.band_layout(s) is None else "banded"}
                               for s in seq_lens],
                "max_sequence_length": seq_lens[-1],
                "size_bytes": size,
                "float_file_bytes": float_bytes,
                "quantization": quant,
            },
        )
