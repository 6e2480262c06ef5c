"""Slow: TFLite ``--bits 8`` on the REAL checkpoint against the issue's floors, in every batching.

Set ``EMBG_REAL_MODEL`` to the checkpoint directory. The built-in texts (truncated to 512 tokens) run
alone, in mixed-length batches of 8 padded to the longest and padded to 512, each in the smallest
bucket that holds it; sentence-transformers embeds each text alone on the original checkpoint.
(ONNX ``--bits 8`` is in tests/test_real_onnx_batching.py.)
"""

from __future__ import annotations

import pytest

from embg.bundle import Artifact
from embg.export.pipeline import ExportRequest, export_bundle
from embg.parity.path import cosine_rows
from embg.quantize.recipe import recipe_for_bits
from embg.runtimes import load_all, load_runtime
from tests.test_real_onnx_batching import (BATCHINGS, INDEPENDENCE_FLOOR, INT8_MEAN_FLOOR, INT8_MIN_FLOOR,
                                           check_int8_retrieval_floors, embed_every_batching, real_model,
                                           reference_rows, token_rows)

BUCKETS = (32, 64, 128, 256, 512)  # the default buckets up to the texts' 512 tokens

pytestmark = pytest.mark.slow
__all__ = ["real_model"]  # the fixture, shared with the ONNX test


@pytest.fixture(scope="module")
def bundle(real_model, tmp_path_factory):
    # as `embg-export --bits 8` does it (auto_qat: int8-rotated when it simulates as well as int8)
    return export_bundle(ExportRequest(model=str(real_model), target="tflite", recipe=recipe_for_bits(8),
                                       seq_lens=BUCKETS, out=tmp_path_factory.mktemp("real-tflite") / "int8",
                                       parity=False, options={"auto_qat": True}))


def test_real_tflite_bits8_is_int8_rotated(bundle):
    """--bits 8 keeps the rotated preset on the real checkpoint (its simulation matches int8's)."""
    choice = Artifact.load(bundle).manifest["bits_choice"]
    assert choice["used"] == "int8-rotated" and choice["passed_over"] == {}


@pytest.fixture(scope="module")
def figures(real_model, bundle) -> dict[str, tuple[float, float]]:
    rows = token_rows(real_model)
    reference = reference_rows(real_model, rows)
    load_all()
    runtime = load_runtime("litert", Artifact.load(bundle), threads=1)
    got = embed_every_batching(runtime.embed, rows)
    found = {}
    for name, emb in got.items():
        cos = cosine_rows(emb, reference)
        found[f"{name} vs reference"] = (float(cos.min()), float(cos.mean()))
    for name in BATCHINGS[1:]:
        cos = cosine_rows(got["alone"], got[name])
        found[f"alone vs {name}"] = (float(cos.min()), float(cos.mean()))
    print(f"\nTFLite --bits 8 on the real checkpoint: {found}")
    return found


def test_real_tflite_int8_floors_in_every_batching(figures):
    for name in BATCHINGS:
        low, mean = figures[f"{name} vs reference"]
        assert low >= INT8_MIN_FLOOR and mean >= INT8_MEAN_FLOOR, (name, low, mean)


def test_real_tflite_int8_does_not_depend_on_its_batch(figures):
    for name in BATCHINGS[1:]:
        assert figures[f"alone vs {name}"][0] >= INDEPENDENCE_FLOOR, figures


def test_real_tflite_int8_retrieval_floors(real_model, bundle, tmp_path):
    """embg-validate on the 477 real query/document pairs (954 texts alone and in padded batches): top-10
    agreement 0.9751 (cosine min 0.9975) while XNNPACK quantized every channel of each activation in
    one pass; 16 float channels and down_proj's second pass built around XNNPACK's own int8 rows
    (embg/quantize/litert_split.py) lift it to 0.9851 (docs/onnx-int8.md). About 12 minutes on 2 cores."""
    check_int8_retrieval_floors("TFLite", bundle, real_model, tmp_path)
