"""The reference: sentence-transformers on the original checkpoint directory.

This is what users compare against, so parity is always measured against it (never against
embg's own re-authored graph).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embg.errors import EmbgError


class SentenceTransformersReference:
    """sentence-transformers' full pipeline (Transformer, Pooling, Dense, Dense, Normalize)."""

    name = "sentence-transformers"

    def __init__(self, directory: Path, threads: int | None = None) -> None:
        check_bidirectional_support()
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(directory), device="cpu", trust_remote_code=False,
                                         local_files_only=True)
        self.model.eval()
        self.max_length = int(self.model.max_seq_length)  # the checkpoint's own limit
        self._lock = threading.Lock()  # max_seq_length is model state: one call at a time sets and restores it

    def encode(self, texts: list[str], prompt_name: str | None = None, dim: int | None = None,
               batch_size: int = 8, max_length: int | None = None) -> np.ndarray:
        """Embeddings as sentence-transformers gives them, truncated to ``max_length`` tokens (at most the
        checkpoint's own limit) for this call only: callers never change the model's setting for others."""
        with self._lock:
            self.model.max_seq_length = min(int(max_length or self.max_length), self.max_length)
            try:
                out = self.model.encode(texts, prompt_name=prompt_name, truncate_dim=dim, normalize_embeddings=True,
                                        batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
            finally:
                self.model.max_seq_length = self.max_length
        return np.asarray(out, dtype=np.float32)

    @torch.inference_mode()
    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray, dim: int | None = None) -> np.ndarray:
        features = {"input_ids": torch.as_tensor(input_ids, dtype=torch.long),
                    "attention_mask": torch.as_tensor(attention_mask, dtype=torch.long)}
        out = self.model(features)["sentence_embedding"]
        if dim is not None:
            out = torch.nn.functional.normalize(out[:, :dim], dim=-1)
        return out.float().numpy()

    def version_info(self) -> dict[str, Any]:
        import sentence_transformers
        import transformers

        return {"runtime": self.name, "sentence_transformers": sentence_transformers.__version__,
                "transformers": transformers.__version__, "torch": torch.__version__}


def check_bidirectional_support() -> None:
    """Older transformers silently ignore use_bidirectional_attention and run causal attention."""
    from transformers.models.gemma3 import modeling_gemma3

    if not hasattr(modeling_gemma3, "_bidirectional_window_overlay"):
        import transformers

        raise EmbgError(
            f"transformers {transformers.__version__} does not implement Gemma 3 bidirectional attention; "
            "it would compute causal embeddings. Install transformers>=5.2"
        )
