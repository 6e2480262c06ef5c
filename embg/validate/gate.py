"""The regression gate: compare metrics with the threshold table and, optionally, a baseline report.

Checks are data (metric, value, operator, limit); the gate only evaluates them, so the report can
show every limit beside its value and the exit status follows from the same list.

It fails closed: a metric the table (or the baseline) says to check that is missing from the
report, None or NaN fails its check; nothing is skipped because it is absent. The only
exceptions are stated in the metrics themselves: retrieval with ``k`` 0 (the texts hold no
queries or no documents) and memory marked ``skipped`` (--no-memory, remote devices).
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
    "batch_consistency_min": "batch_consistency.cosine_min",
    "tokenizer_mismatched_texts": "tokenizer.mismatched_texts",
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
    detail: str | None = None  # what failed, when the value alone does not say (missing, which texts)

    def describe(self) -> str:
        text = f"{self.metric} = {_fmt(self.value)} (limit {self.op} {_fmt(self.limit)}"
        if self.baseline is not None:
            text += f", baseline {_fmt(self.baseline)}"
        text += ")"
        return f"{text}: {self.detail}" if self.detail and not self.passed else text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(value: float | None) -> str:
    return "NaN/inf/missing" if value is None else f"{value:.6g}"


MISSING = "missing from the report: a metric that should be checked and is absent fails"


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
    # the one NaN rule: None (NaN/inf/missing) and NaN fail every comparison
    passed = value is not None and value == value and OPERATORS[op](value, limit)
    return Check(metric, value, op, limit, bool(passed), **extra)


def not_applicable(metrics: dict[str, Any], path: str) -> bool:
    """Stated in the metrics themselves: retrieval without queries or documents, memory not measured."""
    group = metrics.get(path.split(".", 1)[0])
    if path.startswith("retrieval."):
        return isinstance(group, dict) and group.get("k") == 0
    if path.startswith("memory."):
        return isinstance(group, dict) and "skipped" in group
    return False


def threshold_checks(metrics: dict[str, Any], limits: dict[str, tuple[str, float]],
                     details: dict[str, str] | None = None) -> list[Check]:
    """One check per limit in the table; ``details`` explain failures (e.g. which texts) by metric path."""
    flat = flatten(metrics)
    details = details or {}
    checks = []
    for key, path in METRIC_SOURCES.items():
        if key not in limits or not_applicable(metrics, path):
            continue
        if path in flat:
            checks.append(_evaluate(path, flat[path], *limits[key], detail=details.get(path)))
        else:
            checks.append(_evaluate(path, None, *limits[key], detail=MISSING))
    dims = metrics.get("matryoshka")
    wanted = [key for key in MATRYOSHKA_SOURCES if key in limits]
    if wanted and (not isinstance(dims, dict) or not dims):
        checks.append(_evaluate("matryoshka", None, *limits[wanted[0]], detail=MISSING))
    for dim in dims or {}:
        for key, field in MATRYOSHKA_SOURCES.items():
            path = f"matryoshka.{dim}.{field}"
            if key in limits:
                checks.append(_evaluate(path, flat.get(path), *limits[key],
                                        detail=None if path in flat else MISSING))
    return checks


def baseline_checks(metrics: dict[str, Any], baseline: dict[str, Any]) -> list[Check]:
    """Fail when a metric got worse than the baseline bundle's by more than its stated margin, or when a
    metric the baseline holds is missing from this run (latency buckets: those both runs measured)."""
    flat, old = flatten(metrics), flatten(baseline)
    checks = []
    for pattern, kind, margin in BASELINE_MARGINS:
        wildcard = "*" in pattern
        paths = sorted(p for p in old if fnmatch.fnmatchcase(p, pattern) and old[p] is not None)
        if wildcard:
            common = [p for p in paths if p in flat]
            if paths and not common:
                checks.append(Check(pattern, None, "<=" if kind == "rise" else ">=", 0.0, False, source="baseline",
                                    detail="none of the baseline's entries were measured in this run"))
            paths = common
        for path in paths:
            if not_applicable(metrics, path):
                continue
            before, now = old[path], flat.get(path)
            if path not in flat:
                checks.append(Check(path, None, "<=" if kind == "rise" else ">=", before, False, source="baseline",
                                    baseline=before, detail=MISSING))
                continue
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
