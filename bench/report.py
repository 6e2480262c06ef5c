"""Outputs: results.json, table.md (README block between markers, details below it), PNG plots,
and --write-readme (copy the marked block into README.md)."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from bench.plan import BASELINE
from bench.targets import evaluate_targets

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
LENGTHS = ("q16", "s64", "s256", "s512", "s1024", "s2048")
TOKENS = {"q16": 16, "s64": 64, "s256": 256, "s512": 512, "s1024": 1024, "s2048": 2048}
LONG = ("s512", "s1024", "s2048")
DENSE_SUFFIX = "-dense"  # variants exported with attention=dense: the graph before banding


def _ms(entry: dict[str, Any], threads: str, key: str) -> str:
    stats = entry["latency"].get(threads, {}).get(key) or {}
    value = stats.get("median_ms")
    if value is None:
        return "–"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _drift(entry: dict[str, Any]) -> str:
    if entry["target"] == "torch":
        return "reference"
    d = entry.get("drift") or {}
    if d.get("nonfinite"):
        return f"NaN in {d['nonfinite']} text(s)"
    if d.get("cosine_min") is None:
        return "–"
    digits = 6 if d["cosine_min"] >= 0.999 else 4  # near-exact variants differ in the 5th-6th digit
    return f"{d['cosine_min']:.{digits}f} / {d['cosine_mean']:.{digits}f}"


def _export(entry: dict[str, Any]) -> str:
    record = entry.get("export")
    if not record:
        return "–"
    return f"{record['wall_s']:.0f} s / {record['peak_rss_mb'] / 1024:.1f} GB"


def main_table(results: dict[str, Any]) -> list[str]:
    lines = ["| variant | size MB | drift min / mean (random weights) | ms @16 | ms @256 | ms @512 | ms @1024 "
             "| ms @2048 | × eager @256 | × eager @2048 | runtime RSS @256 MB | cold load s | export time / peak RSS |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, entry in results["variants"].items():
        probe = entry.get("probe") or {}
        speed = (entry.get("speedup_vs_eager") or {}).get("1", {}).get("s256")
        speed2048 = (entry.get("speedup_vs_eager") or {}).get("1", {}).get("s2048")
        bucket = (entry["latency"].get("1", {}).get("q16") or {}).get("bucket")
        q16 = _ms(entry, "1", "q16") + (f" (b{bucket})" if bucket else "")
        lines.append(
            f"| {name} | {_mb(entry['size']['model_mb'])} | {_drift(entry)} | {q16} | {_ms(entry, '1', 's256')} "
            f"| {_ms(entry, '1', 's512')} | {_ms(entry, '1', 's1024')} | {_ms(entry, '1', 's2048')} "
            f"| {_x(speed) if name != BASELINE else '1×'} | {_x(speed2048) if name != BASELINE else '1×'} "
            f"| {_mb(probe.get('runtime_rss_mb'))} | {_seconds(probe.get('load_s'))} | {_export(entry)} |")
    return lines


def threads_table(results: dict[str, Any], threads: str) -> list[str]:
    keys = [k for k in LENGTHS if any(k in e["latency"].get(threads, {}) for e in results["variants"].values())]
    head = " | ".join(f"ms @{TOKENS[k]} (× eager)" for k in keys)
    lines = [f"| variant ({threads} thread{'s' if threads != '1' else ''}) | {head} | ms 8×256 per text |",
             "|---|" + "---:|" * (len(keys) + 1)]
    for name, entry in results["variants"].items():
        cells = []
        for key in keys:
            speed = (entry.get("speedup_vs_eager") or {}).get(threads, {}).get(key)
            cells.append(f"{_ms(entry, threads, key)} ({_x(speed)})" if name != BASELINE else _ms(entry, threads, key))
        batch = (entry["latency"].get(threads, {}).get("s256_b8") or {}).get("median_ms")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'–' if batch is None else f'{batch / 8:.0f}'} |")
    return lines


def long_text_table(results: dict[str, Any]) -> list[str]:
    """512-2048 tokens: ms, × eager, growth from 512 to 2048 tokens (4× the tokens), and banded vs dense."""
    if not any("s2048" in e["latency"].get("1", {}) for e in results["variants"].values()):
        return []
    lines = ["| variant (1 thread) | " + " | ".join(f"ms @{TOKENS[k]} (× eager)" for k in LONG)
             + " | 2048 / 512 tokens | banded over dense @1024 / @2048 |", "|---|" + "---:|" * (len(LONG) + 2)]
    for name, entry in results["variants"].items():
        cells = []
        for key in LONG:
            speed = (entry.get("speedup_vs_eager") or {}).get("1", {}).get(key)
            cells.append(_ms(entry, "1", key) + ("" if name == BASELINE else f" ({_x(speed)})"))
        lat = entry["latency"].get("1", {})
        long_ms, short_ms = (lat.get("s2048") or {}).get("median_ms"), (lat.get("s512") or {}).get("median_ms")
        growth = f"{long_ms / short_ms:.1f}×" if long_ms and short_ms else "–"
        dense = results["variants"].get(name + DENSE_SUFFIX)
        versus = "–"
        if dense:
            ratios = [(dense["latency"].get("1", {}).get(k) or {}).get("median_ms") for k in ("s1024", "s2048")]
            ours = [(lat.get(k) or {}).get("median_ms") for k in ("s1024", "s2048")]
            versus = " / ".join(_x(d / o) if d and o else "–" for d, o in zip(ratios, ours))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {growth} | {versus} |")
    flops, dense = results["model_flops"], results.get("model_flops_dense_sliding", {})
    if "2048" in flops and "2048" in dense:
        lines += ["", f"Attention work at 2048 tokens: {flops['2048']['attention'] / 1e9:.0f} GFLOP banded vs "
                  f"{dense['2048']['attention'] / 1e9:.0f} GFLOP dense (linear layers {flops['2048']['linear'] / 1e9:.0f} "
                  "GFLOP), computed from config.json."]
    return lines


def short_query_table(results: dict[str, Any]) -> list[str]:
    lines = ["| variant | threads | 16 tokens in its bucket ms | same query padded to 256 ms | padded / fitted |",
             "|---|---:|---:|---:|---:|"]
    for name, entry in results["variants"].items():
        for threads, row in (entry.get("short_query") or {}).items():
            if row["padded256_ms"] is None:
                continue
            where = f"bucket {row['q16_bucket']}" if row["q16_bucket"] else "dynamic shape"
            lines.append(f"| {name} | {threads} | {row['q16_ms']:.1f} ({where}) | {row['padded256_ms']:.1f} "
                         f"| {_x(row['padded_over_fitted'])} |")
    return lines


def machine_table(results: dict[str, Any]) -> list[str]:
    limit = results["machine_limit"]
    lines = [f"Machine limit, 1 thread, M={limit['m']} (best over {limit['samples']} samples taken during the loop), "
             "GFLOP/s over the model's matmul shape mix: "
             + ", ".join(f"{k} {v}" for k, v in limit["model_mix_gflops"].items() if v) + ".",
             f"Model work at 256 tokens: {results['model_flops']['256']['total'] / 1e9:.1f} GFLOP "
             f"(linear {results['model_flops']['256']['linear'] / 1e9:.1f}, attention "
             f"{results['model_flops']['256']['attention'] / 1e9:.1f}), computed from config.json.", "",
             "| variant | achieved GFLOP/s @256, 1 thread | compared with | fraction of the machine limit |",
             "|---|---:|---|---:|"]
    for name, entry in results["variants"].items():
        frac = entry.get("machine_fraction") or {}
        if frac.get("fraction") is None:
            continue
        lines.append(f"| {name} | {frac['achieved_gflops_256_1t']:.1f} | {frac['against']} ({frac['peak_gflops']:.0f}) "
                     f"| {frac['fraction'] * 100:.0f}% |")
    return lines


def size_table(results: dict[str, Any]) -> list[str]:
    lines = ["| variant | file MB | largest groups (MB; share) | not in weights MB |", "|---|---:|---|---:|"]
    for name, entry in results["variants"].items():
        b = entry["size"].get("breakdown")
        if not b or entry.get("recipe") == "fp32":
            continue
        groups = "; ".join(f"{g} {v['mb']:.1f} ({v['share'] * 100:.0f}%: "
                           + ", ".join(f"{k} {p:.1f}" for k, p in v["parts"].items() if p >= 0.05) + ")"
                           for g, v in b["groups"].items())
        lines.append(f"| {name} | {b['file_mb']:.1f} | {groups} | {b['unattributed_mb']:.1f} |")
    return lines


def qat_table(results: dict[str, Any]) -> list[str]:
    names = [n for n in results["variants"] if "@" in n]
    lines = []
    if names:
        lines += ["| variant (weights snapped to Q4_0) | size MB | drift min / mean | ms @256, 1 thread |",
                  "|---|---:|---|---:|"]
        for name in names:
            entry = results["variants"][name]
            lines.append(f"| {name} | {_mb(entry['size']['model_mb'])} | {_drift(entry)} "
                         f"| {_ms(entry, '1', 's256')} |")
        lines.append("")
    lines += [f"- {name}: not run: {reason}" for name, reason in results["skipped"].items() if "@" in name]
    return lines


def render(results: dict[str, Any]) -> str:
    machine = results["machine"]
    targets = evaluate_targets(results)
    when = time.strftime("%Y-%m-%d", time.gmtime(results.get("finished_unix", time.time())))
    caption = (f"Measured {when} on {machine['cpu']} ({machine['usable_cores']} cores shared with other jobs; load "
               f"average {machine['load_average_at_start'][0]} at start, {machine['load_average_at_end'][0]} at end), "
               f"`{results['fixture']}` fixture = the real architecture with RANDOM weights, batch 1, medians of "
               f"{results['plan']['repeats']} interleaved repetitions; eager = PyTorch fp32 via sentence-transformers "
               f"in the same loop. Drift on random weights exaggerates int4 loss and hides activation outliers "
               f"(docs/measurements.md): it ranks recipes, it is not real-model quality. "
               f"Reproduce: `python bench/run.py{' --quick' if results['mode'] == 'quick' else ''}`; "
               f"every figure is in bench/results/results.json.")
    out = [START, "", caption, "", *main_table(results), "", "Targets (issues 9 and 18; not test assertions):", "",
           *targets_table(targets), "", END, "", "## Details", "",
           "### Latency at 1 thread, with batch 8", "", *threads_table(results, "1"), ""]
    for threads in results["plan"]["threads"][1:]:
        out += [f"### Latency at {threads} threads", "",
                "PyTorch eager with 2 threads collapses when the other core is busy (docs/measurements.md); "
                "reported as measured.", "", *threads_table(results, str(threads)), ""]
    long_texts = long_text_table(results)
    if long_texts:
        out += ["### Long texts: cost growth with length, banded vs dense sliding-window attention", "",
                "`*-int8-dense` rows are the same recipe exported with `attention=dense`: every sliding layer as one "
                "[S, S] product, the graph before banding (see README \"Where the time goes\").", "",
                *long_texts, ""]
    out += ["### Short queries: in the smallest bucket vs padded to 256", "", *short_query_table(results), "",
            "### Machine limit and achieved fraction", "", *machine_table(results), "",
            "### Where the bytes go (read from each written file)", "", *size_table(results), "",
            "### Exact-grid vs naive int4 on Q4_0-snapped weights", "", *qat_table(results), ""]
    if results["skipped"]:
        out += ["### Skipped", ""] + [f"- {k}: {v}" for k, v in results["skipped"].items()] + [""]
    out += ["![latency vs sequence length](latency_vs_seq.png)", "", "![size vs drift](size_vs_drift.png)", ""]
    return "\n".join(out)


def targets_table(targets: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | measured | status |", "|---|---|---|"]
    for t in targets:
        lines.append(f"| {t['target']} | {t['measured']} | {t['status']} |")
    return lines


def write_outputs(results: dict[str, Any], out: Path) -> list[Path]:
    from bench.plots import plot_latency, plot_size_drift

    out.mkdir(parents=True, exist_ok=True)
    results["finished_unix"] = int(time.time())
    results["targets"] = evaluate_targets(results)
    paths = [out / "results.json", out / "table.md"]
    # Cache paths under the home directory are written as ~/...: the file is committed, the machine's home is not.
    paths[0].write_text(json.dumps(results, indent=1).replace(json.dumps(str(Path.home()))[1:-1], "~") + "\n")
    paths[1].write_text(render(results) + "\n")
    for name, fn in (("latency_vs_seq.png", plot_latency), ("size_vs_drift.png", plot_size_drift)):
        if fn(results, out / name):
            paths.append(out / name)
    return paths


def write_readme(table: Path, readme: Path) -> int:
    """Replace README's text between the markers (markers included) with table.md's block."""
    if not table.is_file():
        print(f"{table} not found: run the benchmark first", file=sys.stderr)
        return 2
    block = re.search(re.escape(START) + r".*?" + re.escape(END), table.read_text(), re.S)
    text = readme.read_text() if readme.is_file() else ""
    if block is None or START not in text or END not in text:
        print(f"markers {START} ... {END} missing in {table if block is None else readme}", file=sys.stderr)
        return 2
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    readme.write_text(pattern.sub(lambda _: block.group(0), text, count=1))
    print(f"updated {readme} from {table}")
    return 0
