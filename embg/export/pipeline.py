"""From a request to a finished bundle: validate arguments, load strictly, convert, quantize,
check parity on the written file in its runtime, write the manifest; all atomically."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from embg.atomic import atomic_directory, check_writable_destination
from embg.errors import EmbgError, ExportError
from embg.bundle import HASHES_FIELD, Artifact, Manifest, earlier_bundle_files, tool_versions
from embg.bundle.integrity import record_hashes
from embg.export.base import TARGETS, ExportJob, ExportTarget
from embg.export.bits_choice import bits_candidates, hold_check
from embg.export.bundle_files import artifact_stem, copy_tokenizer
from embg.export.options import FLAGS, ExportOptions
from embg.quantize.fit import grid_block_misfits
from embg.quantize.rotation import rotate_for
from embg.model.graph import EmbeddingGemmaGraph
from embg.model.weights import weights_sha256
from embg.quantize.recipe import FP16_REASON, QuantRecipe

log = logging.getLogger(__name__)

#: options only some targets take; the rest (force_grid, auto_qat) apply to every target
TARGET_OPTIONS = frozenset({"web_compatible"})


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
    options: ExportOptions | dict[str, Any] = field(default_factory=ExportOptions)  # a dict is parsed


def export_bundle(request: ExportRequest, progress: Callable[[str], None] = lambda m: None) -> Path:
    """Write the bundle for ``request`` and return its directory."""
    from embg.checkpoint.load import load_resolved
    from embg.checkpoint.resolve import resolve_model

    load_targets()
    options = ExportOptions.parse(request.options)
    target = TARGETS.get(request.target)
    check_options(target, options, request.seq_lens)
    target.check_request(request.recipe, request.seq_lens, None)
    if request.out is not None:
        check_writable_destination(request.out, earlier_bundle_files)
    started = time.perf_counter()
    progress(f"loading {request.model}")
    resolved = resolve_model(request.model, request.revision, request.token)
    if request.out is not None:
        check_not_over_model(Path(request.out), resolved.directory)
    model = load_resolved(resolved)
    recipe = request.recipe
    check_layers_named(recipe, int(model.spec.config["num_hidden_layers"]))
    if options.auto_qat and not recipe.uses_qat_grid:
        recipe = _qat_recipe_if_on_grid(model, recipe, progress)
    seq_lens = request.seq_lens or target.default_seq_lens(model.spec.max_positions)
    target.check_request(request.recipe, seq_lens, model.spec.max_positions)
    graph = model.graph(request.dim)
    bits_choice = bits_candidates(target, recipe, graph, progress) if options.auto_qat else None
    candidates = bits_choice.candidates if bits_choice else [recipe]
    for index, candidate in enumerate(candidates):  # every one checked now, not after an attempt's minutes
        check_layers_named(candidate, int(model.spec.config["num_hidden_layers"]))
        target.check_request(candidate, seq_lens, model.spec.max_positions)
        if index:  # the first one's directory is checked below, after its blocks
            _default_out(request, model, target, candidate, seq_lens)
    misfits = grid_block_misfits(candidates[0], graph)
    if misfits:
        more = f" (and {len(misfits) - 3} more)" if len(misfits) > 3 else ""
        raise ExportError(f"recipe {candidates[0].name}'s blocks do not fit this model's weights: "
                          f"{'; '.join(misfits[:3])}{more}. Choose a recipe whose block sizes divide every "
                          "weight's input columns, or edit its block_size")
    out = _default_out(request, model, target, candidates[0], seq_lens)
    check = hold_check(bits_choice, model, target, progress) if len(candidates) > 1 else None
    for index, candidate in enumerate(candidates):
        if index:  # the checkpoint's own graph again: the attempt before rotated and calibrated its copy
            graph = prepared = None  # let the attempt's graph (1.2 GB for the real model) go first
            graph = model.graph(request.dim)
        if index + 1 < len(candidates):  # on the graph as loaded, before the preferred preset rotates it
            check.measure_fallback(graph, candidates[index + 1])
        prepared = _prepare(candidate, model, graph, target, options, progress)
        if index + 1 == len(candidates):
            break
        shortfall = check.shortfall(prepared)
        if shortfall is None:
            break
        bits_choice.passed_over[candidate.name] = shortfall
        progress(f"--bits: recipe {shortfall}: using recipe {candidates[index + 1].name}")
    recipe, graph, grids = prepared.recipe, prepared.graph, prepared.grids
    if bits_choice:
        bits_choice.used = recipe.name
    if recipe is not candidates[0]:  # --bits chose another recipe: file names follow the recipe used
        out = _default_out(request, model, target, recipe, seq_lens)
    job = ExportJob(model=model, graph=graph, recipe=recipe, stem=_stem(model, target, recipe, seq_lens),
                    seq_lens=seq_lens, options=options, grids=grids, progress=progress)
    with atomic_directory(out, earlier_bundle_files, "bundle", progress) as bundle:
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
            # every file's sha256: validators and device runners refuse a bundle whose files changed
            HASHES_FIELD: record_hashes(bundle, [*result.files, *tokenizer_files]),
            "embedding_dim": graph.output_dim,
            "full_dim": spec.output_dim,
            "matryoshka_dims": [d for d in spec.matryoshka_dims if d <= graph.output_dim],
            "attention": graph.attention_manifest(),
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
            "qat_grid": _grid_summary(prepared.grid_report, result.manifest),
            "calibration": _calibration_summary(prepared.calibration, result.manifest),
            "smoothing": prepared.smoothing,
            "rotation": prepared.rotation,
            # --bits: the recipes tried in order (the target's preferred preset, then the generic one) and the one used
            "bits_choice": bits_choice.to_dict() if bits_choice else None,
            # for apps choosing an accelerator: fp32 unless the graph was rewritten fp16-safe
            "activation_precision": prepared.precision,
            "tool_versions": tool_versions(),
            "export_seconds": None,
            "parity": None,
        }
        Manifest(manifest).write(bundle)
        if request.parity:
            progress("checking parity of the written file in its runtime against sentence-transformers "
                     "(texts alone and in padded batches)")
            manifest["parity"] = parity = export_parity(Artifact.load(bundle), model)
            progress(parity_line(parity))
            if parity["nonfinite"] or parity["cosine_min"] is None:
                raise ExportError(f"the exported model gives NaN/inf for {parity['nonfinite']} text(s) "
                                  f"(worst mode: {parity['worst_mode']})")
        manifest["export_seconds"] = round(time.perf_counter() - started, 1)
        Manifest(manifest).write(bundle)
    progress(f"bundle ready: {out}")
    return out


@dataclass
class Prepared:
    """A recipe applied to a fresh graph before conversion: folded, rotated, grids recovered or calibrated."""
    recipe: QuantRecipe  # the recipe to export (calibrate() may have chosen its min-max counterpart)
    graph: EmbeddingGemmaGraph
    grids: dict[str, Any] | None = None
    grid_report: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    smoothing: dict[str, Any] | None = None
    rotation: dict[str, Any] | None = None
    precision: dict[str, Any] = field(default_factory=lambda: {"required": "fp32", "reason": FP16_REASON})


def _prepare(recipe: QuantRecipe, model, graph, target: ExportTarget, options: ExportOptions,
             progress: Callable[[str], None]) -> Prepared:
    if options.attention == "dense":  # the graph before banding: for benchmarks
        graph.band_block = None
    prepared = Prepared(recipe, graph)
    if recipe.smoothing:  # SmoothQuant scales folded in before conversion; the fp32 function stays the same
        from embg.quantize.smoothing import calibration_batches, smooth_graph

        progress(f"folding SmoothQuant scales (alpha {recipe.smoothing['alpha']}) into norms and weights")
        prepared.smoothing = smooth_graph(graph, calibration_batches(model.tokenizer), recipe.smoothing["alpha"])
    if recipe.fp16_safe:  # after smoothing: it rewrites the norms' (1 + w) form, which this replaces
        from embg.model.fp16_safe import fp16_safe_graph
        from embg.quantize.smoothing import calibration_batches

        progress(f"fp16-safe graph: residual x {recipe.fp16_safe['residual_scale']:g} folded into the norms, "
                 "RMSNorm restated; checking every intermediate on the calibration texts")
        prepared.precision = fp16_safe_graph(graph, recipe.fp16_safe["residual_scale"],
                                             calibration_batches(model.tokenizer))
        prepared.precision["file_activations"] = "fp16" if recipe.is_fp16 and target.name == "onnx" else "fp32"
    # before calibration: GPTQ and the table's scales fit the rotated weights
    prepared.rotation = rotation = rotate_for(graph, recipe, lambda: _calibration_batches(model), progress)
    if rotation:
        progress(f"rotating the q/k/v, o and gate/up inputs (Hadamard blocks of {rotation['block']})"
                 + _down_text(rotation) + (" and the embedding table" if rotation["table"] else ""))
    if recipe.uses_qat_grid:
        from embg.quantize.qat import recover_grids

        progress("recovering the QAT grid of every quantized weight")
        prepared.grids, prepared.grid_report = recover_grids(model.state_dict, recipe, force=options.force_grid)
    if recipe.is_calibrated:
        prepared.recipe, prepared.grids, prepared.calibration = calibrate(recipe, model, graph, options,
                                                                          prepared.grids, progress)
    return prepared


def _qat_recipe_if_on_grid(model, recipe: QuantRecipe, progress: Callable[[str], None]) -> QuantRecipe:
    """``--bits``: the -qat recipe when every weight sits on its grid, else ``recipe``."""
    from embg.quantize.qat import QAT_PRESET_FOR_BITS, detect_qat_recipe
    from embg.quantize.recipe import bits_of_preset

    bits = bits_of_preset(recipe.name)
    detected = detect_qat_recipe(model.state_dict, bits) if bits in QAT_PRESET_FOR_BITS else None
    if detected is None:
        return recipe
    progress(f"every weight sits on the {'Q4_0' if bits == 4 else 'Q8_0'} QAT grid: using recipe "
             f"{detected.name} (pass --recipe {recipe.name} for min-max)")
    return detected


def _stem(model, target: ExportTarget, recipe: QuantRecipe, seq_lens: tuple[int, ...]) -> str:
    """The bundle's file stem: <model>_<target>_<recipe>, with the bucket when there is one."""
    return artifact_stem(model.spec.model_id, target.name, recipe.name, seq_lens[0] if len(seq_lens) == 1 else None)


def _default_out(request: ExportRequest, model, target: ExportTarget, recipe: QuantRecipe,
                 seq_lens: tuple[int, ...]) -> Path:
    """--out, or ./<model>_<target>_<recipe>, checked writable and not over the checkpoint."""
    if request.out is not None:
        return Path(request.out)
    out = Path.cwd() / _stem(model, target, recipe, seq_lens)
    check_writable_destination(out, earlier_bundle_files)
    check_not_over_model(out, model.spec.directory)
    return out


def _calibration_batches(model) -> list:
    from embg.quantize.calibration_texts import batches_for, calibration_split

    return batches_for(model.tokenizer, calibration_split()[0])


def _down_text(rotation: dict[str, Any]) -> str:
    if "down_layers" not in rotation:
        return ", down_proj's input" if rotation["down"] else ""
    layers = rotation["down_layers"]
    return f", down_proj's input in {len(layers)} of {len(rotation['down_guard']['error_ratio'])} layers (measured)"


def check_layers_named(recipe: QuantRecipe, layer_count: int) -> None:
    """A recipe's ``layer_rules`` must name layers the model has (a typo would silently change nothing)."""
    missing = sorted(layer for layer in recipe.layers_named() if layer >= layer_count)
    if missing:
        raise ExportError(f"recipe {recipe.name}: layer_rules name layer(s) {missing}, and this model has "
                          f"{layer_count} decoder layers (0-{layer_count - 1}); fix the recipe's layer ranges")


def calibrate(recipe: QuantRecipe, model, graph, options: ExportOptions, grids: dict[str, Any] | None,
              progress: Callable[[str], None]) -> tuple[QuantRecipe, dict[str, Any] | None, dict[str, Any]]:
    """The recipe to export, the grids to carry (``grids`` plus the calibrated ones) and the calibration report.

    From ``--bits 4`` (``auto_qat``) the calibrated recipe is kept only when it measures better than
    its min-max counterpart on held-out texts (embg/quantize/int4_choice.py), and the reason is printed.
    """
    from embg.quantize.calibrate import calibrate_grids
    from embg.quantize.calibration_texts import batches_for, calibration_split

    calibration, held_out = calibration_split()
    progress(f"calibrating recipe {recipe.name} on {len(calibration)} built-in texts (prose, code and queries "
             "in many languages)")
    calibrated, report = calibrate_grids(graph, recipe, batches_for(model.tokenizer, calibration), progress)
    if not report.get("cached"):
        progress(f"calibration took {report['seconds']:.0f} s")
    if options.auto_qat:
        from embg.quantize.int4_choice import choose_int4

        choice = choose_int4(graph, recipe, calibrated, batches_for(model.tokenizer, held_out))
        report["choice"] = choice.to_dict()
        if choice.recipe is not recipe:
            progress(f"--bits 4: min-max measured better than calibration ({choice.reason}): using recipe "
                     f"{choice.recipe.name}")
            return choice.recipe, grids, {**report, "used": False}
        progress(f"--bits 4: not a QAT checkpoint, calibrated {recipe.name} measured better than min-max "
                 f"({choice.reason}): using recipe {recipe.name}")
    return recipe, {**(grids or {}), **calibrated}, report


def check_options(target: ExportTarget, options: ExportOptions, seq_lens: tuple[int, ...]) -> None:
    """Each target takes its own options (ExportTarget.accepted_options); any other is refused, naming
    the targets that take it, before any work."""
    asked = (options.asked() & TARGET_OPTIONS) | ({"seq_lens"} if seq_lens else set())
    for name in sorted(asked - target.accepted_options):
        takers = [t for t in TARGETS.names() if name in TARGETS.get(t).accepted_options]
        flag = f"{FLAGS[name]} {','.join(map(str, seq_lens))}" if name == "seq_lens" else FLAGS[name]
        reason = target.why_not.get(name)
        raise EmbgError(f"{flag} applies to the {' and '.join(takers)} target only" + (f": {reason}" if reason else ""))


def check_not_over_model(out: Path, model_dir: Path) -> None:
    """--out equal to or above the checkpoint directory would replace the checkpoint itself."""
    out, model_dir = Path(out).resolve(), Path(model_dir).resolve()
    if out == model_dir or out in model_dir.parents:
        raise EmbgError(f"--out {out} is the checkpoint directory or one above it ({model_dir}); writing the bundle "
                        "there would replace the checkpoint: choose another --out")


def export_parity(artifact: Artifact, model) -> dict[str, Any]:
    """The written file in its runtime against sentence-transformers on the checkpoint: the one parity
    path (embg.parity) on the 16 built-in queries and documents, alone and in padded batches."""
    from embg.model.tokenizer import EmbedTokenizer
    from embg.runtimes import load_all, load_runtime
    from embg.runtimes.reference import SentenceTransformersReference
    from embg.parity.path import PromptedText, measure_parity, reference_embeddings
    from embg.textdata.builtin import DOCUMENTS, QUERIES

    load_all()
    texts = [PromptedText(text, task if task in model.spec.prompts else "")
             for batch, task in ((QUERIES, "query"), (DOCUMENTS, "document")) for text in batch]
    # the bundle's own tokenizer files, as a device reads them (copies of the checkpoint's)
    tokenizer = EmbedTokenizer(artifact.directory, model.spec.prompts, model.spec.max_seq_length)
    runtime = load_runtime(artifact.manifest["runtime"], artifact)
    try:
        reference = SentenceTransformersReference(model.spec.directory)
        dim = artifact.embedding_dim if artifact.embedding_dim != model.spec.output_dim else None
        limit = min(runtime.max_length or model.spec.max_seq_length, model.spec.max_seq_length)
        ref = reference_embeddings(reference, model.tokenizer, texts, limit, dim)
        summary = measure_parity(runtime, tokenizer, texts, ref).to_dict()
        summary["runtime"] = runtime.version_info()
    finally:
        runtime.close()
    summary["reference"] = reference.version_info()
    return summary


def parity_line(parity: dict[str, Any]) -> str:
    """One progress line: the worst over the modes, each mode's minimum, alone vs batched."""
    def fmt(value: float | None, pattern: str = "{:.6f}") -> str:
        return "NaN" if value is None else pattern.format(value)

    modes = ", ".join(f"{mode} {fmt(m['cosine_min'])}" for mode, m in parity["modes"].items())
    return (f"parity vs sentence-transformers ({parity['texts']} texts): cosine min {fmt(parity['cosine_min'])}, "
            f"mean {fmt(parity['cosine_mean'])} (worst mode {parity['worst_mode']}; min per mode: {modes}), "
            f"max |diff| {fmt(parity['max_abs_diff'], '{:.2g}')}, NaN/inf rows {parity['nonfinite']}; "
            f"alone vs batched cosine min {fmt(parity['batch_consistency_min'])}")


def _calibration_summary(report: dict[str, Any] | None, target_manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The calibration report; when its grids were used, with how exactly the target carried them."""
    if report is None or report.get("used") is False:
        return report
    return _grid_summary({**report, "used": True}, target_manifest)


def _grid_summary(grid_report: dict[str, Any] | None, target_manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Per-group grid fit from the checkpoint (or the calibration report), plus how exactly the target carried it."""
    if grid_report is None:
        return None
    carried = (target_manifest.get("quantization") or {}).get("qat_grid")
    return {**grid_report, "target": carried or {"exact": True}}
