"""Write a validation report: report.json (the data), summary.md (short, for CI logs), report.html."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from embg.atomic import atomic_write_bytes
from embg.validate.html_report import render_html
from embg.validate.summary import markdown_summary


def write_reports(report: dict[str, Any], directory: Path) -> dict[str, Path]:
    """report.json, summary.md and report.html in ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "report.json", "markdown": directory / "summary.md",
             "html": directory / "report.html"}
    # allow_nan=False: a NaN that slipped through must be a bug we see, not invalid JSON we ship
    texts = {"json": json.dumps(report, indent=2, allow_nan=False) + "\n", "markdown": markdown_summary(report),
             "html": render_html(report)}
    for key, path in paths.items():  # atomic: a reader (or a crash) never sees half a report
        atomic_write_bytes(path, texts[key].encode("utf-8"))
    return paths
