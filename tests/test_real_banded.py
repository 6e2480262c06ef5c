"""Slow: fp32 bundles of the REAL checkpoint, banded sliding-window attention, vs sentence-transformers.

Texts of 300-2048 tokens (past the 257-token window, below and above the lengths where banding
starts), alone and in one padded batch; LiteRT also with short texts forced through the 2048
bucket (padding far wider than the window). Needs EMBG_REAL_MODEL = a local
google/embeddinggemma-300m checkpoint directory; exports take minutes and several GB of RAM.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from embg.textdata.sets import builtin_texts
from embg.parity.path import cosine_rows

REAL = os.environ.get("EMBG_REAL_MODEL")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not REAL, reason="EMBG_REAL_MODEL is not set (a local google/embeddinggemma-300m "
                                                  "checkpoint directory)")]
LENGTHS = (300, 517, 700, 1030, 1500, 2048)
BUCKETS = (512, 1024, 2048)


@pytest.fixture(scope="module")
def real():
    from embg.checkpoint.load import load_model
    from embg.runtimes.reference import SentenceTransformersReference

    return load_model(REAL), SentenceTransformersReference(Path(REAL))


@pytest.fixture(scope="module")
def cases(real):
    """(ids, reference embedding) per text: the long English prose cut at LENGTHS tokens, plus the medium
    texts of at least 300 tokens (Russian prose, the first paragraphs of the English one)."""
    model, reference = real
    long_text = next(t.text for t in builtin_texts() if t.kind == "long")
    texts = [(long_text, n) for n in LENGTHS] + [(t.text, 2048) for t in builtin_texts() if t.kind == "medium"]
    out = []
    for text, limit in texts:
        ids = model.tokenizer.encode([text], prompt="document", max_length=limit).input_ids[0]
        if len(ids) < 300:
            continue
        out.append((ids, reference.encode([text], prompt_name="document", max_length=limit)[0]))
    assert max(len(ids) for ids, _ in out) == 2048 and min(len(ids) for ids, _ in out) >= 300
    return out


def _padded(rows: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((len(rows), width), np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = row, 1
    return ids, mask


def _export(tmp_path_factory, target: str, seq_lens: tuple[int, ...] = ()):
    from embg.bundle import Artifact
    from embg.export.pipeline import ExportRequest, export_bundle
    from embg.quantize.recipe import recipe_for_bits
    from embg.runtimes import load_all, load_runtime

    out = tmp_path_factory.mktemp(f"real-{target}") / "bundle"
    export_bundle(ExportRequest(model=REAL, target=target, recipe=recipe_for_bits(32), out=out, seq_lens=seq_lens,
                                parity=False))
    load_all()
    artifact = Artifact.load(out)
    assert artifact.manifest["attention"]["sliding"] == "banded"
    return artifact, load_runtime("onnxruntime" if target == "onnx" else "litert", artifact, threads=1)


def test_onnx_fp32_banded_matches_sentence_transformers(tmp_path_factory, cases):
    _, runtime = _export(tmp_path_factory, "onnx")
    ref = np.stack([r for _, r in cases])
    alone = np.concatenate([runtime.embed(ids[None], np.ones_like(ids)[None]) for ids, _ in cases])
    batch = runtime.embed(*_padded([ids for ids, _ in cases], 2048))
    assert np.isfinite(batch).all()
    print(f"\nreal ONNX fp32 banded: cosine min alone {cosine_rows(alone, ref).min():.7f}, "
          f"padded batch {cosine_rows(batch, ref).min():.7f} ({len(cases)} texts)")
    assert cosine_rows(alone, ref).min() >= 0.99999
    assert cosine_rows(batch, ref).min() >= 0.99999


def test_tflite_fp32_banded_matches_sentence_transformers(tmp_path_factory, cases):
    artifact, runtime = _export(tmp_path_factory, "tflite", BUCKETS)
    assert [s["sliding"] for s in artifact.manifest["signatures"]] == ["dense", "banded", "banded"]
    ref = np.stack([r for _, r in cases])
    fitted = np.concatenate([runtime.embed(ids[None], np.ones_like(ids)[None]) for ids, _ in cases])
    ids, mask = _padded([ids for ids, _ in cases], 2048)
    widest = np.concatenate([runtime._run_one("seq2048", ids[i:i + 1].astype(np.int32), mask[i:i + 1].astype(np.int32))
                             for i in range(len(ids))])
    assert np.isfinite(widest).all()
    print(f"\nreal TFLite fp32 banded: cosine min in the fitting bucket {cosine_rows(fitted, ref).min():.7f}, "
          f"padded to 2048 {cosine_rows(widest, ref).min():.7f} ({len(cases)} texts)")
    assert cosine_rows(fitted, ref).min() >= 0.99999
    assert cosine_rows(widest, ref).min() >= 0.99999
