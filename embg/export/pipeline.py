"""From a request to a finished bundle: validate arguments, load strictly, convert, quantize,
check parity on the written file in its runtime, write the manifest; all atomically."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from embg.atomic import atomic_directory, check_writable_destination
from embg.errors import ExportError
from embg.export.artifact import Artifact, artifact_stem, copy_tokenizer, tool_versions, write_manifest
from embg.export.base import TARGETS, ExportJob
from embg.model.weights import weights_sha256
from embg.quantize.recipe import FP16_HINT, FP16_REASON, QuantRecipe

log = logging.getLogger(__name__)


def load_targets() -> None:
    """Import every target module so the registry is complete."""
    from embg.export import onnx_target  # noqa: F401

    try:
        from embg.export import tflite_target  # noqa: F401
    except ImportError:  # pragma: no cover - the tflite extra is not installed
        pass


@dataclass
class ExportRequest:
    model: str
    target: str
    recipe: QuantRecipe
    out: Path | None = None
    dim: int | None = None
    seq_lens: tuple[int, ...] = ()
    revision: str | None = None
    token: str | None = None
    parity: bool = True
    options: dict[str, Any] = field(default_factory=dict)


def export_bundle(request: ExportRequest, progress: Callable[[str], None] = lambda m: None) -> Path:
    """Write the bundle for ``request`` and return its directory."""
    from embg.model.load import load_model

    load_targets()
    refuse_fp16_options(request.options)
    target = TARGETS.get(request.target)
    target.check_request(request.recipe, request.seq_lens, request.options)
    if request.out is not None:
        check_writable_destination(request.out)
    started = time.perf_counter()
    progress(f"loading {request.model}")
    model = load_model(request.model, request.revision, request.token)
    recipe = request.recipe
    if request.options.get("auto_qat") and not recipe.uses_qat_grid:
        from embg.quantize.qat import detect_qat_recipe

        bits = {"int4": 4, "int8": 8}.get(recipe.name)
        detected = detect_qat_recipe(model.state_dict, bits) if bits else None
        if detected is not None:
            progress(f"every weight sits on the {'Q4_0' if bits == 4 else 'Q8_0'} QAT grid: using recipe "
                     f"{detected.name} (pass --recipe {recipe.name} for min-max)")
            recipe = detected
    graph = model.graph(request.dim)
    smoothing = None
    if recipe.smoothing:  # SmoothQuant scales folded in before conversion; the fp32 function stays the same
        from embg.quantize.smoothing import calibration_batches, smooth_graph

        progress(f"folding SmoothQuant scales (alpha {recipe.smoothing['alpha']}) into norms and weights")
        smoothing = smooth_graph(graph, calibration_batches(model.tokenizer), recipe.smoothing["alpha"])
    precision = {"required": "fp32", "reason": FP16_REASON}
    if recipe.fp16_safe:  # after smoothing: it rewrites the norms' (1 + w) form, which this replaces
        from embg.model.fp16_safe import fp16_safe_graph
        from embg.quantize.smoothing import calibration_batches

        progress(f"fp16-safe graph: residual x {recipe.fp16_safe['residual_scale']:g} folded into the norms, "
                 "RMSNorm restated; checking every intermediate on the calibration texts")
        precision = fp16_safe_graph(graph, recipe.fp16_safe["residual_scale"], calibration_batches(model.tokenizer))
        precision["file_activations"] = "fp16" if recipe.is_fp16 and target.name == "onnx" else "fp32"
    seq_lens = request.seq_lens or target.default_seq_lens(model.spec.max_positions)
    target.check_request(request.recipe, seq_lens, {**request.options, "max_positions": model.spec.max_positions})
    stem = artifact_stem(model.spec.model_id, target.name, recipe.name,
                         seq_lens[0] if len(seq_lens) == 1 else None)
    out = Path(request.out) if request.out is not None else Path.cwd() / stem
    options = dict(request.options)
    if recipe.uses_qat_grid:
        from embg.quantize.qat import recover_grids

        progress("recovering the QAT grid of every quantized weight")
        options["grids"], options["grid_report"] = recover_grids(model.state_dict, recipe,
                                                                 force=bool(options.get("force_grid")))
    job = ExportJob(model=model, graph=graph, recipe=recipe, stem=stem, seq_lens=seq_lens,
                    options=options, progress=progress)
    with atomic_directory(out) as bundle:
        result = target.export(job, bundle)
        tokenizer_files = copy_tokenizer(model.spec.directory, bundle)
        spec = model.spec
        manifest = {
            "model": {"id": spec.model_id, "revision": spec.revision, "weights_sha256": weights_sha256(spec)},
            "target": target.name,
            "runtime": target.runtime,
            "recipe": recipe.to_dict(),
            "model_file": result.model_file,
            "files": result.files,
            "embedding_dim": graph.output_dim,
            "full_dim": spec.output_dim,
            "matryoshka_dims": [d for d in spec.matryoshka_dims if d <= graph.output_dim],
            "prompts": spec.prompts,
            "tokenizer": {
                "files": tokenizer_files,
                "bos_id": int(model.tokenizer.backend.bos_token_id),
                "eos_id": int(model.tokenizer.backend.eos_token_id),
                "pad_id": model.tokenizer.pad_id,
                "adds_bos_eos": True,
                "padding_side": "right",
                "max_length": spec.max_seq_length,
            },
            **result.manifest,
            "qat_grid": _grid_summary(options.get("grid_report"), result.manifest),
            "smoothing": smoothing,
            # for apps choosing an accelerator: fp32 unless the graph was rewritten fp16-safe
            "activation_precision": precision,
            "tool_versions": tool_versions(),
            "export_seconds": None,
            "parity": None,
        }
        write_manifest(bundle, manifest)
        if request.parity:
            progress("checking parity of the written file in its runtime against sentence-transformers")
            manifest["parity"] = export_parity(Artifact.load(bundle), model)
            parity = manifest["parity"]
            progress(f"parity vs sentence-transformers ({parity['texts']} texts): cosine min "
                     f"{parity['cosine_min']:.6f}, mean {parity['cosine_mean']:.6f}, max |diff| "
                     f"{parity['max_abs_diff']:.2g}, NaN/inf rows {parity['nonfinite']}")
            if manifest["parity"]["nonfinite"]:
                raise ExportError(f"the exported model gives NaN/inf for {manifest['parity']['nonfinite']} text(s)")
        manifest["export_seconds"] = round(time.perf_counter() - started, 1)
        write_manifest(bundle, manifest)
    progress(f"bundle ready: {out}")
    return out


FP16_OPTIONS = ("fp16", "float16", "half", "keep_io_types", "precision")


def refuse_fp16_options(options: dict[str, Any]) -> None:
    """fp16 comes only from a recipe on the fp16-safe graph; an option asking for it is an error, never ignored."""
    asked = [key for key in FP16_OPTIONS if options.get(key) not in (None, False, "fp32", "float32")]
    if asked:
        raise ExportError(f"export option(s) {asked} would run fp16 activations and are refused: {FP16_REASON}; "
                          f"{FP16_HINT}")


def export_parity(artifact: Artifact, model) -> dict[str, Any]:
    """Cosine of the exported file (in its runtime) against sentence-transformers on the checkpoint."""
    import numpy as np

    from embg.runtimes import load_all, load_runtime
    from embg.runtimes.reference import SentenceTransformersReference
    from embg.validate.parity import embed_texts, summarize
    from embg.validate.texts import DOCUMENTS, QUERIES

    load_all()
    runtime = load_runtime(artifact.manifest["runtime"], artifact)
    reference = SentenceTransformersReference(model.spec.directory)
    ours, ref = [], []
    dim = artifact.embedding_dim if artifact.embedding_dim != model.spec.output_dim else None
    for texts, prompt in ((QUERIES, "query"), (DOCUMENTS, "document")):
        prompt = prompt if prompt in model.spec.prompts else None
        ours.append(embed_texts(runtime, model.tokenizer, texts, prompt))
        batch_limit = runtime.max_length or model.spec.max_seq_length
        prefixed = [model.tokenizer.prompt_text(prompt) + t for t in texts]
        reference.model.max_seq_length = min(batch_limit, model.spec.max_seq_length)
        ref.append(reference.encode(prefixed, dim=dim))
    summary = summarize(np.concatenate(ours), np.concatenate(ref)).to_dict()
    summary["runtime"] = runtime.version_info()
    summary["reference"] = reference.version_info()
    return summary


def _grid_summary(grid_report: dict[str, Any] | None, target_manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Per-group grid fit from the checkpoint, plus how exactly the target carried it."""
    if grid_report is None:
        return None
    carried = (target_manifest.get("quantization") or {}).get("qat_grid")
    return {**grid_report, "target": carried or {"exact": True}}
