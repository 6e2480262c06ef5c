"""report.html: one self-contained page (inline CSS, inline SVG plots, no network), rendered from the
Jinja2 template ``templates/report.html`` (package data) with autoescaping; the plots come from
embg/validate/plots.py as SVG markup."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from embg.validate import plots
from embg.validate.summary import failed_label, fmt, markdown_summary


def _change(check: dict[str, Any]) -> str:
    """A check's change against its baseline: relative for "<=" baseline limits, absolute otherwise."""
    change = check["change"]
    if change is None:
        return ""
    return f"{change:+.2%}" if check["op"] == "<=" and check["source"] == "baseline" else f"{change:+.6f}"


def _json(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent)


@cache
def _template():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape  # noqa: F401

    env = Environment(loader=PackageLoader("embg.validate", "templates"), autoescape=select_autoescape(["html"]),
                      keep_trailing_newline=False)
    env.filters.update(fmt=fmt, change=_change, failed_label=failed_label, tojson_plain=_json,
                       engine_label=lambda e: f"{e.get('engine')} {e.get('version')}")
    return env.get_template("report.html")


def _svg(svg: str | None):
    from markupsafe import Markup

    return None if svg is None else Markup(svg)


def render_html(report: dict[str, Any]) -> str:
    status = "PASS" if report["passed"] else "FAIL"
    if report.get("partial"):
        status = "PARTIAL"
    every = report["bundles"]
    entries = [e for e in every if e.get("status", "ok") == "ok"]
    history = report.get("history")
    figures = {
        "latency": _svg(plots.latency_buckets(entries)),
        "size_drift": _svg(plots.size_vs_drift(entries)),
        "cosine_hist": [_svg(plots.cosine_histogram(e)) if e.get("status", "ok") == "ok" else None for e in every],
        "trend_cos": _svg(plots.trend(history, "cos_min")) if history else None,
        "trend_p50": _svg(plots.trend(history, "p50_ms")) if history else None,
    }
    return _template().render(status=status, report=report, summary=markdown_summary(report), history=history,
                              plots=figures)
