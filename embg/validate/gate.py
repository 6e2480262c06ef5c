"""The regression gate: compare metrics with the threshold table and, optionally, a baseline report.

Checks are data (metric, value, operator, limit); the gate only evaluates them, so the report can
show every limit beside its value and the exit status follows from the same list.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass
from typing import Any

from embg.validate.thresholds import BASELINE_MARGINS, OPERATORS

# threshold-table key -> where its value lives in a bundle's metrics
METRIC_SOURCES: dict[str, str] = {
    "cosine_min": "drift.cosine_min",
    "cosine_p1": "drift.cosine_p1",
    "cosine_mean": "drift.cosine_mean",
    "max_abs_diff": "drift.max_abs_diff",
    "nonfinite": "drift.nonfinite",
    "top10_overlap_mean": "retrieval.top10_overlap_mean",
    "spearman_mean": "retrieval.spearman_mean",
    "kendall_mean": "retrieval.kendall_mean",
    "cross_recall_at_10": "retrieval.cross_recall_at_10",
}
# per Matryoshka dim: threshold key -> field of that dim's drift
MATRYOSHKA_SOURCES: dict[str, str] = {
    "matryoshka_cosine_min": "cosine_min",
    "matryoshka_cosine_mean": "cosine_mean",
}


@dataclass
class Check:
    metric: str
    value: float | None
    op: str
    limit: float
    passed: bool
    source: str = "threshold"  # or "baseline"
    baseline: float | None = None
    change: float | None = None  # absolute for "drop" rules, relative for "rise" rules

    def describe(self) -> str:
        text = f"{self.metric} = {_fmt(self.value)} (limit {self.op} {_fmt(self.limit)}"
        if self.baseline is not None:
            text += f", baseline {_fmt(self.baseline)}"
        return text + ")"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(value: float | None) -> str:
    return "NaN/inf" if value is None else f"{value:.6g}"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """{"a": {"b": 1}} -> {"a.b": 1}, numeric leaves only (None kept: it means NaN/inf)."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        elif value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            out[path] = value
    return out


def _evaluate(metric: str, value: float | None, op: str, limit: float, **extra: Any) -> Check:
    passed = value is not None and OPERATORS[op](value, limit)
    return Check(metric, value, op, limit, bool(passed), **extra)


def threshold_checks(metrics: dict[str, Any], limits: dict[str, tuple[str, float]]) -> list[Check]:
    flat = flatten(metrics)
    checks = []
    for key, path in METRIC_SOURCES.items():
        if key in limits and path in flat:  # retrieval is absent when the texts hold no queries/documents
            checks.append(_evaluate(path, flat[path], *limits[key]))
    for dim in metrics.get("matryoshka", {}):
        for key, field in MATRYOSHKA_SOURCES.items():
            path = f"matryoshka.{dim}.{field}"
            if key in limits and path in flat:
                checks.append(_evaluate(path, flat[path], *limits[key]))
    return checks


def baseline_checks(metrics: dict[str, Any], baseline: dict[str, Any]) -> list[Check]:
    """Fail when a metric got worse than the baseline bundle's by more than its stated margin."""
    flat, old = flatten(metrics), flatten(baseline)
    checks = []
    for pattern, kind, margin in BASELINE_MARGINS:
        for path in sorted(p for p in flat if fnmatch.fnmatchcase(p, pattern)):
            before, now = old.get(path), flat[path]
            if before is None:
                continue  # metric new since the baseline: nothing to compare
            if kind == "drop":
                checks.append(_evaluate(path, now, ">=", round(before - margin, 9), source="baseline",
                                        baseline=before, change=None if now is None else now - before))
            else:
                relative = None if now is None or not before else now / before - 1.0
                checks.append(_evaluate(path, now, "<=", before * (1.0 + margin), source="baseline",
                                        baseline=before, change=relative))
    return checks


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.passed]
