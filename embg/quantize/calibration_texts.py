"""Calibration batches from embg's built-in calibration texts (embg.textdata), each with its task prompt.

The texts are multilingual prose, code and queries that share nothing with the validator's texts.
Every eighth text is held out: the calibrated recipe is compared with min-max on texts it did
not calibrate on (embg/quantize/int4_choice.py). Batches are sorted by length (little padding;
padded rows never reach a Hessian) and fully deterministic: file order, stable sort.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from embg.model.tokenizer import EmbedTokenizer

MAX_TOKENS = 512  # longer texts are cut: enough to cross the 257-token sliding window
BATCH_SIZE = 8
HELD_OUT_EVERY = 8

Batch = tuple[torch.Tensor, torch.Tensor]  # (input_ids, attention_mask), int64 [B, S]


def calibration_split() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(calibration, held-out) lists of (text, task prompt name)."""
    from embg.textdata import calibration_texts

    rows = [(item.text, item.task) for item in calibration_texts()]
    held_out = [row for i, row in enumerate(rows) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    calibration = [row for i, row in enumerate(rows) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    return calibration, held_out


def batches_for(tokenizer: EmbedTokenizer, rows: list[tuple[str, str]], max_tokens: int = MAX_TOKENS,
                batch_size: int = BATCH_SIZE) -> list[Batch]:
    """Token batches of ``rows`` (text, task): one prompt per batch, similar lengths together."""
    batches: list[Batch] = []
    for task in sorted({task for _, task in rows}):
        prompt = task if task in tokenizer.prompts else None
        texts = [text for text, t in rows if t == task]
        with _quiet_truncation():  # cutting long calibration texts is intended, not worth a warning
            lengths = tokenizer.encode(texts, prompt=prompt, max_length=max_tokens).attention_mask.sum(axis=1)
            order = sorted(range(len(texts)), key=lambda i: int(lengths[i]))
            for start in range(0, len(order), batch_size):
                chunk = [texts[i] for i in order[start:start + batch_size]]
                encoded = tokenizer.encode(chunk, prompt=prompt, max_length=max_tokens)
                batches.append((torch.as_tensor(encoded.input_ids), torch.as_tensor(encoded.attention_mask)))
    return batches


@contextmanager
def _quiet_truncation() -> Iterator[None]:
    logger = logging.getLogger(EmbedTokenizer.__module__)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
