"""Tokenization and task prompts, exactly as sentence-transformers does them for EmbeddingGemma.

Runtimes never tokenize: they receive the ids and mask built here, so the same path feeds
every engine and the reference.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embg.errors import CheckpointError, EmbgError

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json")


@dataclass
class Batch:
    """Token ids and attention mask, both int64 [B, S], plus which texts were truncated."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    truncated: list[int]


class EmbedTokenizer:
    """The checkpoint's own tokenizer plus its prompts.

    ``encode`` applies a prompt by name (``query``, ``document``, ...) or as literal text, adds
    BOS/EOS as the tokenizer config says, truncates to ``max_length`` with a warning (never an
    error) and pads on the right to the longest text or to ``pad_to``.
    """

    def __init__(self, directory: Path, prompts: dict[str, str], max_length: int) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers import AutoTokenizer

        try:
            self._tok = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
        except Exception as exc:
            raise CheckpointError(f"cannot load the tokenizer from {directory}: {exc}") from exc
        self._tok.padding_side = "right"
        if self._tok.pad_token_id is None:
            raise CheckpointError(f"the tokenizer in {directory} has no pad token")
        self.prompts = dict(prompts)
        self.max_length = int(max_length)
        self.pad_id = int(self._tok.pad_token_id)

    @property
    def backend(self):  # the transformers tokenizer, for callers that need its files
        return self._tok

    def prompt_text(self, prompt: str | None) -> str:
        if prompt is None or prompt == "":
            return ""
        if prompt in self.prompts:
            return self.prompts[prompt]
        raise EmbgError(f"unknown prompt name {prompt!r}; this model has {sorted(self.prompts)}")

    def encode(self, texts: list[str], prompt: str | None = None, pad_to: int | None = None,
               max_length: int | None = None) -> Batch:
        """Ids and mask for ``texts`` with ``prompt`` prepended; truncated to ``max_length`` tokens."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts")
        limit = int(max_length or self.max_length)
        if pad_to is not None:
            limit = min(limit, int(pad_to))
        prefix = self.prompt_text(prompt)
        rows = self._tok([prefix + t for t in texts], add_special_tokens=True)["input_ids"]
        truncated = [i for i, ids in enumerate(rows) if len(ids) > limit]
        if truncated:
            longest = max(len(rows[i]) for i in truncated)
            log.warning("%d text(s) longer than %d tokens (longest %d) were truncated", len(truncated), limit, longest)
            rows = self._tok([prefix + t for t in texts], add_special_tokens=True, truncation=True,
                             max_length=limit)["input_ids"]
        width = int(pad_to) if pad_to is not None else max((len(r) for r in rows), default=0)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return Batch(ids, mask, truncated)
