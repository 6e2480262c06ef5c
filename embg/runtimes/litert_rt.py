"""LiteRT: ai-edge-litert's CompiledModel API (default) or its Interpreter (XNNPACK on CPU), or the
older tflite-runtime package on boards that only have that. Picks the smallest bucket per text.

Memory: XNNPACK packs a bundle's weights once per signature subgraph, so a seven-bucket int4 file
costs ~7 x 73 MB of packed weights (measured: 561 MB anonymous RSS). The CompiledModel API takes an
XNNPACK weight-cache file instead: one packed copy shared by every signature, mmapped (69 MB
anonymous, same outputs and latency). One entry per model file, checked before use and pruned:
embg/runtimes/weight_cache.py. The Interpreter API has no such option.

Rows run one by one, each in the smallest signature that holds its own tokens (up to its last
unmasked column), not the batch's width: a short query batched with a 2048-token document runs in
the 32 bucket, as it does alone. That is faster, and it keeps an embedding independent of its batch:
XNNPACK's float kernels round differently in a wider signature (cosine 1 - 6e-13 in fp32), and the
int8 activation rounding turns that into a different quantization noise (alone vs batched 0.9977
on the real checkpoint's int4 file before this rule; docs/onnx-int8.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from embg.errors import EmbgError
from embg.bundle import OUTPUT_NAME, Artifact, fit_to, rows_by_bucket
from embg.quiet import quiet_native
from embg.runtimes import weight_cache
from embg.runtimes.base import RUNTIMES, Runtime, truncate_to

log = logging.getLogger(__name__)


def make_interpreter(path: Path, threads: int | None = None):
    """(Interpreter, package name): ai-edge-litert when installed, else tflite-runtime."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        package = "ai-edge-litert"
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter

            package = "tflite-runtime"
        except ImportError:
            raise EmbgError("no LiteRT runtime installed: pip install ai-edge-litert (or tflite-runtime)") from None
    try:
        return Interpreter(model_path=str(path), num_threads=threads or None), package
    except Exception as exc:  # the interpreter raises ValueError/RuntimeError for unloadable files
        raise EmbgError(f"LiteRT cannot load {Path(path).name}: {exc}") from exc


def compiled_api_available() -> bool:
    try:
        from ai_edge_litert.compiled_model import CompiledModel  # noqa: F401
        from ai_edge_litert.cpu_options import CpuOptions

        return "xnnpack_weight_cache_path" in getattr(CpuOptions, "__dataclass_fields__", {})
    except ImportError:
        return False


def weight_cache_file(artifact: Artifact) -> Path | None:
    """The XNNPACK weight-cache entry for this bundle's model file (None when EMBG_XNNPACK_CACHE=off).

    Keyed by the model file's sha256 as verified against the manifest (no rehash of a file the
    bundle check just hashed) and the LiteRT version: a changed file gets a new entry.
    """
    root = weight_cache.cache_dir()
    if root is None:
        return None
    root.mkdir(parents=True, exist_ok=True)
    return weight_cache.entry_path(root, artifact.file_sha256(artifact.manifest["model_file"]))


FP16_REFUSAL = ("the LiteRT GPU accelerator computes in fp16 unless told otherwise, and EmbeddingGemma's activations "
                "overflow fp16 (residual channels reach ~1e5 > 65504: NaN/inf embeddings); pass precision='fp32' "
                "(GpuOptions enforce_f32), or export the fp16-safe graph (--bits 16, or a recipe with \"fp16_safe\")")
PRECISIONS = (None, "fp32", "fp16")


def fp16_safe_bundle(artifact: Artifact) -> bool:
    """The manifest says the graph was rewritten fp16-safe at export (activation_precision.required)."""
    return (artifact.manifest.get("activation_precision") or {}).get("required") == "fp16-safe"


def check_accelerator(accelerator: str, precision: str | None, fp16_safe: bool = False) -> None:
    """Refuse any accelerator setting that would run fp16 activations on a bundle not exported fp16-safe."""
    if accelerator not in ("cpu", "gpu"):
        raise EmbgError(f"unknown LiteRT accelerator {accelerator!r}; use cpu or gpu")
    if precision not in PRECISIONS:
        raise EmbgError(f"unknown LiteRT precision {precision!r}; use fp32 or fp16")
    if not fp16_safe and precision == "fp16":
        raise EmbgError(f"LiteRT precision 'fp16' is refused for this bundle (not exported fp16-safe). {FP16_REFUSAL}")
    if not fp16_safe and accelerator == "gpu" and precision != "fp32":
        raise EmbgError(f"accelerator=gpu without precision='fp32' is refused: {FP16_REFUSAL}")
    if accelerator == "cpu" and precision == "fp16":
        raise EmbgError("precision 'fp16' applies to accelerator=gpu; LiteRT's CPU path computes in float32")


@RUNTIMES.register("litert")
class LiteRtRuntime(Runtime):
    name = "litert"
    target = "tflite"

    def __init__(self, artifact: Artifact, threads: int | None = None, api: str = "auto",
                 accelerator: str = "cpu", precision: str | None = None) -> None:
        check_accelerator(accelerator, precision, fp16_safe_bundle(artifact))
        artifact.verify()  # a damaged .tflite can crash LiteRT: check it before LiteRT sees it
        if api == "auto":  # CompiledModel (shared weight cache) when this ai-edge-litert has it
            api = "compiled" if compiled_api_available() else "interpreter"
        if accelerator == "gpu" and api != "compiled":
            raise EmbgError("accelerator=gpu needs api='compiled' (the CompiledModel API)")
        self.accelerator = accelerator
        self.precision = precision or ("fp32" if accelerator == "cpu" else "fp16")  # the GPU's default is fp16
        self.signatures = {int(s["seq_len"]): s["name"] for s in artifact.manifest["signatures"]}
        self.buckets = sorted(self.signatures)
        self.threads = threads
        self.dim = artifact.embedding_dim
        self.api = api
        self.weight_cache: Path | None = None
        self.last_bucket: int | None = None
        self._environment_made = False
        if api == "interpreter":
            with quiet_native("LiteRT"):
                self.interpreter, self.package = make_interpreter(artifact.model_path, threads)
                self._runners = {name: self.interpreter.get_signature_runner(name)
                                 for name in self.signatures.values()}
        elif api == "compiled":
            self.weight_cache = weight_cache_file(artifact) if accelerator == "cpu" else None
            model_sha256 = artifact.file_sha256(artifact.manifest["model_file"])
            try:
                with quiet_native("LiteRT"):
                    self._compiled = self._load_compiled(artifact.model_path, threads, accelerator,
                                                         self.weight_cache, model_sha256,
                                                         enforce_f32=precision == "fp32")
            except EmbgError:
                raise
            except Exception as exc:  # noqa: BLE001 - LiteRT raises RuntimeError/ValueError for unloadable files
                raise EmbgError(f"LiteRT cannot load {artifact.model_path.name}: {exc}") from exc
            self.package = "ai-edge-litert"
        else:
            raise EmbgError(f"unknown LiteRT api {api!r}; use interpreter or compiled")

    @staticmethod
    def _load_compiled(path: Path, threads: int | None, accelerator: str = "cpu", cache: Path | None = None,
                       model_sha256: str = "", enforce_f32: bool = True):
        try:
            from ai_edge_litert.compiled_model import CompiledModel
            from ai_edge_litert.cpu_options import CpuOptions
            from ai_edge_litert.gpu_options import GpuOptions
            from ai_edge_litert.hardware_accelerator import HardwareAccelerator
            from ai_edge_litert.options import Options
        except ImportError:
            raise EmbgError("this ai-edge-litert has no CompiledModel API; use --api interpreter") from None
        if accelerator == "gpu":  # check_accelerator allowed fp16 (enforce_f32 False) only on an fp16-safe bundle
            options = Options(hardware_accelerators=HardwareAccelerator.GPU,
                              gpu_options=GpuOptions(enforce_f32=enforce_f32))
            return CompiledModel.from_file(str(path), options=options)

        def load(cache_path: str) -> Any:
            cpu = CpuOptions(num_threads=threads or 1, xnnpack_weight_cache_path=cache_path)
            return CompiledModel.from_file(str(path), options=Options(hardware_accelerators=HardwareAccelerator.CPU,
                                                                      cpu_options=cpu))

        if cache is None:
            return load("")
        if cache.exists() or weight_cache.sidecar(cache).exists():
            if weight_cache.usable(cache, model_sha256):
                try:
                    model = load(str(cache))
                    weight_cache.mark_used(cache)
                    return model
                except Exception as exc:  # noqa: BLE001 - a cache XNNPACK refuses is rebuilt
                    log.warning("XNNPACK weight cache %s unusable (%s); rebuilding it", cache, exc)
            else:
                log.info("XNNPACK weight cache %s does not match its record; rebuilding it", cache.name)
            weight_cache.discard(cache)
        # Built under a private name and renamed once packed: a concurrent process never sees half a file.
        partial = cache.with_name(f"{cache.name}.partial-{os.getpid()}")
        partial.unlink(missing_ok=True)
        model = load(str(partial))
        if partial.is_file():
            os.replace(partial, cache)
            weight_cache.seal(cache, model_sha256)
            weight_cache.prune(cache.parent, keep=cache)
        return model

    @property
    def max_length(self) -> int:
        return self.buckets[-1]

    def _run_one(self, name: str, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.api == "interpreter":
            return self._runners[name](input_ids=ids, attention_mask=mask)[OUTPUT_NAME]
        if not self._environment_made:  # the first buffer write creates a LiteRT environment, which logs
            with quiet_native("LiteRT"):
                out = self._run_compiled(name, ids, mask)
            self._environment_made = True
            return out
        return self._run_compiled(name, ids, mask)

    def _run_compiled(self, name: str, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        model = self._compiled
        inputs = {"input_ids": model.create_input_buffer_by_name(name, "input_ids"),
                  "attention_mask": model.create_input_buffer_by_name(name, "attention_mask")}
        inputs["input_ids"].write(ids)
        inputs["attention_mask"].write(mask)
        output = model.create_output_buffer_by_name(name, OUTPUT_NAME)
        model.run_by_name(name, inputs, {OUTPUT_NAME: output})
        return output.read(ids.shape[0] * self.dim, np.float32).reshape(ids.shape[0], self.dim)

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        input_ids, attention_mask = truncate_to(input_ids, attention_mask, self.max_length)
        input_ids = np.asarray(input_ids, dtype=np.int32)
        attention_mask = np.asarray(attention_mask, dtype=np.int32)
        if not len(input_ids):
            return np.zeros((0, 0), np.float32)
        out = np.zeros((len(input_ids), self.dim), np.float32)
        groups = rows_by_bucket(self.buckets, attention_mask)
        for bucket, rows in groups.items():
            ids, mask = fit_to(input_ids[rows], attention_mask[rows], bucket)
            for i, row in enumerate(rows):
                out[row] = self._run_one(self.signatures[bucket], ids[i:i + 1], mask[i:i + 1])[0]
        self.last_bucket = max(groups)
        return out

    def close(self) -> None:
        """Release the model (LiteRT logs as it destroys its accelerators: kept quiet like the load)."""
        with quiet_native("LiteRT"):
            self._compiled = None
            self._runners = {}
            self.interpreter = None

    def version_info(self) -> dict[str, Any]:
        from importlib import metadata

        try:
            version = metadata.version(self.package)
        except metadata.PackageNotFoundError:
            version = "unknown"
        return {"runtime": self.name, "package": self.package, "version": version, "api": self.api,
                "delegate": "XNNPACK" if self.api == "interpreter" else f"CompiledModel {self.accelerator.upper()}",
                "threads": self.threads, "precision": self.precision, "xnnpack_weight_cache": str(self.weight_cache) if self.weight_cache else None}
