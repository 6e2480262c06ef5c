"""The one parity path (embg.parity): texts alone and in padded mixed-length batches, per-mode
drift, alone-vs-batched consistency, the NaN rule, and both callers (export-time parity, embg-validate)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embg.parity import path as parity
from embg.validate import gate
from embg.parity.path import PAD_WIDTH, PromptedText, measure_parity, mixed_batches
from embg.validate.thresholds import THRESHOLDS

DIM = 16


class StandIn:
    """A runtime computing a fixed function of each row's real tokens, optionally disturbed by its batch."""

    def __init__(self, buckets: list[int] | None = None, coupling: float = 0.0, nan_when_padded_to: int | None = None):
        self.buckets = buckets
        self.coupling = coupling  # how much a row moves with the batch's largest value (per-tensor scale)
        self.nan_when_padded_to = nan_when_padded_to
        self.widths: list[int] = []
        self.table = np.random.default_rng(0).normal(size=(9000, DIM))

    @property
    def max_length(self):
        return self.buckets[-1] if self.buckets else None

    def clean(self, ids, mask):
        rows = np.stack([self.table[i[m > 0]].mean(0) for i, m in zip(ids, mask)])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def embed(self, ids, mask):
        width = ids.shape[1]
        if self.buckets:  # as LiteRT: the smallest bucket at least as wide as the input
            width = next((b for b in self.buckets if b >= width), self.buckets[-1])
        self.widths.append(width)
        rows = self.clean(ids, mask)
        if self.coupling:  # one scale over the whole batch, as dynamic per-tensor int8 computes it
            scale = np.abs(rows).max() * (1.0 + width / 256.0)
            rows = np.round(rows / scale * 20.0 / self.coupling) * scale * self.coupling / 20.0
        if self.nan_when_padded_to and width >= self.nan_when_padded_to:
            rows[:] = np.nan
        return rows.astype(np.float32)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return tiny_model.tokenizer


def texts(n: int = 19) -> list[PromptedText]:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()
    return [PromptedText(" ".join(words[: 1 + (i * 7) % 11] * (1 + i % 5)), "query" if i % 2 else "document")
            for i in range(n)]


def reference_for(runtime: StandIn, tokenizer, rows: list[PromptedText]) -> np.ndarray:
    tokens = parity.tokenize(tokenizer, rows, runtime.max_length or tokenizer.max_length)
    return np.concatenate([runtime.clean(*parity.padded([t], len(t))) for t in tokens])


def test_mixed_batches_pair_long_with_short_within_the_budget():
    lengths = [5, 2000, 7, 3000, 6, 1500, 9, 10, 11, 12, 13, 14, 700, 600, 8, 8, 9]
    batches = mixed_batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) <= parity.BATCH_ROWS
        assert len(batch) == 1 or len(batch) * max(longest, PAD_WIDTH) <= parity.BATCH_TOKENS
        assert lengths[batch[0]] == longest  # the longest left, then the shortest left
    short_with_long = [b for b in batches if max(lengths[i] for i in b) >= 600 and min(lengths[i] for i in b) < 10]
    assert short_with_long  # short texts are padded next to long ones


def test_batch_independent_runtime_is_consistent_in_every_mode(tokenizer):
    runtime = StandIn()
    rows = texts()
    result = measure_parity(runtime, tokenizer, rows, reference_for(runtime, tokenizer, rows))
    assert list(result.modes) == ["alone", "batched", f"padded_{PAD_WIDTH}"]
    assert result.consistency["cosine_min"] == pytest.approx(1.0, abs=1e-6)
    assert all(m["cosine_min"] == pytest.approx(1.0, abs=1e-6) for m in result.modes.values())
    assert min(runtime.widths[len(rows):]) >= 2 and max(runtime.widths) >= PAD_WIDTH  # batched and padded ran


def test_batch_dependent_runtime_is_caught_and_fails_the_gate(tokenizer):
    """A stand-in for per-tensor dynamic int8: each row's quantization follows the whole batch."""
    runtime = StandIn(coupling=1.0)
    rows = texts()
    result = measure_parity(runtime, tokenizer, rows, reference_for(StandIn(), tokenizer, rows))
    assert result.consistency["cosine_min"] < 0.999
    assert result.worst_mode != "alone"
    assert result.headline["cosine_min"] == min(m["cosine_min"] for m in result.modes.values())
    metrics = {"batch_consistency": result.consistency}
    failing = [c.metric for c in gate.failures(gate.threshold_checks(metrics, THRESHOLDS["int8"]))]
    assert "batch_consistency.cosine_min" in failing


def test_nan_in_one_mode_is_a_failure_not_skipped(tokenizer):
    runtime = StandIn(nan_when_padded_to=PAD_WIDTH)
    rows = texts()
    result = measure_parity(runtime, tokenizer, rows, reference_for(StandIn(), tokenizer, rows))
    padded = result.modes[f"padded_{PAD_WIDTH}"]
    assert padded["nonfinite"] == len(rows) and padded["cosine_min"] == parity.FAILED_COSINE
    assert result.headline["nonfinite"] == len(rows) and result.headline["cosine_min"] == parity.FAILED_COSINE
    assert result.headline["max_abs_diff"] is None  # NaN: reported as missing, which the gate fails
    assert result.consistency["cosine_min"] == parity.FAILED_COSINE
    assert result.modes["alone"]["nonfinite"] == 0


def test_runtime_with_buckets_runs_the_512_bucket_only_when_it_has_one(tokenizer):
    rows = texts()
    with_512 = StandIn(buckets=[32, 128, 512, 2048])
    measure_parity(with_512, tokenizer, rows, reference_for(with_512, tokenizer, rows))
    assert PAD_WIDTH in with_512.widths and 32 in with_512.widths
    small = StandIn(buckets=[32, 128])
    result = measure_parity(small, tokenizer, rows, reference_for(small, tokenizer, rows))
    assert list(result.modes) == ["alone", "batched"] and max(small.widths) == 128


def test_reference_max_length_is_per_call(tiny_reference):
    """Two callers truncating differently must not change each other's results through shared state."""
    text = ["the quick brown fox jumps over the lazy dog " * 30]
    full = tiny_reference.encode(text, prompt_name="document")
    short = tiny_reference.encode(text, prompt_name="document", max_length=16)
    assert tiny_reference.model.max_seq_length == tiny_reference.max_length  # restored after the call
    assert parity.cosine_rows(full, short)[0] < 0.9999
    np.testing.assert_allclose(tiny_reference.encode(text, prompt_name="document"), full, atol=1e-6)


def test_export_parity_and_validate_use_the_same_path(tiny_bundle, tiny_dir, tmp_path, monkeypatch):
    bundle = tiny_bundle("onnx", 32)
    manifest = json.loads((bundle / "manifest.json").read_text())
    written = manifest["parity"]
    assert set(written["modes"]) == {"alone", "batched", f"padded_{PAD_WIDTH}"}
    assert written["batch_consistency_min"] >= THRESHOLDS["fp32"]["batch_consistency_min"][1]
    assert written["cosine_min"] == min(m["cosine_min"] for m in written["modes"].values())

    calls = []
    real = parity.measure_parity

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    import embg.validate.measure as measure

    monkeypatch.setattr(measure, "measure_parity", spy)
    from embg.cli.validate import main
    from tests.conftest import run_cli

    texts_file = tmp_path / "t.txt"
    texts_file.write_text("how do I reset my password\nSettings > Account > Reset password\n", encoding="utf-8")
    code, out, err = run_cli(main, [bundle, "--model", tiny_dir, "--texts", texts_file, "--report", tmp_path / "r",
                                    "--latency-repeats", 1, "--no-memory"])
    assert code == 0, out + err
    assert len(calls) == 1
    entry = json.loads((tmp_path / "r" / "report.json").read_text())["bundles"][0]
    assert set(entry["metrics"]["drift_by_mode"]) == set(written["modes"])
    assert "batch_consistency.cosine_min" in {c["metric"] for c in entry["checks"]}
    assert "alone vs batch" in out and "padded_512" in out
