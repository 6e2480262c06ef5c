"""Pass/fail limits per precision class, and how much worse than a baseline a run may get.

One table, read by the gate and printed beside every value in the reports. A recipe maps to a
class by its narrowest weights (fp32 -> "fp32", any 8-bit group -> "int8", any 4-bit group ->
"int4"), so a user recipe file gets the limits of the precision it actually uses.

Why these numbers: fp32 bundles must equal sentence-transformers up to float rounding;
int8 dynamic-range bundles of the full-size architecture measured cosine min 0.997-0.999
(docs/measurements.md); int4 mixes measured 0.976-0.98 on random weights, which exaggerate int4
drift, and the real Q4_0 QAT checkpoints lose ~0.5 MTEB points, so int4 gets a looser floor.
batch_consistency_min is the cosine between a text embedded alone and the same text inside a padded
batch (embg.parity): an embedding must not depend on its neighbours or its padding, beyond
kernel rounding for fp32 and a little more for quantized recipes. tokenizer_mismatched_texts counts
texts that the bundle's own tokenizer files encode differently from the reference checkpoint's.
"""

from __future__ import annotations

from typing import Any

# metric -> (operator, limit). Operators: ">=" value must be at least the limit; "<=" at most.
THRESHOLDS: dict[str, dict[str, tuple[str, float]]] = {
    "fp32": {
        "cosine_min": (">=", 0.9999), "cosine_p1": (">=", 0.9999), "cosine_mean": (">=", 0.99999),
        "max_abs_diff": ("<=", 1e-3), "nonfinite": ("<=", 0),
        "top10_overlap_mean": (">=", 0.98), "spearman_mean": (">=", 0.999), "kendall_mean": (">=", 0.99),
        "cross_recall_at_10": (">=", 0.98),
        "matryoshka_cosine_min": (">=", 0.9999), "matryoshka_cosine_mean": (">=", 0.99999),
        "batch_consistency_min": (">=", 0.99999), "tokenizer_mismatched_texts": ("<=", 0),
    },
    "int8": {
        "cosine_min": (">=", 0.995), "cosine_p1": (">=", 0.995), "cosine_mean": (">=", 0.998),
        "max_abs_diff": ("<=", 0.05), "nonfinite": ("<=", 0),
        "top10_overlap_mean": (">=", 0.90), "spearman_mean": (">=", 0.98), "kendall_mean": (">=", 0.90),
        "cross_recall_at_10": (">=", 0.90),
        "matryoshka_cosine_min": (">=", 0.99), "matryoshka_cosine_mean": (">=", 0.997),
        "batch_consistency_min": (">=", 0.999), "tokenizer_mismatched_texts": ("<=", 0),
    },
    "int4": {
        "cosine_min": (">=", 0.95), "cosine_p1": (">=", 0.95), "cosine_mean": (">=", 0.97),
        "max_abs_diff": ("<=", 0.15), "nonfinite": ("<=", 0),
        "top10_overlap_mean": (">=", 0.80), "spearman_mean": (">=", 0.90), "kendall_mean": (">=", 0.75),
        "cross_recall_at_10": (">=", 0.80),
        "matryoshka_cosine_min": (">=", 0.93), "matryoshka_cosine_mean": (">=", 0.96),
        "batch_consistency_min": (">=", 0.999), "tokenizer_mismatched_texts": ("<=", 0),
    },
}

# narrowest weight bits in the recipe -> threshold class
BITS_TO_CLASS: dict[int, str] = {32: "fp32", 16: "int8", 8: "int8", 6: "int4", 4: "int4", 2: "int4"}

# With --baseline: (metric path pattern, kind, margin). "drop": fails when value < baseline - margin;
# "rise": fails when value > baseline * (1 + margin). Latency is a ratio because hosts differ in speed
# only through the baseline; cosine is absolute because it is already on a fixed scale.
BASELINE_MARGINS: tuple[tuple[str, str, float], ...] = (
    ("drift.cosine_mean", "drop", 0.001),
    ("drift.cosine_min", "drop", 0.001),
    ("retrieval.cross_recall_at_10", "drop", 0.02),
    ("latency.buckets.*.p50_ms", "rise", 0.25),
    ("memory.runtime_rss_mb", "rise", 0.20),
    ("size.model_file_mb", "rise", 0.05),
)
# What a baseline bundle must hold (numbers, not missing or NaN): a baseline without them would gate nothing.
# Retrieval, latency buckets and memory may be absent in it (texts without documents, --no-memory); when
# present they are compared, and a metric the baseline has but this run lost fails.
BASELINE_REQUIRED: tuple[str, ...] = ("drift.cosine_mean", "drift.cosine_min", "size.model_file_mb")


def check_baseline_metrics(metrics: dict[str, Any]) -> list[str]:
    """The required baseline metrics that are missing or not a finite number."""
    missing = []
    for path in BASELINE_REQUIRED:
        value: Any = metrics
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value or value in (
                float("inf"), float("-inf")):
            missing.append(path)
    return missing

OPERATORS = {
    ">=": lambda value, limit: value >= limit,
    "<=": lambda value, limit: value <= limit,
}


def threshold_class(recipe: dict[str, Any]) -> str:
    """The class whose limits apply to a manifest's recipe dict."""
    rules = list((recipe.get("rules") or {}).values())
    rules += [rule for layer in (recipe.get("layer_rules") or {}).values() for rule in layer.values()]
    bits = [int(rule.get("bits", 32)) for rule in rules]
    narrowest = min(bits, default=32)
    return BITS_TO_CLASS.get(narrowest, "int4" if narrowest < 8 else "fp32")


def limits_for(recipe: dict[str, Any]) -> tuple[str, dict[str, tuple[str, float]]]:
    name = threshold_class(recipe)
    return name, THRESHOLDS[name]


def parity_shortfalls(manifest: dict[str, Any]) -> list[str]:
    """The export-time parity figures (manifest ``parity``) under embg-validate's limits for the bundle's
    class: a bundle that will fail validation, said at export time. Empty when parity was skipped."""
    parity = manifest.get("parity") or {}
    name, limits = limits_for(manifest.get("recipe") or {})
    found = []
    for metric in ("cosine_min", "cosine_mean"):
        value, (operator, limit) = parity.get(metric), limits[metric]
        if value is not None and not OPERATORS[operator](value, limit):
            found.append(f"{metric} {value:.4f} (embg-validate's {name} gate: {operator} {limit:g})")
    return found
