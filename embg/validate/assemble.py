"""The report dict: every row, the host and device facts, versions, texts, settings, thresholds.
Serialised only by embg.validate.report."""

from __future__ import annotations

import os
import platform
import sys
import time
from datetime import datetime, timezone
from typing import Any

from embg.bundle import tool_versions
from embg.validate.inputs import REPORT_SCHEMA, Prepared, ValidateOptions
from embg.validate.measure import ReferenceCache
from embg.validate.thresholds import BASELINE_MARGINS, THRESHOLDS


def device_info() -> dict[str, Any]:
    info = {"platform": platform.platform(), "machine": platform.machine(), "system": platform.system(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "hostname": platform.node()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return info


def device_description(entries: list[dict[str, Any]], device: str,
                       device_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the runner said about itself (name, kind, machine, emulated, engine + version from its hello)."""
    from embg.devices import parse_device

    described: dict[str, Any] = {"name": device, "kind": device.partition(":")[0]}
    engines = []
    for entry in entries:
        runtime = entry.get("runtime") or {}
        if runtime.get("device"):
            described.update(runtime["device"])
        if runtime.get("engine"):
            engines.append({"engine": runtime["engine"], "version": runtime.get("version")})
    if len(described) == 2:  # nothing came back (every row failed): still say what it was
        described.update(parse_device(device, device_options).describe())
    described["engines"] = [dict(t) for t in {tuple(e.items()) for e in engines}]
    described["rows"] = {"ok": sum(e["status"] == "ok" for e in entries),
                         "failed": sum(e["status"] == "failed" for e in entries)}
    return described


def assemble(options: ValidateOptions, prepared: Prepared, reference: ReferenceCache, entries: list[dict[str, Any]],
             started: float, devices: list[dict[str, Any]]) -> dict[str, Any]:
    used = sorted({e["threshold_class"] for e in entries})
    failed = [e for e in entries if e["status"] == "failed"]
    weights = [e["model"]["weights_sha256"] for e in entries if e.get("model")]
    return {
        "schema": REPORT_SCHEMA,
        "tool": "embg-validate",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": options.argv,
        "passed": all(e["passed"] for e in entries),
        # partial: some combinations could not run (device failure); status per row says which
        "partial": bool(failed),
        "status": {e["combination"]: e["status"] if e["status"] == "ok" else f"failed: {e['error']}"
                   for e in entries},
        "failures": [f"{e['combination'] if devices else e['name']}: {f}" for e in entries for f in e["failures"]],
        "device": device_info(),
        "devices": devices,
        "versions": tool_versions(),
        "reference": {**reference.reference.version_info(), "model_id": prepared.model.spec.model_id,
                      "revision": prepared.model.spec.revision, "weights_sha256": weights[0] if weights else None},
        "texts": {"source": prepared.texts_source, "count": len(prepared.texts),
                  "by_kind": _count(t.kind for t in prepared.texts), "by_task": _count(t.task for t in prepared.texts)},
        "settings": {"threads": options.threads, "latency_repeats": options.latency_repeats,
                     "latency_warmup": options.latency_warmup, "runtime_override": options.runtime,
                     "python": sys.executable, "quick": options.quick},
        "thresholds": {name: {k: list(v) for k, v in THRESHOLDS[name].items()} for name in used},
        "baseline_margins": [{"metric": p, "kind": k, "margin": m} for p, k, m in BASELINE_MARGINS],
        "baseline": None if prepared.baseline is None else {"path": str(options.baseline),
                                                            "created": prepared.baseline.get("created")},
        "seconds": round(time.perf_counter() - started, 1),
        "bundles": entries,
    }


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value or "none"] = out.get(value or "none", 0) + 1
    return out
