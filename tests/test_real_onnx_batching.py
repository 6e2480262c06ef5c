"""The real EmbeddingGemma-300m on ONNX: embeddings do not depend on batch neighbours or padding, and
``--bits 8`` holds the issue's floors against sentence-transformers in every batching (slow).

Set ``EMBG_REAL_MODEL`` to the checkpoint directory. Each text (the validator's built-in set, truncated
to 512 tokens) is embedded alone, in mixed-length batches of 8 padded to the longest, and padded to
512; sentence-transformers embeds it alone on the original checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from embg.bundle import Artifact
from embg.model.spec import read_checkpoint
from embg.model.tokenizer import EmbedTokenizer
from embg.runtimes import load_all, load_runtime
from embg.parity.path import cosine_rows
from embg.textdata.sets import builtin_texts

PAD_TO = 512
BATCH = 8
BATCHINGS = ("alone", "batch8-longest", f"batch8-pad{PAD_TO}")
INDEPENDENCE_FLOOR = 0.999  # the target: alone vs inside a padded batch, every int8/int4 bundle
INT8_MIN_FLOOR, INT8_MEAN_FLOOR = 0.998, 0.999  # the target: --bits 8 vs sentence-transformers
INT8_TOP10_FLOOR = 0.98  # the target: top-10 agreement on the real query/document pairs
# What the presets reach (per-token activations with 16 float channels each and down_proj's input in two
# passes, docs/onnx-int8.md): --bits 8 vs ST min 0.9993 / mean 0.9997, alone vs batched 0.99978; calibrated
# --bits 4 alone vs batched 0.99972 (measured 2026-12-03). The regression floors sit under those figures with
# room for another CPU's float rounding; per-tensor scales gave 0.848 in padded batches, per-token scales
# without float channels 0.9981 / 0.9988 and 0.9980, so these catch either coming back.
REGRESSION_INDEPENDENCE = 0.9985
REGRESSION_INT8_MIN, REGRESSION_INT8_MEAN = 0.998, 0.999

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_model() -> Path:
    path = os.environ.get("EMBG_REAL_MODEL")
    if not path:
        pytest.skip("EMBG_REAL_MODEL is not set (the real google/embeddinggemma-300m checkpoint directory)")
    return Path(path)


def token_rows(model_dir: Path) -> list[np.ndarray]:
    """Each built-in text with its task prompt, truncated to PAD_TO tokens, as a 1-D id array."""
    tokenizer = EmbedTokenizer(model_dir, read_checkpoint(model_dir).prompts, PAD_TO)
    rows = []
    for text in builtin_texts():
        batch = tokenizer.encode([text.text], prompt=text.task or None)
        rows.append(batch.input_ids[0][batch.attention_mask[0] == 1])
    return rows


def batches(rows: list[np.ndarray], pad_to: int | None, pad_id: int = 0):
    """(row indices, ids, mask) for batches of BATCH texts of mixed lengths (a fixed shuffle)."""
    order = np.random.default_rng(7).permutation(len(rows))
    for start in range(0, len(order), BATCH):
        chosen = order[start:start + BATCH]
        width = pad_to or max(len(rows[i]) for i in chosen)
        ids = np.full((len(chosen), width), pad_id, np.int64)
        mask = np.zeros_like(ids)
        for r, i in enumerate(chosen):
            ids[r, :len(rows[i])], mask[r, :len(rows[i])] = rows[i], 1
        yield chosen, ids, mask


def embed_every_batching(embed, rows: list[np.ndarray]) -> dict[str, np.ndarray]:
    """{batching: [texts, dim]} for ``embed(ids, mask)``."""
    out = {"alone": np.concatenate([embed(r[None], np.ones((1, len(r)), np.int64)) for r in rows])}
    for name, pad_to in ((BATCHINGS[1], None), (BATCHINGS[2], PAD_TO)):
        out[name] = np.zeros_like(out["alone"])
        for chosen, ids, mask in batches(rows, pad_to):
            out[name][chosen] = embed(ids, mask)
    return out


def reference_rows(model_dir: Path, rows: list[np.ndarray]) -> np.ndarray:
    from embg.runtimes.reference import SentenceTransformersReference

    reference = SentenceTransformersReference(model_dir, threads=2)
    return np.concatenate([reference.embed(r[None], np.ones((1, len(r)), np.int64)) for r in rows])


def measure(bundle: Path, rows: list[np.ndarray], reference: np.ndarray) -> dict[str, tuple[float, float]]:
    """Cosine (min, mean) per batching vs the reference, and alone vs each padded batching."""
    load_all()
    runtime = load_runtime("onnxruntime", Artifact.load(bundle), threads=1)
    got = embed_every_batching(runtime.embed, rows)
    figures = {}
    for name, emb in got.items():
        cos = cosine_rows(emb, reference)
        figures[f"{name} vs reference"] = (float(cos.min()), float(cos.mean()))
    for name in BATCHINGS[1:]:
        cos = cosine_rows(got["alone"], got[name])
        figures[f"alone vs {name}"] = (float(cos.min()), float(cos.mean()))
    return figures


class Measured(dict):
    """Figures per --bits, exported and measured on first use (a run of the int8 tests alone skips int4)."""

    def __init__(self, model_dir: Path, root: Path) -> None:
        super().__init__()
        self.model_dir, self.root = model_dir, root
        self.rows = token_rows(model_dir)
        self.reference = reference_rows(model_dir, self.rows)

    def bundle(self, bits: int) -> Path:
        from embg.export.pipeline import ExportRequest, export_bundle
        from embg.quantize.recipe import recipe_for_bits

        out = self.root / f"onnx-int{bits}"
        if not (out / "manifest.json").exists():
            # --bits 8 as users run it (auto_qat: the target's preferred preset, int8-rotated, when it holds)
            export_bundle(ExportRequest(model=str(self.model_dir), target="onnx", recipe=recipe_for_bits(bits),
                                        out=out, parity=False, options={"auto_qat": bits == 8}))
        return out

    def __missing__(self, bits: int) -> dict[str, tuple[float, float]]:
        bundle = self.bundle(bits)
        self[bits] = figures = measure(bundle, self.rows, self.reference)
        print(f"ONNX --bits {bits}: {figures}")
        return figures


@pytest.fixture(scope="module")
def measured(real_model, tmp_path_factory) -> Measured:
    return Measured(real_model, tmp_path_factory.mktemp("real-onnx"))


def _independence(measured, bits: int) -> dict[str, float]:
    return {k: v[0] for k, v in measured[bits].items() if k.startswith("alone vs batch")}  # not "alone vs reference"


@pytest.mark.parametrize("bits", [8, 4])
def test_real_embedding_barely_depends_on_its_batch(measured, bits):
    independence = _independence(measured, bits)
    assert min(independence.values()) >= REGRESSION_INDEPENDENCE, independence


def test_real_int8_regression_floors_in_every_batching(measured):
    for name in BATCHINGS:
        low, mean = measured[8][f"{name} vs reference"]
        assert low >= REGRESSION_INT8_MIN and mean >= REGRESSION_INT8_MEAN, (name, low, mean)


@pytest.mark.parametrize("bits", [8, 4])
def test_real_embedding_does_not_depend_on_its_batch(measured, bits):
    independence = _independence(measured, bits)
    assert min(independence.values()) >= INDEPENDENCE_FLOOR, independence


def test_real_onnx_bits8_is_int8_rotated(measured):
    """--bits 8 keeps the rotated preset on the real checkpoint (its simulation matches int8's)."""
    choice = Artifact.load(measured.bundle(8)).manifest["bits_choice"]
    assert choice["used"] == "int8-rotated" and choice["passed_over"] == {}


def test_real_int8_min_floor_in_every_batching(measured):
    for name in BATCHINGS:
        low, _ = measured[8][f"{name} vs reference"]
        assert low >= INT8_MIN_FLOOR, (name, low)


def test_real_int8_mean_floor_in_every_batching(measured):
    for name in BATCHINGS:
        _, mean = measured[8][f"{name} vs reference"]
        assert mean >= INT8_MEAN_FLOOR, (name, mean)


def check_int8_retrieval_floors(label: str, bundle, model_dir, report_dir) -> None:
    """embg-validate on the 477 real query/document pairs: the --bits 8 floors (shared with the LiteRT test)."""
    import json

    from embg.cli.validate import main as validate_main

    status = validate_main([str(bundle), "--model", str(model_dir), "--texts", "retrieval",
                            "--report", str(report_dir), "--latency-repeats", "1", "--no-memory"])
    entry, = json.loads((report_dir / "report.json").read_text())["bundles"]
    metrics = entry["metrics"]
    print(f"\n{label} --bits 8 on the retrieval pairs: top-10 {metrics['retrieval']['top10_overlap_mean']:.4f}, "
          f"cosine {metrics['drift']['cosine_min']:.5f} / {metrics['drift']['cosine_mean']:.5f}, "
          f"alone vs batched {metrics['batch_consistency']['cosine_min']:.5f}")
    assert status == 0
    assert metrics["retrieval"]["top10_overlap_mean"] >= INT8_TOP10_FLOOR
    assert metrics["drift"]["cosine_min"] >= INT8_MIN_FLOOR and metrics["drift"]["cosine_mean"] >= INT8_MEAN_FLOOR
    assert metrics["batch_consistency"]["cosine_min"] >= INDEPENDENCE_FLOOR


def test_real_int8_retrieval_floors(measured, tmp_path):
    """embg-validate on the 477 real query/document pairs (954 texts alone and in padded batches): top-10
    agreement 0.9753 and alone vs batched 0.9989 before down_proj's residual pass, 0.9847 and 0.99954
    with it (docs/onnx-int8.md). About 16 minutes on 2 cores."""
    check_int8_retrieval_floors("ONNX", measured.bundle(8), measured.model_dir, tmp_path)
