"""The one parity path: a bundle's runtime against the reference, texts alone and in padded batches.

Users embed a query alone and index a corpus in padded batches; an embedding must not depend on
its batch neighbours or its padding. ONNX Runtime's dynamic per-tensor int8 scales are computed
over the whole [batch, seq, hidden] tensor, so one text's outliers (or the padding) change every
other row: a check that only runs texts one at a time never sees it. So every text is embedded in
each of these modes and each mode is compared with the reference:

* ``alone``       one text per call, at its own length (LiteRT: the smallest bucket that fits it);
* ``batched``     batches of up to ``BATCH_ROWS`` mixed-length texts (the longest left with the shortest
                  left, at most ``BATCH_TOKENS`` padded tokens) padded to the batch's longest text
                  (LiteRT runs each row in the smallest bucket that holds its own tokens, so there
                  the modes agree by construction: embg/runtimes/litert_rt.py);
* ``padded_512``  the same batches padded to at least ``PAD_WIDTH`` tokens (present for LiteRT only
                  when the file has a bucket of at least 512).

The headline figures are the worst over the modes; ``batch_consistency`` is the cosine between each
text alone and the same text inside a batch. One NaN rule everywhere: a row holding NaN/inf, or a
cosine that is not finite, counts as cosine -1 (a failure); nothing is skipped or averaged away.

Used by the export-time check (manifest "parity") and by embg-validate (report "drift_by_mode").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from embg.model.tokenizer import EmbedTokenizer

BATCH_ROWS = 8
PAD_WIDTH = 512
BATCH_TOKENS = 8192  # padded tokens per batch: a 2048-token text shares its batch with 3 short ones, not 7
FAILED_COSINE = -1.0  # the one NaN rule: a non-finite row or cosine scores as opposite vectors
MODES = ("alone", "batched", f"padded_{PAD_WIDTH}")


class ParityText(Protocol):
    """What the parity path needs of a text: the text and its task prompt name ("" for none)."""

    text: str
    task: str


@dataclass(frozen=True)
class PromptedText:
    """A text and its task prompt name: the simplest :class:`ParityText`."""

    text: str
    task: str


# ---------------------------------------------------------------- cosine and the NaN rule

def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine in float64; NaN where a row is zero or not finite (see :func:`finite_cosine`)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / denom


def finite_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine with the NaN rule applied: any non-finite cosine is ``FAILED_COSINE``."""
    cos = cosine_rows(a, b)
    return np.where(np.isfinite(cos), cos, FAILED_COSINE)


def rounded(value: float | None) -> float | None:
    """JSON-friendly rounding; NaN/inf become None (which every gate check treats as a failure)."""
    return None if value is None or not math.isfinite(value) else round(float(value), 7)


def drift(ours: np.ndarray, ref: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Per-text cosine (min, p1, mean), max |diff| and the number of rows holding NaN/inf."""
    nonfinite = int((~np.isfinite(ours)).any(axis=1).sum()) if len(ours) else 0
    cos = finite_cosine(ours, ref)
    diff = np.abs(np.nan_to_num(np.asarray(ours, dtype=np.float64), nan=np.inf) - ref) if len(ours) else np.zeros(1)
    return {
        "texts": int(len(cos)),
        "cosine_min": rounded(cos.min()) if len(cos) else None,
        "cosine_p1": rounded(np.percentile(cos, 1)) if len(cos) else None,
        "cosine_mean": rounded(cos.mean()) if len(cos) else None,
        "max_abs_diff": rounded(float(np.max(diff))),  # None when any value is NaN/inf
        "nonfinite": nonfinite,
    }, cos


# ---------------------------------------------------------------- the modes

def tokenize(tokenizer: EmbedTokenizer, texts: Sequence[ParityText], limit: int) -> list[np.ndarray]:
    """Each text's ids with its own prompt and BOS/EOS, truncated to ``limit``, unpadded, in order."""
    rows: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(texts)
    for task in sorted({t.task for t in texts}):
        index = [i for i, t in enumerate(texts) if t.task == task]
        batch = tokenizer.encode([texts[i].text for i in index], prompt=task or None, max_length=limit)
        for row, i in enumerate(index):
            rows[i] = batch.input_ids[row][batch.attention_mask[row] > 0]
    return rows


def mixed_batches(lengths: list[int], rows: int = BATCH_ROWS, budget: int = BATCH_TOKENS,
                  min_width: int = PAD_WIDTH) -> list[list[int]]:
    """Batches that put the longest remaining text next to the shortest ones (the most padding per row),
    at most ``rows`` texts and ``budget`` padded tokens (counting at least ``min_width`` per row) each."""
    remaining = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches = []
    while remaining:
        longest = remaining.pop()
        room = max(1, min(rows, budget // max(lengths[longest], min_width))) - 1
        batches.append([longest, *remaining[:room]])
        remaining = remaining[room:]
    return batches


def padded(tokens: list[np.ndarray], width: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids and mask, ``width`` columns."""
    ids = np.full((len(tokens), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(tokens), width), dtype=np.int64)
    for row, token in enumerate(tokens):
        ids[row, :len(token)] = token
        mask[row, :len(token)] = 1
    return ids, mask


def modes_for(runtime) -> tuple[str, ...]:
    """The modes a runtime can run: padded_512 needs inputs (LiteRT: a bucket) of at least 512 tokens."""
    longest = runtime.max_length
    return MODES if longest is None or longest >= PAD_WIDTH else MODES[:2]


def embed_mode(runtime, tokens: list[np.ndarray], mode: str, pad_id: int = 0) -> np.ndarray:
    """Embeddings of ``tokens`` (in order) as ``mode`` runs them."""
    if not tokens:
        return np.zeros((0, 0), dtype=np.float32)
    groups = [[i] for i in range(len(tokens))] if mode == "alone" else mixed_batches([len(t) for t in tokens])
    out: np.ndarray | None = None
    for group in groups:
        batch = [tokens[i] for i in group]
        width = max(len(t) for t in batch)
        if mode == MODES[2]:
            width = max(width, PAD_WIDTH)  # a runtime with buckets picks the smallest bucket >= the width
        ids, mask = padded(batch, width, pad_id)
        rows = np.asarray(runtime.embed(ids, mask), dtype=np.float32)
        if out is None:
            out = np.zeros((len(tokens), rows.shape[1]), dtype=np.float32)
        out[group] = rows
    assert out is not None
    return out


# ---------------------------------------------------------------- the result

@dataclass
class ParityResult:
    """Per-mode drift against the reference, alone-vs-batched consistency, and the worst over modes."""

    modes: dict[str, dict[str, Any]]
    cosines: dict[str, np.ndarray]
    embeddings: dict[str, np.ndarray]
    consistency: dict[str, Any]
    worst_mode: str
    headline: dict[str, Any] = field(default_factory=dict)

    @property
    def per_text_cosine(self) -> np.ndarray:
        """Each text's lowest cosine over the modes."""
        return np.min(np.stack(list(self.cosines.values())), axis=0)

    @property
    def worst_embeddings(self) -> np.ndarray:
        """The embeddings of the worst mode (what retrieval metrics are computed on)."""
        return self.embeddings[self.worst_mode]

    def to_dict(self) -> dict[str, Any]:
        """The manifest's / report's parity block: headline (worst over modes), then the details."""
        return {**self.headline, "worst_mode": self.worst_mode,
                "batch_consistency_min": self.consistency["cosine_min"],
                "modes": self.modes, "batch_consistency": self.consistency}


def worst_over_modes(modes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each figure at its worst over the modes; a missing (NaN) value wins, as it is a failure."""
    def pick(key: str, worst: Callable[[list[float]], float]) -> float | None:
        values = [m.get(key) for m in modes.values()]
        return None if any(v is None for v in values) else worst(values)

    first = next(iter(modes.values()))
    return {"texts": first["texts"], "cosine_min": pick("cosine_min", min), "cosine_p1": pick("cosine_p1", min),
            "cosine_mean": pick("cosine_mean", min), "max_abs_diff": pick("max_abs_diff", max),
            "nonfinite": max(m["nonfinite"] for m in modes.values())}


def measure_parity(runtime, tokenizer: EmbedTokenizer, texts: Sequence[ParityText], reference: np.ndarray,
                   modes: Sequence[str] | None = None) -> ParityResult:
    """Embed every text in every mode with ``runtime`` and compare each mode with ``reference``.

    ``tokenizer`` is the one the device uses (the bundle's own files); ``reference`` holds the
    reference embeddings of the same texts, truncated to ``runtime.max_length`` like the runtime's
    inputs. Returns per-mode drift, alone-vs-batched consistency and the worst over the modes.
    """
    limit = runtime.max_length or tokenizer.max_length
    tokens = tokenize(tokenizer, texts, limit)
    modes = tuple(modes or modes_for(runtime))
    embeddings = {mode: embed_mode(runtime, tokens, mode, tokenizer.pad_id) for mode in modes}
    per_mode, cosines = {}, {}
    for mode, ours in embeddings.items():
        per_mode[mode], cosines[mode] = drift(ours, reference)
    alone = embeddings[modes[0]]
    by_mode = {mode: finite_cosine(alone, embeddings[mode]) for mode in modes[1:]}
    together = np.concatenate(list(by_mode.values())) if by_mode else np.ones(1)
    consistency = {"cosine_min": rounded(together.min()), "cosine_mean": rounded(together.mean()),
                   "by_mode": {mode: rounded(cos.min()) for mode, cos in by_mode.items()},
                   "texts": len(tokens), "batch_rows": BATCH_ROWS}
    worst = min(per_mode, key=lambda m: (per_mode[m]["cosine_min"] if per_mode[m]["cosine_min"] is not None
                                         else -math.inf, modes.index(m)))
    return ParityResult(per_mode, cosines, embeddings, consistency, worst, worst_over_modes(per_mode))


# ---------------------------------------------------------------- the reference side

def length_batches(lengths: list[int], max_rows: int = BATCH_ROWS, max_tokens: int = 8192) -> list[list[int]]:
    """Indices grouped by similar length, each batch at most ``max_rows`` x width <= ``max_tokens``
    (the reference in fp32 torch does not depend on its batch; this only bounds its padding cost)."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        current = batches[-1] if batches else None
        if current is not None and len(current) < max_rows and lengths[i] * (len(current) + 1) <= max_tokens:
            current.append(i)
        else:
            batches.append([i])
    return batches


def reference_embeddings(reference, tokenizer: EmbedTokenizer, texts: Sequence[ParityText], max_length: int,
                         dim: int | None = None) -> np.ndarray:
    """sentence-transformers embeddings of ``texts`` (each with its prompt_name, as users call it),
    truncated to ``max_length`` tokens for this call only, in the given order."""
    out: np.ndarray | None = None
    for task in sorted({t.task for t in texts}):
        index = [i for i, t in enumerate(texts) if t.task == task]
        prefix = tokenizer.prompt_text(task or None)
        lengths = [len(ids) for ids in tokenizer.backend([prefix + texts[i].text for i in index])["input_ids"]]
        for batch in length_batches(lengths):
            rows = reference.encode([texts[index[j]].text for j in batch], prompt_name=task or None, dim=dim,
                                    batch_size=len(batch), max_length=max_length)
            if out is None:
                out = np.zeros((len(texts), rows.shape[1]), dtype=np.float32)
            out[[index[j] for j in batch]] = rows
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def embed_texts(runtime, tokenizer: EmbedTokenizer, texts: list[str], prompt: str | None,
                batch_size: int = BATCH_ROWS) -> np.ndarray:
    """Tokenize on the host (to the runtime's longest input) and embed in batches (tests, bench)."""
    limit = runtime.max_length or tokenizer.max_length
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer.encode(texts[start:start + batch_size], prompt=prompt, max_length=limit)
        rows.append(runtime.embed(batch.input_ids, batch.attention_mask))
    return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)
