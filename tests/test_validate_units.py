"""embg-validate building blocks: metrics, texts, thresholds, gate (no bundles needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from embg.errors import EmbgError
from embg.parity import metrics
from embg.parity.path import length_batches
from embg.textdata.sets import builtin_texts, check_tasks, load_texts_file
from embg.validate import gate
from embg.validate.summary import markdown_summary
from embg.validate.thresholds import THRESHOLDS, threshold_class


def test_rank_correlations_match_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=40)
    b = a + rng.normal(scale=0.3, size=40)
    b[3] = b[4]  # a tie
    assert metrics.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-9)
    assert metrics.kendall_tau_b(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-9)


def test_rank_correlations_are_one_when_there_is_no_order_to_disagree_about():
    one, tied, ordered = np.array([0.3]), np.array([0.5, 0.5, 0.5]), np.array([0.1, 0.2, 0.3])
    assert metrics.spearman(one, one) == 1.0 and metrics.kendall_tau_b(one, one) == 1.0
    assert metrics.spearman(tied, ordered) == 1.0 and metrics.kendall_tau_b(ordered, tied) == 1.0
    assert metrics.spearman(ordered, ordered[::-1]) == pytest.approx(-1.0)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_retrieval_identical_is_perfect_and_noise_is_not():
    rng = np.random.default_rng(1)
    q, d = _unit(rng.normal(size=(6, 32))), _unit(rng.normal(size=(25, 32)))
    same = metrics.retrieval(q, d, q, d)
    assert same["top10_overlap_mean"] == 1.0 and same["spearman_mean"] == 1.0 and same["cross_recall_at_10"] == 1.0
    noisy = metrics.retrieval(_unit(q + rng.normal(scale=0.5, size=q.shape)), d, q, d)
    assert noisy["spearman_mean"] < 0.99 and noisy["cross_recall_at_10"] < 1.0


def test_drift_counts_nan_rows_as_failures():
    ref = _unit(np.eye(4, 8) + 0.1)
    ours = ref.copy()
    ours[2] = np.nan
    summary, cos = metrics.drift(ours, ref)
    assert summary["nonfinite"] == 1 and summary["cosine_min"] == -1.0 and summary["max_abs_diff"] is None
    assert cos[0] == pytest.approx(1.0)


def test_matryoshka_renormalise():
    x = _unit(np.arange(1, 9, dtype=np.float32)[None])
    cut = metrics.renormalise(x, 4)
    assert cut.shape == (1, 4) and np.linalg.norm(cut) == pytest.approx(1.0)


def test_builtin_texts_cover_scripts_edges_and_long(tiny_model):
    rows = builtin_texts()
    joined = "".join(r.text for r in rows)
    for low, high in ((0x0400, 0x04FF), (0x0600, 0x06FF), (0x4E00, 0x9FFF), (0x0900, 0x097F), (0x1F300, 0x1FAFF)):
        assert any(low <= ord(c) <= high for c in joined), hex(low)
    assert {"", "   "} <= {r.text for r in rows}
    assert {r.task for r in rows} == {"query", "document"}
    assert {"query", "document", "code", "medium", "long", "edge"} <= {r.kind for r in rows}
    tok = tiny_model.tokenizer.backend
    lengths = {r.kind: len(tok(r.text)["input_ids"]) for r in rows if r.kind in ("long",)}
    assert lengths["long"] > 2048  # crosses the largest bucket (and the real model's 2048 positions)
    # the real Gemma tokenizer packs ~4 characters per token: keep the long text well above 2048 * 4
    assert max(len(r.text) for r in rows) > 2048 * 5


def test_texts_file_plain_and_jsonl(tmp_path, tiny_model):
    plain = tmp_path / "plain.txt"
    plain.write_text("first text\n\nsecond text\n", encoding="utf-8")
    rows = load_texts_file(plain)
    assert [(r.text, r.task) for r in rows] == [("first text", "query"), ("first text", "document"),
                                                ("second text", "query"), ("second text", "document")]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps(x) for x in (
        {"task": "query", "text": "q"}, {"task": "document", "text": "d"}, {"task": "STS", "text": "s"})),
        encoding="utf-8")
    rows = load_texts_file(jsonl)
    assert [r.task for r in rows] == ["query", "document", "STS"]
    check_tasks(rows, tiny_model.spec.prompts)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task": "qurey", "text": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(EmbgError, match="unknown task"):
        check_tasks(load_texts_file(bad), tiny_model.spec.prompts)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(EmbgError, match="empty"):
        load_texts_file(empty)


def test_threshold_class_from_recipe_rules():
    from embg.quantize.recipe import recipe_for_bits

    assert threshold_class(recipe_for_bits(32).to_dict()) == "fp32"
    assert threshold_class(recipe_for_bits(8).to_dict()) == "int8"
    assert threshold_class(recipe_for_bits(4).to_dict()) == "int4"
    # int4 only in some layers: the int4 limits apply
    layered = {**recipe_for_bits(8).to_dict(), "layer_rules": {"0-3": {"down_proj": {
        "bits": 4, "granularity": "block", "block_size": 32, "algorithm": "gptq"}}}}
    assert threshold_class(layered) == "int4"
    # one table, same metrics for every class, stricter for wider types
    assert set(THRESHOLDS["fp32"]) == set(THRESHOLDS["int8"]) == set(THRESHOLDS["int4"])
    assert THRESHOLDS["fp32"]["cosine_min"][1] > THRESHOLDS["int8"]["cosine_min"][1] > THRESHOLDS["int4"]["cosine_min"][1]


def passing_metrics(**changes) -> dict:
    """Every metric the int8 table checks, at a passing value; ``changes`` override by dotted path."""
    metrics = {"drift": {"cosine_min": 0.996, "cosine_p1": 0.996, "cosine_mean": 0.9985, "max_abs_diff": 0.01,
                         "nonfinite": 0},
               "retrieval": {"k": 10, "top10_overlap_mean": 0.95, "spearman_mean": 0.99, "kendall_mean": 0.95,
                             "cross_recall_at_10": 0.95},
               "batch_consistency": {"cosine_min": 0.9995}, "tokenizer": {"mismatched_texts": 0},
               "latency": {"buckets": {"seq16_b1": {"p50_ms": 10.0}}}, "matryoshka": {"16": {"cosine_min": 0.995,
                                                                                        "cosine_mean": 0.998}},
               "memory": {"runtime_rss_mb": 100.0}, "size": {"model_file_mb": 3.0}}
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = metrics
        for part in parents:
            node = node[part]
        if value is gate.MISSING:
            del node[leaf]
        else:
            node[leaf] = value
    return metrics


def test_gate_thresholds_and_baseline_margins():
    current = passing_metrics(**{"matryoshka.16.cosine_min": 0.98})
    checks = gate.threshold_checks(current, THRESHOLDS["int8"])
    failing = [c.metric for c in gate.failures(checks)]
    assert failing == ["matryoshka.16.cosine_min"]
    old = {"drift": {"cosine_min": 0.996, "cosine_mean": 0.9999}, "latency": {"buckets": {"seq16_b1": {"p50_ms": 5.0}}}}
    base = {c.metric: c for c in gate.baseline_checks(current, old)}
    assert not base["drift.cosine_mean"].passed and base["drift.cosine_mean"].change == pytest.approx(-0.0014)
    assert base["drift.cosine_min"].passed
    assert not base["latency.buckets.seq16_b1.p50_ms"].passed
    assert base["latency.buckets.seq16_b1.p50_ms"].change == pytest.approx(1.0)


@pytest.mark.parametrize("path", ["drift.cosine_min", "drift.cosine_mean", "drift.nonfinite", "retrieval.spearman_mean",
                                  "batch_consistency.cosine_min", "tokenizer.mismatched_texts",
                                  "matryoshka.16.cosine_mean", "matryoshka"])
def test_gate_fails_closed_on_a_missing_metric(path):
    """A report whose metric disappeared must not pass: the check is there and fails, naming why."""
    assert not gate.failures(gate.threshold_checks(passing_metrics(), THRESHOLDS["int8"]))
    checks = gate.threshold_checks(passing_metrics(**{path: gate.MISSING}), THRESHOLDS["int8"])
    failing = gate.failures(checks)
    assert [c.metric for c in failing] == [path]
    assert "missing" in failing[0].describe()


@pytest.mark.parametrize("value", [None, float("nan")])
@pytest.mark.parametrize("path", ["drift.cosine_min", "drift.max_abs_diff", "batch_consistency.cosine_min"])
def test_gate_fails_on_nan(path, value):
    failing = gate.failures(gate.threshold_checks(passing_metrics(**{path: value}), THRESHOLDS["int8"]))
    assert [c.metric for c in failing] == [path]


def test_gate_skips_only_what_the_metrics_say_is_not_applicable():
    """Not measured on this kind of row by design (and said so in the row) is a "not applicable" check with
    the reason, shown in the report; the same metric absent without such a statement fails."""
    no_documents = passing_metrics(retrieval={"queries": 4, "documents": 0, "k": 0})
    checks = gate.threshold_checks(no_documents, THRESHOLDS["int8"])
    assert not gate.failures(checks)
    skipped = {c.metric: c for c in checks if not c.applicable}
    assert set(skipped) == {f"retrieval.{k}" for k in ("top10_overlap_mean", "spearman_mean", "kendall_mean",
                                                        "cross_recall_at_10")}
    assert "no queries or no documents" in skipped["retrieval.spearman_mean"].describe()

    rows = {"no-memory": {"skipped": "--no-memory"},
            "ssh": {"skipped": "peak RSS is measured on this host only, not on ssh:pi"},
            "aihub": {"source": "farm", "inference_peak_mb": 80.0,
                      "not_measured": {"runtime_rss_mb": "the farm reports its own peak memory"}}}
    for name, memory in rows.items():
        checks = gate.baseline_checks(passing_metrics(memory=memory), passing_metrics())
        assert not gate.failures(checks), name
        (check,) = [c for c in checks if c.metric.startswith("memory.")]
        assert not check.applicable and check.detail and "not applicable" in check.describe(), name
    undeclared = gate.baseline_checks(passing_metrics(memory={"source": "farm", "inference_peak_mb": 80.0}),
                                      passing_metrics())
    assert [c.metric for c in gate.failures(undeclared)] == ["memory.runtime_rss_mb"]


def test_summary_says_what_was_not_gated_on_a_row():
    checks = gate.baseline_checks(passing_metrics(memory={"skipped": "not on ssh:pi"}), passing_metrics())
    entry = {"name": "b", "combination": "ssh:pi/onnxruntime/b", "threshold_class": "int8", "passed": True,
             "metrics": passing_metrics(), "runtime": {"runtime": "onnxruntime"},
             "checks": [c.to_dict() for c in checks]}
    report = {"passed": True, "bundles": [entry], "texts": {"count": 3}, "device": {}, "seconds": 1,
              "failures": []}
    entry["metrics"]["latency"]["buckets"]["seq16_b1"].update(seq_len=16, batch=1)
    summary = markdown_summary(report)
    assert "Not measured on this kind of row" in summary
    assert "ssh:pi/onnxruntime/b: memory.runtime_rss_mb: not on ssh:pi" in summary


def test_baseline_fails_closed_when_this_run_lost_a_metric():
    baseline = passing_metrics()
    for path in ("drift.cosine_min", "size.model_file_mb", "retrieval.cross_recall_at_10", "memory.runtime_rss_mb"):
        failing = gate.failures(gate.baseline_checks(passing_metrics(**{path: gate.MISSING}), baseline))
        assert [c.metric for c in failing] == [path], path
    lost_buckets = passing_metrics(latency={"buckets": {"seq99_b1": {"p50_ms": 1.0}}})
    assert [c.metric for c in gate.failures(gate.baseline_checks(lost_buckets, baseline))] == [
        "latency.buckets.*.p50_ms"]


def test_length_batches_bound_padding():
    lengths = [5, 2000, 7, 3000, 6, 1500]
    batches = length_batches(lengths, max_rows=8, max_tokens=4096)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len(b) * max(lengths[i] for i in b) <= 4096 or len(b) == 1 for b in batches)
