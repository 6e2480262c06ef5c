"""Recipe x target x fixture: size, drift against sentence-transformers, latency (issue 10).

Usage (the table in docs/outliers.md came from exactly this):

    python -m bench.outliers_table --out outliers-bench --recipes fp32 int8 int8-per-tensor int4 --repeats 9

Fixtures: tiny (random weights), tiny-outliers (the real model's activation structure) and
tiny-qat-q4_0 (weights on the Q4_0 grid; run with min-max recipes here, not the -qat ones).
Drift is the export-time parity (cosine vs sentence-transformers on the built-in parity texts,
query + document prompts); latency is the median of interleaved runs of one 128-token input,
1 thread, reported with its ratio to fp32 of the same fixture and target (absolute ms on a
shared 2-core box are noise; ratios are what carries over).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

FIXTURES = ("tiny", "tiny-outliers", "tiny-qat-q4_0")
TARGETS = ("onnx", "tflite")
RECIPES = ("fp32", "int8", "int4", "int8-per-tensor")
BUCKETS = (64, 256)
LATENCY_TOKENS = 128


def resolve_recipe(name: str):
    """A preset, a recipe file, or int8-per-tensor: the int8 preset without smoothing (the old int8)."""
    from embg.quantize.recipe import load_recipe, parse_recipe

    if name == "int8-per-tensor":
        data = load_recipe("int8").to_dict()
        data.pop("smoothing", None)
        data.pop("float_channels", None)  # they split per-token rows; per-tensor activations have none
        data.pop("residual_pass", None)  # likewise
        for rule in data["rules"].values():  # the presets quantize activations per token now
            if rule["bits"] < 16:  # a float rule (the preset's head) has no activations to quantize
                rule["activations"] = "dynamic_int8"
        data.update(name="int8-per-tensor", activations="dynamic_int8",
                    description="int8 preset without smoothing: ONNX MatMulInteger, one activation scale per tensor")
        return parse_recipe(data)
    return load_recipe(name)


def export_all(args) -> list[dict]:
    from embg.export.pipeline import ExportRequest, export_bundle
    from embg.fixtures import ensure_fixture

    rows = []
    for fixture in args.fixtures:
        directory = ensure_fixture(fixture, args.out / "fixtures")
        for target in args.targets:
            for name in args.recipes:
                bundle = args.out / "bundles" / f"{fixture}_{target}_{Path(name).stem}"
                if not (bundle / "manifest.json").is_file():
                    started = time.perf_counter()
                    export_bundle(ExportRequest(model=str(directory), target=target, recipe=resolve_recipe(name),
                                                seq_lens=BUCKETS if target == "tflite" else (), out=bundle))
                    print(f"exported {bundle.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
                manifest = json.loads((bundle / "manifest.json").read_text())
                rows.append({"fixture": fixture, "target": target, "recipe": Path(name).stem, "bundle": bundle,
                             "size_mb": manifest["size_bytes"] / 1e6, "parity": manifest["parity"]})
    return rows


def measure_latency(rows: list[dict], repeats: int) -> None:
    """Median ms per bundle over interleaved rounds (every bundle once per round), 1 thread."""
    from embg.bundle import Artifact
    from embg.runtimes import load_all, load_runtime

    load_all()
    runtimes = []
    for row in rows:
        artifact = Artifact.load(row["bundle"])
        runtimes.append(load_runtime(artifact.manifest["runtime"], artifact, threads=1))
    ids = (np.arange(LATENCY_TOKENS, dtype=np.int64) % 997 + 4)[None]
    ids[0, 0], ids[0, -1] = 2, 1  # BOS ... EOS: the carrier token is there, as in every real input
    mask = np.ones_like(ids)
    for runtime in runtimes:  # warm-up
        runtime.embed(ids, mask)
    times: list[list[float]] = [[] for _ in rows]
    for _ in range(repeats):
        for i, runtime in enumerate(runtimes):
            started = time.perf_counter()
            runtime.embed(ids, mask)
            times[i].append(time.perf_counter() - started)
    for row, samples in zip(rows, times):
        row["ms"] = statistics.median(samples) * 1000
    base = {(r["fixture"], r["target"]): r["ms"] for r in rows if r["recipe"] == "fp32"}
    for row in rows:
        reference = base.get((row["fixture"], row["target"]))
        row["ratio"] = row["ms"] / reference if reference else None


def markdown(rows: list[dict], command: str) -> str:
    lines = [f"Measured with `{command}` ({time.strftime('%Y-%m-%d')}, 1 thread, seq {LATENCY_TOKENS}, "
             "shared 2-core host: compare ratios, not ms).", "",
             "| fixture | target | recipe | size MB | cos min | cos mean | ms (x fp32) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["parity"] or {}
        nan = f" ({p['nonfinite']} NaN)" if p.get("nonfinite") else ""
        ratio = f" ({r['ratio']:.2f}x)" if r.get("ratio") else ""
        lines.append(f"| {r['fixture']} | {r['target']} | {r['recipe']} | {r['size_mb']:.2f} | "
                     f"{p.get('cosine_min', float('nan')):.5f}{nan} | {p.get('cosine_mean', float('nan')):.5f} | "
                     f"{r.get('ms', float('nan')):.1f}{ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="work directory (fixtures and bundles are reused)")
    parser.add_argument("--fixtures", nargs="+", default=list(FIXTURES))
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--write", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    command = "python -m bench.outliers_table " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = export_all(args)
    measure_latency(rows, args.repeats)
    table = markdown(rows, command)
    print(table)
    if args.write:
        args.write.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
