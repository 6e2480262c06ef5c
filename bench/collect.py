"""Steps 2-4 after the exports: drift, the interleaved loop, the machine limit, fresh-process
probes (cold load, runtime RSS), sizes; then derived ratios. Returns the results dict."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any, Callable

from bench.children import WorkerError, run_worker
from bench.plan import BASELINE, Plan, fixture_config, model_flops

PROBE_RUNS = {"full": 2, "quick": 1}  # cold load is noisy here: keep the faster of two fresh processes
MIN_AVAILABLE_GB = 2.5  # others run tests on this box: stop before the loaded bundles starve them
PROBE_SEQ = 256


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def collect(plan: Plan, exports: dict[str, dict[str, Any]], skipped: dict[str, str],
            fixtures: dict[str, dict[str, Any]], progress: Callable[[str], None]) -> dict[str, Any]:
    from bench import drift as drift_mod
    from bench.loop import run_loop
    from bench.machine import describe, matmul_limits
    from bench.sizes import breakdown
    from bench.subjects import BundleSubject, EagerSubject

    machine = describe()
    base_dir = Path(fixtures[plan.fixture]["directory"])
    config, head = fixture_config(base_dir)
    variants = [v for v in plan.variants if v.name in exports]

    # Reference embeddings per fixture (the QAT fixture's reference is loaded only for this).
    progress("reference embeddings of the parity texts")
    eager = EagerSubject(base_dir, plan.threads)
    refs = {plan.fixture: drift_mod.reference_embeddings(base_dir, eager.reference)}
    for kind in sorted({v.fixture for v in variants} - {plan.fixture}):
        refs[kind] = drift_mod.reference_embeddings(Path(fixtures[kind]["directory"]))
        gc.collect()

    subjects: list[Any] = [eager]
    for variant in variants:
        progress(f"load {variant.name} x threads {list(plan.threads)} (process RSS {_rss_mb():.0f} MB)")
        _check_memory(variant.name)
        subjects.append(BundleSubject(variant, Path(exports[variant.name]["bundle"]), plan.threads))
    progress(f"all loaded: process RSS {_rss_mb():.0f} MB")

    drifts = {}
    for subject in subjects[1:]:
        rows, ref = refs[subject.variant.fixture]
        runtime = subject.runtimes[plan.threads[0]]
        drifts[subject.name] = drift_mod.drift(runtime.embed, rows, ref)
        progress(f"drift {subject.name}: min {drifts[subject.name]['cosine_min']} "
                 f"mean {drifts[subject.name]['cosine_mean']}")
    rows, ref = refs[plan.fixture]
    drifts[BASELINE] = drift_mod.drift(eager.reference.embed, rows, ref)

    latency, matmul_samples = run_loop(plan, subjects, int(config["vocab_size"]), config, progress)
    versions = {s.name: (s.runtimes[plan.threads[0]].version_info() if s.name != BASELINE
                         else s.reference.version_info()) for s in subjects}
    load_avg_end = [round(x, 2) for x in os.getloadavg()]
    for subject in subjects:
        subject.close()
    subjects.clear()
    del eager
    gc.collect()

    progress("fresh-process probes: cold load and runtime peak RSS at 256 tokens")
    probe_runs = PROBE_RUNS[plan.mode]
    probes = {BASELINE: _probe_reference(base_dir, probe_runs)}
    for variant in variants:
        probes[variant.name] = _probe_bundle(Path(exports[variant.name]["bundle"]), variant.runtime, probe_runs)
        progress(f"probe {variant.name}: load {probes[variant.name].get('load_s')} s, "
                 f"runtime RSS {probes[variant.name].get('runtime_rss_mb')} MB")

    limits = matmul_limits(matmul_samples)
    flops = {str(n): model_flops(config, n, head) for n in (16, 64, 256, 512, 1024, 2048)}
    dense_flops = {str(n): model_flops(config, n, head, banded=False) for n in (512, 1024, 2048)}
    results: dict[str, Any] = {
        "schema": 1, "mode": plan.mode, "fixture": plan.fixture, "qat_fixture": plan.qat_fixture,
        "machine": {**machine, "load_average_at_end": load_avg_end},
        "plan": {"threads": list(plan.threads), "repeats": plan.repeats,
                 "shapes": [s.__dict__ for s in plan.shapes],
                 "tflite_buckets": list(plan.tflite_buckets) if plan.tflite_buckets else "target default",
                 "variants": [v.to_dict() for v in plan.variants]},
        "skipped": skipped,
        "model_flops": flops,
        "model_flops_dense_sliding": dense_flops,  # the graph before banding (the *-dense variants)
        "machine_limit": limits,
        "baseline": BASELINE,
        "variants": {},
    }
    entries = {BASELINE: {"target": "torch", "runtime": versions[BASELINE], "fixture": plan.fixture,
                          "size": _checkpoint_size(base_dir), "export": None}}
    for variant in variants:
        record = exports[variant.name]
        manifest = json.loads((Path(record["bundle"]) / "manifest.json").read_text())
        entries[variant.name] = {
            "target": variant.target, "recipe": variant.recipe, "fixture": variant.fixture,
            "runtime": versions[variant.name], "export": {k: v for k, v in record.items() if k != "key"},
            "size": {"model_mb": round(_model_bytes(Path(record["bundle"]), manifest) / 1e6, 2),
                     "bundle_mb": round(_dir_bytes(Path(record["bundle"])) / 1e6, 2),
                     "breakdown": breakdown(Path(record["bundle"]), manifest, config, head)},
            "buckets": [int(s["seq_len"]) for s in manifest.get("signatures", [])] or None,
            "qat_grid": _grid_summary(manifest.get("qat_grid")),
        }
    for name, entry in entries.items():
        entry["latency"] = latency[name]
        entry["drift"] = drifts.get(name)
        entry["probe"] = probes.get(name)
        results["variants"][name] = entry
    derive(results, plan)
    return results


def _check_memory(what: str) -> None:
    import psutil

    available = psutil.virtual_memory().available / 2**30
    if available < MIN_AVAILABLE_GB:
        raise MemoryError(f"only {available:.1f} GB RAM left before loading {what}; run fewer variants "
                          "(--variants) or one thread count (--threads)")


def _probe_bundle(bundle: Path, runtime: str, runs_wanted: int) -> dict[str, Any]:
    from embg.errors import EmbgError
    from embg.validate.memory import measure_peak_rss

    runs = []
    for _ in range(runs_wanted):
        try:
            runs.append(measure_peak_rss(bundle, runtime, threads=1, seq_len=PROBE_SEQ))
        except EmbgError as exc:
            return {"error": str(exc)}
    return _merge_probes(runs)


def _probe_reference(directory: Path, runs_wanted: int) -> dict[str, Any]:
    runs = []
    for _ in range(runs_wanted):
        try:
            runs.append(run_worker(["probe-reference", str(directory), "--threads", "1",
                                    "--seq-len", str(PROBE_SEQ)]))
        except WorkerError as exc:
            return {"error": str(exc)}
    return _merge_probes(runs)


def _merge_probes(runs: list[dict[str, Any]]) -> dict[str, Any]:
    best = min(runs, key=lambda r: r["load_s"])
    return {**best, "load_s_runs": [r["load_s"] for r in runs],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "runtime_rss_mb": max(r["runtime_rss_mb"] for r in runs),
            "note": "fresh process per run (page cache warm); runtime_rss_mb = peak minus the RSS after imports"}


def _model_bytes(bundle: Path, manifest: dict[str, Any]) -> int:
    files = manifest.get("files") or [manifest["model_file"]]
    return sum((bundle / f).stat().st_size for f in files if (bundle / f).is_file())


def _dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _checkpoint_size(directory: Path) -> dict[str, Any]:
    weights = sum(p.stat().st_size for p in directory.rglob("*.safetensors"))
    return {"model_mb": round(weights / 1e6, 2), "bundle_mb": round(_dir_bytes(directory) / 1e6, 2), "breakdown": None}


def _grid_summary(report: Any) -> Any:
    """The manifest's QAT grid report, kept small (it may list every tensor)."""
    if not isinstance(report, dict):
        return report
    return {k: v for k, v in report.items() if not isinstance(v, (list, dict)) or len(json.dumps(v)) < 2000}


def derive(results: dict[str, Any], plan: Plan) -> None:
    """Ratios vs eager at the same shape and threads; padded/in-bucket ratio; achieved fraction."""
    base = results["variants"][BASELINE]["latency"]
    limit = results["machine_limit"]
    flops256 = results["model_flops"]["256"]["total"]
    for name, entry in results["variants"].items():
        speedups: dict[str, Any] = {}
        for threads, shapes in entry["latency"].items():
            speedups[threads] = {}
            for key, stats in shapes.items():
                ref = base.get(threads, {}).get(key, {}).get("median_ms")
                ours = stats.get("median_ms")
                speedups[threads][key] = round(ref / ours, 3) if ref and ours else None
        entry["speedup_vs_eager"] = speedups
        entry["short_query"] = {}
        for threads, shapes in entry["latency"].items():
            fitted, padded = shapes.get("q16", {}).get("median_ms"), shapes.get("q16_pad256", {}).get("median_ms")
            entry["short_query"][threads] = {
                "q16_ms": fitted, "q16_bucket": shapes.get("q16", {}).get("bucket"), "padded256_ms": padded,
                "padded_over_fitted": round(padded / fitted, 3) if fitted and padded else None}
        ms = entry["latency"].get("1", {}).get("s256", {}).get("median_ms")
        int_path = entry.get("recipe") not in (None, "fp32")
        peak = limit["peak_int8_gops"] if int_path else limit["peak_fp32_gflops"]
        achieved = flops256 / (ms / 1000.0) / 1e9 if ms else None
        entry["machine_fraction"] = {
            "achieved_gflops_256_1t": round(achieved, 2) if achieved else None,
            "against": "int8 matmul peak" if int_path else "fp32 matmul peak",
            "peak_gflops": peak, "fraction": round(achieved / peak, 3) if achieved else None}
