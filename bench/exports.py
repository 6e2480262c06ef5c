"""Step 1: fixtures, then one export per variant, each in its own process (time + peak RSS).

Bundles are cached under ``--cache`` keyed by what determines them (fixture, target, recipe
content, buckets); ``--reexport`` ignores the cache. A cached bundle keeps the export time and
RSS measured when it was written, and the JSON says it was reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

from bench.children import WorkerError, run_worker
from bench.plan import Plan, Variant

log = logging.getLogger("bench")


def ensure_fixtures(plan: Plan, kinds: list[str], progress: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in kinds:
        progress(f"fixture {kind}")
        out[kind] = run_worker(["fixture", kind])
    return out


def qat_status() -> tuple[bool, str]:
    """Whether the int4-qat recipe can run yet (the lead is implementing it): (ok, reason)."""
    try:
        from embg.quantize.qat import recover_grids  # noqa: F401
        from embg.quantize.recipe import load_recipe

        load_recipe("int4-qat")
    except Exception as exc:  # ImportError while unimplemented; EmbgError for a broken preset
        return False, f"int4-qat recipe not usable here: {type(exc).__name__}: {exc}"
    return True, "ok"


def _naive_int4(data: dict[str, Any]) -> None:
    """int4-qat's rules with min-max instead of the exact grid: the same layout, naive scales."""
    data["description"] = "int4-qat's layout quantized naively (min-max scales), for the exact-grid comparison"
    for rule in data["rules"].values():
        if rule.get("algorithm") == "qat-grid":
            rule["algorithm"] = "min-max"


def _int8_products(data: dict[str, Any]) -> None:
    """The int8 preset plus int8 attention products (scores, weighted values; ONNX only)."""
    data["description"] = "the int8 preset with the attention products (scores, weighted values) in int8"
    data["attention_products"] = "int8"


# Bench-only recipes: name -> (the preset they start from, the change). Derived from the preset (data),
# so each comparison stays like-for-like if the preset changes.
DERIVED_RECIPES = {"int4-naive": ("int4-qat", _naive_int4), "int8-products": ("int8", _int8_products)}


def derived_recipe_file(name: str, cache: Path) -> Path:
    from embg.quantize.recipe import load_recipe, parse_recipe

    preset, change = DERIVED_RECIPES[name]
    data = load_recipe(preset).to_dict()
    data["name"] = name
    change(data)
    parse_recipe(data, name)  # fail here, not in the child, if the derivation is invalid
    path = cache / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def _recipe_arg(variant: Variant, cache: Path) -> str:
    return str(derived_recipe_file(variant.recipe, cache)) if variant.recipe in DERIVED_RECIPES else variant.recipe


def _buckets(plan: Plan) -> tuple[int, ...]:
    """The buckets a TFLite export will write: the plan's, else the target's current default."""
    from embg.export.tflite_target import DEFAULT_BUCKETS

    return plan.tflite_buckets or DEFAULT_BUCKETS


def _cache_key(variant: Variant, recipe_arg: str, buckets: tuple[int, ...] | None, fixture: dict[str, Any]) -> str:
    from embg.quantize.recipe import load_recipe

    recipe = json.dumps(load_recipe(recipe_arg).to_dict(), sort_keys=True)
    weights = Path(fixture["directory"]) / "model.safetensors"
    stat = weights.stat()
    material = json.dumps([variant.to_dict(), recipe, buckets, str(weights), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha1(material.encode()).hexdigest()[:16]


def _current_bundle(bundle: Path) -> bool:
    """A cached bundle this embg can still load (bundles from before file hashes are re-exported)."""
    from embg.errors import EmbgError
    from embg.bundle import Artifact

    try:
        Artifact.load(bundle)
    except EmbgError:
        return False
    return True


def export_variant(variant: Variant, plan: Plan, cache: Path, fixture: dict[str, Any], reexport: bool,
                   progress: Callable[[str], None]) -> dict[str, Any]:
    """Export one variant (or reuse its cached bundle); returns its export record."""
    recipe_arg = _recipe_arg(variant, cache)
    key = _cache_key(variant, recipe_arg, _buckets(plan) if variant.target == "tflite" else None, fixture)
    folder = cache / variant.name.replace("@", "_at_")
    record_path, bundle = folder / "export.json", folder / "bundle"
    if not reexport and record_path.is_file() and _current_bundle(bundle):
        record = json.loads(record_path.read_text())
        if record.get("key") == key:
            progress(f"export {variant.name}: reusing cached bundle (measured {record['wall_s']} s)")
            return {**record, "reused": True}
    folder.mkdir(parents=True, exist_ok=True)
    args = ["export", "--model", variant.fixture, "--target", variant.target, "--recipe", recipe_arg,
            "--out", str(bundle)]
    if variant.target == "tflite" and plan.tflite_buckets:
        args += ["--seq-lens", ",".join(map(str, plan.tflite_buckets))]
    for option, value in variant.options:  # not `key`: that is the cache key recorded below
        args += ["--option", f"{option}={value}"]
    progress(f"export {variant.name} ...")
    result = run_worker(args, log_path=folder / "export.log")
    manifest = json.loads((bundle / "manifest.json").read_text())
    record = {
        "key": key, "variant": variant.name, "bundle": str(bundle),
        "wall_s": result["wall_s"],  # the whole command: interpreter start, imports, load, convert, quantize
        "export_s": result["export_s"],  # export_bundle() alone
        "peak_rss_mb": max(result["peak_rss_mb"], result["polled_peak_rss_mb"]),
        "child_vmhwm_mb": result["peak_rss_mb"], "polled_peak_rss_mb": result["polled_peak_rss_mb"],
        "recipe": manifest["recipe"], "signatures": [s["seq_len"] for s in manifest.get("signatures", [])],
    }
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    progress(f"export {variant.name}: {record['wall_s']:.0f} s, peak {record['peak_rss_mb'] / 1024:.2f} GB")
    return {**record, "reused": False}


def export_all(plan: Plan, cache: Path, reexport: bool, progress: Callable[[str], None]
               ) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, dict[str, Any]]]:
    """(export records by variant, skipped variants with reasons, fixtures)."""
    qat_ok, qat_reason = qat_status()
    wanted = [v for v in plan.variants if qat_ok or not v.qat]
    skipped = {v.name: qat_reason for v in plan.variants if v.qat and not qat_ok}
    skipped.update({name: "not selected for this run (--variants)" for name in plan.excluded})
    kinds = sorted({v.fixture for v in wanted} | {plan.fixture}, key=lambda k: k != plan.fixture)
    fixtures = ensure_fixtures(plan, kinds, progress)
    records = {}
    for variant in wanted:
        try:
            records[variant.name] = export_variant(variant, plan, cache, fixtures[variant.fixture], reexport, progress)
        except WorkerError as exc:  # report it and keep benchmarking the rest
            skipped[variant.name] = f"export failed: {exc}"
            progress(f"export {variant.name} FAILED: {exc}")
    return records, skipped, fixtures
