"""embg-validate's inputs, all checked before any slow work so bad input exits 2 fast: bundles, runtime
names, texts, baseline, report directory, device, the reference checkpoint and its weights hash."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embg.bundle import Artifact
from embg.errors import EmbgError
from embg.textdata.sets import EvalText, builtin_texts, check_tasks, load_texts_file, quick_texts
from embg.validate.thresholds import check_baseline_metrics

FIXTURE_PREFIX = "embg-fixture:"
REPORT_SCHEMA = 1  # of report.json, written by embg.validate.assemble and read back as a --baseline


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
    model: Any  # embg.checkpoint.load.LoadedModel
    baseline: dict[str, Any] | None
    # each bundle's own tokenizer files (what a device tokenizes with), by bundle directory
    tokenizers: dict[str, Any] = field(default_factory=dict)

    def tokenizer_for(self, artifact: Artifact):
        return self.tokenizers[str(artifact.directory)]


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
