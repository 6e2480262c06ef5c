"""embg-validate --devices devices.toml: (device, engine, bundle) rows, one worker thread per device.

devices.toml (paths relative to the file):

    bundles = ["out/onnx-int8", "out/tflite-int8"]   # every device runs these unless it lists its own
    model = "google/embeddinggemma-300m"             # optional, as --model
    quick = true                                     # optional, as --quick (one text set for all rows)

    [[devices]]
    device = "local"

    [[devices]]
    name = "pi5-emulated"                            # optional label (default: the device string)
    device = "qemu-arm64:cortex-a76"
    latency_repeats = 3

    [[devices]]
    device = "ssh:pi@raspberrypi.local"
    identity = "~/.ssh/id_ed25519"                   # any other key goes to the device runner
    known_hosts = "~/.ssh/known_hosts"

Devices run in parallel (they are different machines); the bundles of one device run one after
another (one runner at a time per device). The engine follows each bundle's manifest.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embg.errors import EmbgError
from embg.validate.assemble import assemble, device_description
from embg.validate.inputs import ValidateOptions, check_device, prepare
from embg.validate.measure import ReferenceCache
from embg.validate.rows import bundle_entry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib

TOP_LEVEL = {"bundles", "model", "quick", "threads", "latency_repeats", "texts", "devices"}
ROW_SETTINGS = {"name", "device", "bundles", "latency_repeats"}  # the rest of a row: device options


@dataclass
class DeviceRow:
    name: str
    device: str
    bundles: list[Path]
    latency_repeats: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MatrixPlan:
    path: Path
    rows: list[DeviceRow]
    settings: dict[str, Any]

    @property
    def bundles(self) -> list[Path]:
        seen: dict[str, Path] = {}
        for row in self.rows:
            for bundle in row.bundles:
                seen.setdefault(str(bundle.resolve()), bundle)
        return list(seen.values())


def load_plan(path: Path, cli_bundles: list[Path] | None = None) -> MatrixPlan:
    """Parse and check devices.toml; every problem here is bad input (exit 2)."""
    path = Path(path)
    if not path.is_file():
        raise EmbgError(f"devices file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EmbgError(f"{path} is not valid TOML: {exc}") from exc
    unknown = set(data) - TOP_LEVEL
    if unknown:
        raise EmbgError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(TOP_LEVEL))}")
    devices = data.get("devices")
    if not isinstance(devices, list) or not devices:
        raise EmbgError(f"{path}: no [[devices]] tables")
    base = path.parent

    def bundle_list(value: Any, where: str) -> list[Path]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise EmbgError(f"{path}: {where} bundles must be a list of directory names")
        return [(base / v).expanduser() if not Path(v).expanduser().is_absolute() else Path(v).expanduser()
                for v in value]

    default = bundle_list(data["bundles"], "top-level") if "bundles" in data else list(cli_bundles or [])
    rows: list[DeviceRow] = []
    for number, table in enumerate(devices, 1):
        if not isinstance(table, dict) or not isinstance(table.get("device"), str):
            raise EmbgError(f"{path}: [[devices]] #{number} needs device = \"kind[:spec]\"")
        bundles = bundle_list(table["bundles"], f"device #{number}") if "bundles" in table else default
        if not bundles:
            raise EmbgError(f"{path}: device #{number} has no bundles (give bundles = [...] or BUNDLE arguments)")
        options = {k: v for k, v in table.items() if k not in ROW_SETTINGS}
        for key in ("identity", "known_hosts"):
            if isinstance(options.get(key), str):
                options[key] = str(Path(options[key]).expanduser())
        repeats = table.get("latency_repeats")
        if repeats is not None and (not isinstance(repeats, int) or repeats < 1):
            raise EmbgError(f"{path}: device #{number}: latency_repeats must be a positive integer")
        row = DeviceRow(str(table.get("name") or table["device"]), table["device"], bundles, repeats, options)
        check_device(row.device, row.options)  # unknown kind / malformed spec: exit 2 before any work
        rows.append(row)
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise EmbgError(f"{path}: device names repeat ({', '.join(names)}); give each row a distinct name")
    settings = {k: v for k, v in data.items() if k not in {"devices", "bundles"}}
    if "texts" in settings:
        settings["texts"] = base / settings["texts"]
    return MatrixPlan(path, rows, settings)


def run_matrix(plan: MatrixPlan, options: ValidateOptions) -> dict[str, Any]:
    """Every (device, bundle) row, devices in parallel; one report dict with a row per combination."""
    started = time.perf_counter()
    options = dataclasses.replace(options, bundles=plan.bundles)
    prepared = prepare(options)
    reference = ReferenceCache(prepared.model, options.threads)
    by_path = {str(a.directory.resolve()): (a, r) for a, r in zip(prepared.artifacts, prepared.runtime_names)}
    say_lock = threading.Lock()

    def worker(row: DeviceRow) -> list[dict[str, Any]]:
        def say(message: str) -> None:
            with say_lock:
                options.progress(f"[{row.name}] {message}")

        # a tokenizer per worker: HF fast tokenizers refuse concurrent calls that change truncation
        mine = dataclasses.replace(prepared, model=dataclasses.replace(
            prepared.model, tokenizer=copy.deepcopy(prepared.model.tokenizer)),
            tokenizers=copy.deepcopy(prepared.tokenizers))
        row_options = dataclasses.replace(options, device=row.device, device_name=row.name,
                                          device_options=row.options, progress=say,
                                          latency_repeats=row.latency_repeats or options.latency_repeats)
        entries = []
        for bundle in row.bundles:
            artifact, runtime_name = by_path[str(bundle.resolve())]
            entries.append(bundle_entry(artifact, runtime_name, mine, reference, row_options))
        return entries

    with ThreadPoolExecutor(max_workers=len(plan.rows), thread_name_prefix="embg-device") as pool:
        results = list(pool.map(worker, plan.rows))
    entries = [e for rows in results for e in rows]
    devices = [{**device_description(rows, row.device, row.options), "name": row.name, "device": row.device}
               for row, rows in zip(plan.rows, results)]
    report = assemble(options, prepared, reference, entries, started, devices)
    report["matrix"] = {"file": str(plan.path), "devices": [r.name for r in plan.rows],
                        "bundles": [str(b) for b in plan.bundles], "rows": len(entries)}
    return report


__all__ = ["DeviceRow", "MatrixPlan", "load_plan", "run_matrix"]
