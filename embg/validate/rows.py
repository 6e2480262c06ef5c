"""One report row per (device, runtime, bundle): measured, gated against the thresholds and the
baseline, or marked failed with the reason when its device or the measurement broke."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from embg.bundle import Artifact
from embg.errors import EmbgError
from embg.parity import metrics
from embg.textdata.sets import EvalText
from embg.validate import gate
from embg.validate.activations import report_field as activation_field
from embg.validate.inputs import Prepared, ValidateOptions
from embg.validate.measure import ReferenceCache, measure_bundle
from embg.validate.thresholds import limits_for

log = logging.getLogger(__name__)


def worst_texts(texts: list[EvalText], cos: np.ndarray, count: int = 5,
                modes: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    order = np.argsort(cos, kind="mergesort")[:count]
    rows = []
    for i in order:
        row = {"index": int(i), "task": texts[i].task, "kind": texts[i].kind, "cosine": round(float(cos[i]), 7),
               "preview": texts[i].text[:80]}
        if modes:  # the mode in which this text drifted most
            row["mode"] = min(modes, key=lambda m: modes[m][i])
        rows.append(row)
    return rows


def baseline_entry(baseline: dict[str, Any] | None, entry: dict[str, Any]) -> dict[str, Any] | None:
    """The baseline's bundle with the same directory name, else the only one with the same target+recipe."""
    if not baseline:
        return None
    bundles = baseline.get("bundles", [])
    # matrix rows match on device/engine/bundle first: the same bundle on two devices is two rows
    same_row = [b for b in bundles if b.get("combination") and b.get("combination") == entry.get("combination")
                and b.get("status", "ok") == "ok"]
    if same_row:
        return same_row[0]
    bundles = [b for b in bundles if b.get("status", "ok") == "ok"
               and b.get("device", "in-process") == entry.get("device", "in-process")]
    same_name = [b for b in bundles if b.get("name") == entry["name"]]
    if same_name:
        return same_name[0]
    same_kind = [b for b in bundles if (b.get("target"), b.get("recipe")) == (entry["target"], entry["recipe"])]
    return same_kind[0] if len(same_kind) == 1 else None


def bundle_entry(artifact: Artifact, runtime_name: str, prepared: Prepared, reference: ReferenceCache,
                 options: ValidateOptions) -> dict[str, Any]:
    """One report row: the bundle measured and gated, or, when its device failed, status "failed" + reason."""
    from embg.devices import DeviceError

    recipe = artifact.manifest.get("recipe") or {}
    class_name, limits = limits_for(recipe)
    device = options.device_name or options.device or "in-process"
    entry: dict[str, Any] = {
        "name": artifact.directory.name, "path": str(artifact.directory.resolve()),
        "manifest_sha256": artifact.manifest_sha256, "target": artifact.target, "recipe": recipe.get("name"),
        "engine": runtime_name, "device": device, "combination": f"{device}/{runtime_name}/{artifact.directory.name}",
        "model": artifact.manifest.get("model"), "embedding_dim": artifact.embedding_dim,
        "matryoshka_dims": artifact.manifest.get("matryoshka_dims"), "signatures": artifact.manifest.get("signatures"),
        "threshold_class": class_name, "thresholds": {k: list(v) for k, v in limits.items()},
    }
    try:
        measured = measure_bundle(artifact, runtime_name, prepared, reference, options)
    except DeviceError as exc:  # the device, not the bundle's numbers: a row that says why, exit 1
        options.progress(f"{entry['combination']}: DEVICE FAILED: {exc}")
        return {**entry, "status": "failed", "failed_in": "device", "error": str(exc), "passed": False,
                "checks": [], "failures": [f"device failed: {exc}"]}
    except EmbgError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bundle that breaks the run is a failed row with the reason, never
        # a traceback that loses every other bundle's results
        log.debug("measuring %s failed", artifact.directory, exc_info=True)
        reason = f"{type(exc).__name__}: {exc}"
        options.progress(f"{entry['combination']}: FAILED while measuring: {reason}")
        return {**entry, "status": "failed", "failed_in": "measurement", "error": reason, "passed": False,
                "checks": [], "failures": [f"measurement failed: {reason}"]}
    entry.update({
        "status": "ok", "runtime": measured["runtime"], "metrics": measured["metrics"],
        "cosine_histogram": metrics.histogram(measured["cos"], limits.get("cosine_min", (">=", None))[1]),
        "cosine_per_text": [round(float(c), 7) for c in measured["cos"]],
        "worst_texts": worst_texts(prepared.texts, measured["cos"], modes=measured["parity"].cosines),
        # max |activation| read on the host from the bundle file: activation_max, fp16_headroom
        "activations": activation_field(artifact, prepared.tokenizer_for(artifact)),
    })
    checks = gate.threshold_checks(entry["metrics"], limits,
                                   details={"tokenizer.mismatched_texts": measured["tokenizer"].detail()})
    if "error" in entry["metrics"]["memory"]:
        checks.append(gate.Check("memory.probe", None, "<=", 0, False))
    old = baseline_entry(prepared.baseline, entry)
    if old is not None:
        checks += gate.baseline_checks(entry["metrics"], old.get("metrics", {}))
    entry["baseline"] = None if old is None else {"name": old.get("name"), "manifest_sha256": old.get("manifest_sha256")}
    entry["checks"] = [c.to_dict() for c in checks]
    entry["failures"] = [c.describe() for c in gate.failures(checks)]
    entry["passed"] = not entry["failures"]
    options.progress(f"{entry['combination']}: {'PASS' if entry['passed'] else 'FAIL'}"
                     + "".join(f"\n    {f}" for f in entry["failures"]))
    return entry
