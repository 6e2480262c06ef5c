"""ONNX Runtime (CPU execution provider by default; others by name, reported when unavailable)."""

from __future__ import annotations

from typing import Any

import numpy as np

from embg.errors import EmbgError
from embg.bundle import OUTPUT_NAME, Artifact
from embg.runtimes.base import RUNTIMES, Runtime, truncate_to


@RUNTIMES.register("onnxruntime")
class OnnxRuntime(Runtime):
    name = "onnxruntime"
    target = "onnx"

    def __init__(self, artifact: Artifact, threads: int | None = None, provider: str = "CPUExecutionProvider") -> None:
        import onnxruntime as ort

        artifact.verify()  # checked before ONNX Runtime parses it
        available = ort.get_available_providers()
        if provider not in available:
            raise EmbgError(f"ONNX Runtime provider {provider} is not available here; available: {', '.join(available)}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(artifact.model_path), options, providers=[provider])
        except Exception as exc:  # ORT raises its own exception types for bad/unsupported models
            raise EmbgError(f"ONNX Runtime cannot load {artifact.model_path.name}: {exc}") from exc
        self.provider = provider
        self.threads = threads
        self._max = int(artifact.manifest.get("max_sequence_length") or 2048)

    @property
    def max_length(self) -> int:
        return self._max

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        input_ids, attention_mask = truncate_to(input_ids, attention_mask, self._max)
        feeds = {"input_ids": np.asarray(input_ids, dtype=np.int64),
                 "attention_mask": np.asarray(attention_mask, dtype=np.int64)}
        (out,) = self.session.run([OUTPUT_NAME], feeds)
        return np.asarray(out, dtype=np.float32)

    def version_info(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"runtime": self.name, "onnxruntime": ort.__version__, "provider": self.provider,
                "threads": self.threads}
