"""Run history for nightly jobs: every report.json kept under a directory, and a trend per combination.

Layout: HISTORY/<UTC timestamp>/report.json (one directory per run, never rewritten). The trend
shows cosine min and the warm p50 of the longest timed bucket for each device/engine/bundle
combination, oldest run first; the last PASSING run is the default baseline of the next one.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from embg.atomic import atomic_write_bytes

MAX_RUNS = 30  # in the trend; older runs stay on disk


def runs(directory: Path) -> list[Path]:
    """report.json files of earlier runs, oldest first (timestamps sort as text)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*/report.json") if p.is_file())


def last_report(directory: Path) -> Path | None:
    """The newest run that passed: a failing night must not become the next night's baseline."""
    for path in reversed(runs(directory)):
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("passed"):
                return path
        except (OSError, json.JSONDecodeError):
            continue
    return None


def record(report: dict[str, Any], directory: Path) -> Path:
    """Store this run's report.json under a new timestamped directory (atomic rename)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = Path(directory) / stamp
    n = 1
    while target.exists():  # two runs in one second: keep both
        target = Path(directory) / f"{stamp}-{n}"
        n += 1
    target.mkdir(parents=True)
    path = target / "report.json"
    atomic_write_bytes(path, (json.dumps(report, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    return path


def _point(entry: dict[str, Any]) -> dict[str, Any]:
    if entry.get("status", "ok") != "ok":
        return {"status": "failed", "cos_min": None, "p50_ms": None}
    buckets = list(entry["metrics"]["latency"]["buckets"].values())
    longest = max(buckets, key=lambda b: (b["seq_len"], b["batch"])) if buckets else None
    return {"status": "ok", "cos_min": entry["metrics"]["drift"].get("cosine_min"),
            "p50_ms": longest["p50_ms"] if longest else None,
            "bucket": f"seq{longest['seq_len']}_b{longest['batch']}" if longest else None}


def _key(entry: dict[str, Any]) -> str:
    return entry.get("combination") or entry["name"]


def trend(directory: Path, current: dict[str, Any]) -> dict[str, Any]:
    """{"runs": [created...], "trend": {combination: [point per run]}} over earlier runs + this one."""
    reports = []
    for path in runs(directory)[-(MAX_RUNS - 1):]:
        try:
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue  # a damaged old run must not break tonight's report
    reports.append(current)
    combos = sorted({_key(e) for r in reports for e in r.get("bundles", [])})
    table: dict[str, list[dict[str, Any]]] = {c: [] for c in combos}
    for report in reports:
        rows = {_key(e): e for e in report.get("bundles", [])}
        for combo in combos:
            table[combo].append(_point(rows[combo]) if combo in rows else {"status": "absent", "cos_min": None,
                                                                           "p50_ms": None})
    return {"runs": [r.get("created", "?") for r in reports], "trend": table}
