"""PNG plots: latency vs sequence length per variant (one panel per thread count), size vs drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.plan import BASELINE

LENGTH_KEYS = {"q16": 16, "s64": 64, "s256": 256, "s512": 512, "s1024": 1024, "s2048": 2048}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _style(name: str) -> dict[str, Any]:
    if name == BASELINE:
        return {"color": "black", "linestyle": "-", "linewidth": 2.2}
    color = {"fp32": "tab:gray", "int8": "tab:blue", "int4": "tab:orange", "int4-qat": "tab:green",
             "int4-naive": "tab:red"}.get(name.split("-", 1)[1].split("@")[0], "tab:purple")
    return {"color": color, "linestyle": "--" if name.startswith("onnx") else "-",
            "marker": "o" if name.startswith("onnx") else "s", "markersize": 4}


def plot_latency(results: dict[str, Any], path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    threads = [str(t) for t in results["plan"]["threads"]]
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 4.5), squeeze=False, sharey=True)
    for ax, t in zip(axes[0], threads):
        for name, entry in results["variants"].items():
            points = [(n, (entry["latency"].get(t, {}).get(k) or {}).get("median_ms"))
                      for k, n in LENGTH_KEYS.items()]
            points = [(n, ms) for n, ms in points if ms]
            if points:
                ax.plot(*zip(*points), label=name, **_style(name))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens (batch 1; TFLite runs the smallest bucket that fits)")
        ax.set_title(f"{t} thread{'s' if t != '1' else ''}: median of {results['plan']['repeats']} interleaved runs")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("latency ms")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"EmbeddingGemma bundles vs PyTorch eager ({results['fixture']} fixture, {results['machine']['cpu']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_size_drift(results: dict[str, Any], path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, entry in results["variants"].items():
        drift = entry.get("drift") or {}
        if name == BASELINE or drift.get("cosine_mean") is None:
            continue
        mean_gap = max(1.0 - drift["cosine_mean"], 1e-7)  # fp32 is exact to ~1e-7: clip so log axes work
        min_gap = max(1.0 - drift["cosine_min"], 1e-7)
        style = _style(name)
        ax.errorbar(entry["size"]["model_mb"], mean_gap, yerr=[[0], [max(min_gap - mean_gap, 0)]],
                    fmt=style.get("marker", "o"), color=style["color"], capsize=3)
        ax.annotate(name, (entry["size"]["model_mb"], mean_gap), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model file MB")
    ax.set_ylabel("1 − cosine vs reference (mean; bar: worst text)")
    ax.set_title("Size vs drift — RANDOM weights (ranks recipes; not real-model quality)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
