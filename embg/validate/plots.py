"""Report plots as inline SVG strings (matplotlib, no files, no external resources).

Each function returns the ``<svg ...>`` element only, ready to embed in the HTML page; without
matplotlib (the ``report`` extra) they return None and the page says how to get the plots.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False})
    return plt


def _label(entry: dict[str, Any]) -> str:
    """Device rows say where they ran: the same bundle on two devices is two series."""
    on_device = entry.get("device", "in-process") != "in-process"
    return entry["combination"] if on_device and entry.get("combination") else entry["name"]


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: not allowed inside HTML


def cosine_histogram(entry: dict[str, Any]) -> str | None:
    plt = _pyplot()
    if plt is None:
        return None
    hist = entry["cosine_histogram"]
    edges, counts = np.asarray(hist["edges"]), np.asarray(hist["counts"])
    fig, ax = plt.subplots(figsize=(5.2, 2.6))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c78a8", edgecolor="white")
    op, limit = entry["thresholds"].get("cosine_min", (">=", None))
    if limit is not None:
        ax.axvline(limit, color="#d62728", linestyle="--", linewidth=1)
        ax.text(limit, max(counts.max(), 1) * 0.95, f" min {op} {limit:g}", color="#d62728", fontsize=8, va="top")
    ax.set_xlabel("cosine vs reference (per text)")
    ax.set_ylabel("texts")
    ax.set_title(f"{_label(entry)} ({entry['threshold_class']})")
    ax.ticklabel_format(axis="x", useOffset=False)
    return _svg(fig)


def latency_buckets(entries: list[dict[str, Any]]) -> str | None:
    plt = _pyplot()
    if plt is None:
        return None
    keys = sorted({k for e in entries for k in e["metrics"]["latency"]["buckets"]},
                  key=lambda k: tuple(int(p) for p in k.replace("seq", "").split("_b")))
    fig, ax = plt.subplots(figsize=(max(5.2, 0.9 * len(keys) + 2), 2.8))
    width = 0.8 / max(len(entries), 1)
    for i, entry in enumerate(entries):
        buckets = entry["metrics"]["latency"]["buckets"]
        x = np.array([j for j, k in enumerate(keys) if k in buckets]) + i * width
        p50 = np.array([buckets[k]["p50_ms"] for k in keys if k in buckets])
        p90 = np.array([buckets[k]["p90_ms"] for k in keys if k in buckets])
        ax.bar(x, p50, width, label=_label(entry), yerr=[np.zeros_like(p50), p90 - p50], capsize=2)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, keys, rotation=30, ha="right")
    ax.set_ylabel("warm p50 ms (bar) to p90")
    ax.set_title("latency per sequence bucket x batch")
    ax.legend(fontsize=7, frameon=False)
    return _svg(fig)


def size_vs_drift(entries: list[dict[str, Any]]) -> str | None:
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 2.8))
    for entry in entries:
        size = entry["metrics"]["size"]["model_file_mb"]
        mean = entry["metrics"]["drift"]["cosine_mean"]
        drift = max(1.0 - (mean if mean is not None else 0.0), 1e-8)  # log scale: fp32 drift can be ~0
        ax.scatter([size], [drift], s=30)
        ax.annotate(_label(entry), (size, drift), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel("model file MB")
    ax.set_ylabel("1 - mean cosine")
    ax.set_title("size vs drift")
    return _svg(fig)


def trend(history: dict[str, Any], metric: str) -> str | None:
    """One line per combination over the history's runs (metric: "cos_min" or "p50_ms")."""
    plt = _pyplot()
    if plt is None:
        return None
    runs = history["runs"]
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    for combination, points in sorted(history["trend"].items()):
        xs = [i for i, p in enumerate(points) if p.get(metric) is not None]
        ys = [points[i][metric] for i in xs]
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, label=combination)
    ax.set_xticks(range(len(runs)), [r[:16] for r in runs], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("cosine min" if metric == "cos_min" else "p50 ms (longest bucket)")
    if metric == "cos_min":
        ax.ticklabel_format(axis="y", useOffset=False)
    ax.legend(fontsize=6, frameon=False)
    return _svg(fig)
