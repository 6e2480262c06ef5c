"""summary.md: the short Markdown summary of a validation report (CI logs), and the cell formatting
the HTML report shares."""

from __future__ import annotations

from typing import Any


# columns of the Markdown summary: (header, metric path, format)
SUMMARY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("cos min", "drift.cosine_min", "{:.5f}"),
    ("cos p1", "drift.cosine_p1", "{:.5f}"),
    ("cos mean", "drift.cosine_mean", "{:.5f}"),
    ("alone vs batch", "batch_consistency.cosine_min", "{:.5f}"),
    ("NaN rows", "drift.nonfinite", "{:d}"),
    ("top10", "retrieval.top10_overlap_mean", "{:.3f}"),
    ("rho", "retrieval.spearman_mean", "{:.4f}"),
    ("xR@10", "retrieval.cross_recall_at_10", "{:.3f}"),
    ("load s", "latency.cold_load_s", "{:.2f}"),
    ("RSS MB", "memory.runtime_rss_mb", "{:.0f}"),
    ("MB", "size.model_file_mb", "{:.1f}"),
)


def lookup(tree: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def fmt(value: Any, pattern: str = "{:.6g}") -> str:
    if value is None:
        return "n/a"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def markdown_summary(report: dict[str, Any]) -> str:
    status = "PASS" if report["passed"] else "FAIL"
    if report.get("partial"):
        status += " (PARTIAL: some combinations did not run)"
    by_device = bool(report.get("devices"))
    lines = [f"## embg-validate: {status} ({len(report['bundles'])} bundle(s), {report['texts']['count']} texts, "
             f"{report['device'].get('machine', '?')}, {report['seconds']} s)", "",
             ("| device " if by_device else "") + "| bundle | runtime | class | "
             + " | ".join(h for h, _, _ in SUMMARY_COLUMNS) + " | p50 ms (longest) | gate |",
             ("|---" if by_device else "") + "|---|---|---|" + "---|" * len(SUMMARY_COLUMNS) + "---|---|"]
    for device in report.get("devices") or []:
        if device.get("real_device") is False and device.get("note"):  # never let a stand-in pass as a device
            lines.insert(1, f"**{device['name']}: {device['note']}**")
    for entry in report["bundles"]:
        lead = f"| {entry.get('device', '')} " if by_device else ""
        if entry.get("status", "ok") != "ok":
            lines.append(f"{lead}| {entry['name']} | {entry.get('engine')} | {entry['threshold_class']} | "
                         + " | ".join("-" for _ in SUMMARY_COLUMNS) + f" | - | **{failed_label(entry)}** |")
            continue
        metrics = entry["metrics"]
        cells = [fmt(lookup(metrics, path), pattern) for _, path, pattern in SUMMARY_COLUMNS]
        buckets = list(metrics["latency"]["buckets"].values())
        longest = max(buckets, key=lambda b: (b["seq_len"], -b["batch"])) if buckets else None
        p50 = f"{longest['p50_ms']:.1f} @seq{longest['seq_len']}x{longest['batch']}" if longest else "n/a"
        lines.append(f"{lead}| {entry['name']} | {entry['runtime'].get('runtime')} | {entry['threshold_class']} | "
                     + " | ".join(cells) + f" | {p50} | {'pass' if entry['passed'] else '**FAIL**'} |")
    modes = [e for e in report["bundles"] if e.get("status", "ok") == "ok" and e["metrics"].get("drift_by_mode")]
    if modes:  # the headline cosine is the worst of these modes (embg.parity)
        lines += ["", "Cosine min / mean per mode (alone; batched = 8 mixed-length texts padded to the longest; "
                      "padded_512 = padded to 512 tokens or the 512 bucket):"]
        for entry in modes:
            cells = [f"{mode} {fmt(m.get('cosine_min'), '{:.5f}')} / {fmt(m.get('cosine_mean'), '{:.5f}')}"
                     for mode, m in entry["metrics"]["drift_by_mode"].items()]
            lines.append(f"- {entry.get('combination', entry['name'])}: " + "; ".join(cells))
    not_gated = [f"- {e.get('combination', e['name'])}: {c['metric']}: {c['detail']}" for e in report["bundles"]
                 for c in e.get("checks", []) if not c.get("applicable", True)]
    if not_gated:  # absent by design of the row, said so; anything else absent has failed above
        lines += ["", "Not measured on this kind of row (not gated):"] + not_gated
    if report["failures"]:
        lines += ["", "Failing metrics:"] + [f"- {f}" for f in report["failures"]]
    return "\n".join(lines) + "\n"


def failed_label(entry: dict[str, Any]) -> str:
    """A row that did not measure: its device failed, or the bundle broke the measurement."""
    return "DEVICE FAILED" if entry.get("failed_in", "device") == "device" else "FAILED"
