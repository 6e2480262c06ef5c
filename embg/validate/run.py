"""embg-validate end to end: check inputs, run every bundle in its runtime against the reference,
measure, gate, and hand a report dict to the writers.

Order matters for users: everything that can be bad input (bundles, runtime names, texts file,
baseline, model, weights hash) is checked before any slow work, so exit 2 comes fast.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from embg.errors import EmbgError
from embg.bundle import Artifact, tool_versions
from embg.parity import metrics
from embg.validate import gate, latency
from embg.validate.activations import report_field as activation_field
from embg.parity.path import measure_parity, reference_embeddings
from embg.textdata.sets import EvalText, builtin_texts, check_tasks, load_texts_file, quick_texts
from embg.validate.thresholds import BASELINE_MARGINS, THRESHOLDS, check_baseline_metrics, limits_for

log = logging.getLogger(__name__)

REPORT_SCHEMA = 1
FIXTURE_PREFIX = "embg-fixture:"


@dataclass
class ValidateOptions:
    bundles: list[Path]
    model: str | None = None
    texts: Path | None = None
    threads: int | None = 1
    report_dir: Path = Path("validate-report")
    baseline: Path | None = None
    runtime: str | None = None
    latency_repeats: int = 10
    latency_warmup: int = 2
    memory: bool = True
    device: str | None = None  # "kind:spec" from embg.devices; None runs the runtime in this process
    device_options: dict[str, Any] = field(default_factory=dict)
    device_name: str | None = None  # the row label in matrix runs (default: the device string)
    quick: bool = False  # a few short texts and the two smallest latency buckets (emulated/slow devices)
    argv: list[str] = field(default_factory=list)
    progress: Callable[[str], None] = lambda message: None


@dataclass
class Prepared:
    artifacts: list[Artifact]
    runtime_names: list[str]
    texts: list[EvalText]
    texts_source: str
    model: Any  # embg.model.load.LoadedModel
    baseline: dict[str, Any] | None
    # each bundle's own tokenizer files (what a device tokenizes with), by bundle directory
    tokenizers: dict[str, Any] = field(default_factory=dict)

    def tokenizer_for(self, artifact: Artifact):
        return self.tokenizers[str(artifact.directory)]


# ---------------------------------------------------------------- input checks (exit 2)

def load_bundles(paths: list[Path]) -> list[Artifact]:
    """Every bundle loaded and verified (paths inside, file hashes, model file structure): exit 2 otherwise."""
    artifacts = []
    for path in paths:
        if not Path(path).is_dir():
            raise EmbgError(f"bundle directory not found: {path}")
        artifacts.append(Artifact.load(Path(path)).verify())
    return artifacts


def runtime_names_for(artifacts: list[Artifact], override: str | None) -> list[str]:
    """The manifest names each bundle's runtime; --runtime overrides it but must run the same target."""
    from embg.runtimes import RUNTIMES, load_all

    load_all()
    names = []
    for artifact in artifacts:
        name = override or artifact.manifest.get("runtime")
        if not name:
            raise EmbgError(f"{artifact.directory}: the manifest names no runtime; pass --runtime")
        runtime_cls = RUNTIMES.get(name)  # unknown names raise EmbgError listing the known ones
        if runtime_cls.target != artifact.target:
            raise EmbgError(f"runtime {name} runs {runtime_cls.target} bundles, but {artifact.directory} is a "
                            f"{artifact.target} bundle")
        names.append(name)
    return names


def model_argument(artifacts: list[Artifact], model: str | None) -> tuple[str, str | None]:
    """--model, or the model id (and revision) every bundle's manifest records."""
    if model:
        return model, None
    ids = {(a.manifest["model"]["id"], a.manifest["model"].get("revision")) for a in artifacts}
    if len(ids) != 1:
        raise EmbgError("the bundles come from different models "
                        f"({', '.join(sorted(i for i, _ in ids))}); pass --model")
    model_id, revision = ids.pop()
    return model_id.removeprefix(FIXTURE_PREFIX), revision


def check_same_weights(artifacts: list[Artifact], spec) -> str:
    from embg.model.weights import weights_sha256

    digest = weights_sha256(spec)
    for artifact in artifacts:
        recorded = artifact.manifest.get("model", {}).get("weights_sha256")
        if recorded != digest:
            raise EmbgError(
                f"{artifact.directory} was exported from different weights than --model {spec.directory}: "
                f"manifest weights_sha256 {str(recorded)[:12]}... != checkpoint {digest[:12]}...; "
                "validate against the checkpoint the bundle was made from")
    return digest


def load_baseline(path: Path) -> dict[str, Any]:
    """An earlier report.json whose bundles carry every metric the baseline margins compare."""
    if not Path(path).is_file():
        raise EmbgError(f"baseline report not found: {path}")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EmbgError(f"baseline {path} is not a JSON report: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA or "bundles" not in data:
        raise EmbgError(f"baseline {path} is not an embg-validate report with schema {REPORT_SCHEMA}")
    bundles = data["bundles"]
    if not isinstance(bundles, list) or not all(isinstance(b, dict) for b in bundles):
        raise EmbgError(f"baseline {path}: 'bundles' must be a list of bundle entries, got {type(bundles).__name__}")
    for number, bundle in enumerate(bundles, 1):
        if bundle.get("status", "ok") != "ok":
            continue  # a device that failed in that run: never matched
        name = bundle.get("name") or f"#{number}"
        if not isinstance(bundle.get("name"), str) or not isinstance(bundle.get("metrics"), dict):
            raise EmbgError(f"baseline {path}: bundle {name} has no name or no metrics")
        missing = check_baseline_metrics(bundle["metrics"])
        if missing:
            raise EmbgError(f"baseline {path}: bundle {name} lacks the metric(s) {', '.join(missing)} the gate "
                            "compares against; use a complete report as --baseline")
    return data


def check_report_dir(path: Path) -> None:
    """--report must become a writable directory: checked before any work, so no run is lost at the end."""
    from embg.atomic import check_writable_directory

    check_writable_directory(Path(path), "--report")


def prepare(options: ValidateOptions) -> Prepared:
    from embg.checkpoint.load import load_model

    if not options.bundles:
        raise EmbgError("give at least one bundle directory")
    if options.threads is not None and options.threads < 1:
        raise EmbgError("--threads must be at least 1")
    check_report_dir(options.report_dir)
    artifacts = load_bundles(options.bundles)
    names = runtime_names_for(artifacts, options.runtime)
    if options.device:
        check_device(options.device, options.device_options)
    texts = load_texts_file(options.texts) if options.texts else quick_texts() if options.quick else builtin_texts()
    baseline = load_baseline(options.baseline) if options.baseline else None
    model_id, revision = model_argument(artifacts, options.model)
    options.progress(f"loading the reference checkpoint {model_id}")
    model = load_model(model_id, revision, os.environ.get("HF_TOKEN"))
    check_tasks(texts, model.spec.prompts)
    options.progress("checking every bundle was exported from these weights")
    check_same_weights(artifacts, model.spec)
    source = str(options.texts) if options.texts else "builtin-quick" if options.quick else "builtin"
    return Prepared(artifacts, names, texts, source, model, baseline, bundle_tokenizers(artifacts))


def bundle_tokenizers(artifacts: list[Artifact]) -> dict[str, Any]:
    """Each bundle's tokenizer from its own files (a bundle whose files cannot be loaded: exit 2)."""
    from embg.validate.bundle_tokenizer import load_bundle_tokenizer

    return {str(a.directory): load_bundle_tokenizer(a) for a in artifacts}


def check_device(device: str, device_options: dict[str, Any] | None = None) -> None:
    """An unknown kind or malformed spec is bad input (exit 2), found before any slow work."""
    from embg.devices import load_devices, parse_device

    load_devices()
    parse_device(device, device_options).preflight()


# ---------------------------------------------------------------- measuring one bundle

class ReferenceCache:
    """sentence-transformers embeddings per (truncation length, dim): shared by bundles that agree."""

    def __init__(self, model, threads: int | None) -> None:
        from embg.runtimes.reference import SentenceTransformersReference

        self.model = model
        self.reference = SentenceTransformersReference(model.spec.directory, threads=threads)
        self._cache: dict[tuple[int, int | None], np.ndarray] = {}
        self._lock = threading.Lock()  # matrix runs ask from one thread per device

    def embeddings(self, texts: list[EvalText], max_length: int, dim: int | None) -> np.ndarray:
        with self._lock:
            return self._embeddings(texts, max_length, dim)

    def _embeddings(self, texts: list[EvalText], max_length: int, dim: int | None) -> np.ndarray:
        key = (max_length, dim)
        if key not in self._cache:
            # same truncation as the runtime (for this call only): the reference sees exactly the tokens the
            # bundle sees; prompt_name, as users call sentence-transformers
            self._cache[key] = reference_embeddings(self.reference, self.model.tokenizer, texts, max_length, dim)
        return self._cache[key]


def retrieval_split(texts: list[EvalText], ours: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """Retrieval agreement of the text set's queries vs documents; {"k": 0} when one side is empty
    (said explicitly, so the gate can tell "not applicable" from "missing")."""
    q = [i for i, t in enumerate(texts) if t.is_query]
    d = [i for i, t in enumerate(texts) if t.is_document]
    if not q or not d:
        return {"queries": len(q), "documents": len(d), "k": 0}
    return metrics.retrieval(ours[q], ours[d], ref[q], ref[d])


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


def measure_bundle(artifact: Artifact, runtime_name: str, prepared: Prepared, reference: ReferenceCache,
                   options: ValidateOptions) -> dict[str, Any]:
    from embg.runtimes import load_runtime
    from embg.validate.bundle_tokenizer import compare_token_ids
    from embg.validate.memory import measure_peak_rss

    say = options.progress
    tokenizer = prepared.tokenizer_for(artifact)  # the bundle's own files: what a device tokenizes with
    texts = prepared.texts
    where = f" on {options.device}" if options.device else ""
    say(f"{artifact.directory.name}: checking its tokenizer files against the reference's on {len(texts)} texts")
    tokens = compare_token_ids(artifact, tokenizer, prepared.model.tokenizer, texts)
    say(f"{artifact.directory.name}: loading in {runtime_name}{where}")
    if options.device:
        from embg.devices import open_device

        # cold load includes copying the bundle to the device and starting the runner there
        runtime, load_s = latency.timed(lambda: open_device(options.device, artifact, runtime_name, options.threads,
                                                             options.device_options))
    else:
        runtime, load_s = latency.timed(lambda: load_runtime(runtime_name, artifact, threads=options.threads))
    try:
        max_length = runtime.max_length or tokenizer.max_length
        buckets = latency.plan(artifact.manifest, runtime.max_length)
        if options.quick:
            buckets = buckets[:2]
        prose = tokenizer.encode([t.text for t in texts if t.kind == "long"][:1] or [texts[0].text],
                                 prompt="document" if "document" in tokenizer.prompts else None,
                                 max_length=max(b.seq_len for b in buckets)).input_ids[0]
        first = latency.Bucket(buckets[0].seq_len, buckets[0].batch)
        ids = np.resize(prose, first.seq_len)[None].repeat(first.batch, 0)
        _, first_s = latency.timed(lambda: runtime.embed(ids, np.ones_like(ids)))
        full = artifact.manifest.get("full_dim", artifact.embedding_dim)
        dim = artifact.embedding_dim if artifact.embedding_dim != full else None
        say(f"{artifact.directory.name}: reference embeddings (max length {max_length})")
        ref = reference.embeddings(texts, max_length, dim)
        say(f"{artifact.directory.name}: embedding {len(texts)} texts alone and in padded batches")
        parity = measure_parity(runtime, tokenizer, texts, ref)
        ours, cos = parity.worst_embeddings, parity.per_text_cosine
        matryoshka = {}
        for d in artifact.manifest.get("matryoshka_dims") or [artifact.embedding_dim]:
            o, r = metrics.renormalise(ours, d), metrics.renormalise(ref, d)
            matryoshka[str(d)] = {**metrics.drift(o, r)[0],
                                  "top10_overlap_mean": retrieval_split(texts, o, r).get("top10_overlap_mean")}
        say(f"{artifact.directory.name}: latency over {len(buckets)} bucket(s)")
        timings = latency.measure(runtime.embed, prose, buckets, options.latency_repeats, options.latency_warmup,
                                  say, device_clock=getattr(runtime, "last_call_ms", None))
        version = runtime.version_info()
        reported = getattr(runtime, "device_measurements", dict)()  # a device farm's own profile (aihub)
    finally:
        runtime.close()
    memory: dict[str, Any] = {}
    if reported.get("memory"):
        memory = reported["memory"]
    elif options.device and options.device != "local":
        memory = {"skipped": f"peak RSS is measured on this host only, not on {options.device}"}
    elif not options.memory:
        memory = {"skipped": "--no-memory"}
    else:
        say(f"{artifact.directory.name}: peak RSS in a separate process")
        try:
            memory = measure_peak_rss(artifact.directory, runtime_name, options.threads,
                                      max(b.seq_len for b in buckets))
        except EmbgError as exc:  # a runtime that crashes is a failing bundle, not bad input
            memory = {"error": str(exc)}
    files = artifact.manifest.get("files") or [artifact.manifest["model_file"]]
    size = {"model_file_mb": round(artifact.model_path.stat().st_size / 2**20, 3),
            "bundle_mb": round(sum(p.stat().st_size for p in artifact.directory.iterdir() if p.is_file()) / 2**20, 3),
            "model_files_mb": round(sum((artifact.directory / f).stat().st_size for f in files) / 2**20, 3)}
    return {
        "runtime": version, "cos": cos, "parity": parity, "tokenizer": tokens,
        "metrics": {"drift": {**parity.headline, "worst_mode": parity.worst_mode}, "drift_by_mode": parity.modes,
                    "batch_consistency": parity.consistency, "tokenizer": tokens.to_dict(),
                    "matryoshka": matryoshka, "retrieval": retrieval_split(texts, ours, ref),
                    "latency": {"cold_load_s": round(load_s, 4), "first_embed_s": round(first_s, 4),
                                "buckets": timings, **({"device_load": reported["load"]} if reported.get("load") else {})},
                    "memory": memory, "size": size},
    }


# ---------------------------------------------------------------- gate + report dict

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


def run(options: ValidateOptions) -> dict[str, Any]:
    """Validate every bundle; returns the report dict (its "passed" decides the exit status)."""
    started = time.perf_counter()
    prepared = prepare(options)
    reference = ReferenceCache(prepared.model, options.threads)
    entries = []
    for number, (artifact, runtime_name) in enumerate(zip(prepared.artifacts, prepared.runtime_names), 1):
        options.progress(f"[{number}/{len(prepared.artifacts)}] {artifact.directory}")
        entries.append(bundle_entry(artifact, runtime_name, prepared, reference, options))
    devices = [device_description(entries, options.device, options.device_options)] if options.device else []
    return assemble(options, prepared, reference, entries, started, devices)


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
