"""Where ONNX Runtime spends the time: a per-op profile of ONNX bundles at chosen lengths.

    python bench/profile_onnx.py BUNDLE [BUNDLE ...] [--tokens 256,2048] [--repeats 5] [--json out.json]

Every bundle is loaded once with ONNX Runtime's profiler on (1 thread, batch 1); the runs are
interleaved (each repetition runs every bundle at every length) so a busy machine slows all of
them alike. Node events are split into runs by the session's ``model_run`` events and summed per
category and op type; the report gives medians over repetitions. MatMuls are split by their
inputs: products of two >= 3-D activations are the attention scores and weighted values, the
rest multiply by a (2-D, prepacked) weight.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MATMULS = {"MatMul", "MatMulInteger", "MatMulNBits", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "Gemm",
           "FusedMatMul"}
CATEGORIES = {  # op type -> category; MatMuls are split by weights vs activations below
    "Softmax": "softmax",
    "DynamicQuantizeLinear": "activation quantization", "QuantizeLinear": "activation quantization",
    "DequantizeLinear": "activation quantization",
    "Gather": "gather (embedding, band keys)", "GatherBlockQuantized": "gather (embedding, band keys)",
    "Transpose": "layout", "Reshape": "layout", "Concat": "layout", "Slice": "layout", "Pad": "layout",
    "Expand": "layout", "Unsqueeze": "layout", "Squeeze": "layout",
    "SimplifiedLayerNormalization": "norms", "SkipSimplifiedLayerNormalization": "norms",
    "Pow": "norms", "ReduceMean": "norms", "Sqrt": "norms", "Reciprocal": "norms",
}


def category(op: str, input_shapes: list[dict[str, list[int]]]) -> str:
    if op in MATMULS:
        # Weights are 2-D and prepacked (often not even listed); scores and values multiply two >= 4-D activations.
        activations = sum(len(next(iter(shape.values()), [])) >= 3 for shape in input_shapes)
        return "attention products (scores, values)" if activations >= 2 else "matmul with weights"
    return CATEGORIES.get(op, "elementwise and masks")


def token_inputs(tokens: int, vocab: int = 4096, seed: int = 0) -> dict[str, np.ndarray]:
    """Random ids below ``vocab`` (every fixture has that many): timing does not depend on which."""
    rng = np.random.default_rng(seed + tokens)
    ids = rng.integers(4, vocab, size=(1, tokens), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def split_runs(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Node events grouped by the model_run they fall in (in time order)."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    grouped: list[list[dict[str, Any]]] = [[] for _ in runs]
    for event in nodes:
        for i, (start, end) in enumerate(runs):
            if start <= event["ts"] <= end:
                grouped[i].append(event)
                break
    return grouped


def summarise(run: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """(ms per category, ms per op type) of one run."""
    by_category: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    for event in run:
        args = event.get("args", {})
        op = args.get("op_name", "?")
        ms = event["dur"] / 1000.0
        by_category[category(op, args.get("input_type_shape") or [])] += ms
        by_op[op] += ms
    return dict(by_category), dict(by_op)


def profile(bundles: list[Path], tokens: list[int], repeats: int, threads: int = 1) -> dict[str, Any]:
    import onnxruntime as ort

    from embg.bundle import Artifact

    sessions, tmp = {}, tempfile.mkdtemp(prefix="embg-ort-profile-")
    for bundle in bundles:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / bundle.name)
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        sessions[str(bundle)] = ort.InferenceSession(str(Artifact.load(bundle).model_path), options,
                                                     providers=["CPUExecutionProvider"])
    feeds = {n: token_inputs(n) for n in tokens}
    order: dict[str, list[int]] = defaultdict(list)  # run index -> tokens, per session, in call order
    for name, session in sessions.items():  # warm-up (arena growth, first-run kernels)
        for n in tokens:
            session.run(None, feeds[n])
            order[name].append(-n)
    for rep in range(repeats):
        for name in list(sessions)[rep % len(sessions):] + list(sessions)[:rep % len(sessions)]:
            for n in tokens:
                sessions[name].run(None, feeds[n])
                order[name].append(n)
    out: dict[str, Any] = {"tokens": tokens, "repeats": repeats, "threads": threads,
                           "onnxruntime": ort.__version__, "bundles": {}}
    for name, session in sessions.items():
        events = json.loads(Path(session.end_profiling()).read_text())
        runs = split_runs(events)
        per_tokens: dict[str, Any] = {}
        for n in tokens:
            picked = [summarise(run) for run, t in zip(runs, order[name]) if t == n]
            cats = sorted({k for c, _ in picked for k in c})
            ops = sorted({k for _, o in picked for k in o})
            categories = {k: round(statistics.median(c.get(k, 0.0) for c, _ in picked), 2) for k in cats}
            per_tokens[str(n)] = {
                # per-category medians (robust to a one-off stall in one op), and their sum
                "kernel_ms_median": round(sum(categories.values()), 2),
                "run_ms_median": round(statistics.median(sum(c.values()) for c, _ in picked), 2),
                "categories_ms": categories,
                "ops_ms": {k: round(statistics.median(o.get(k, 0.0) for _, o in picked), 2) for k in ops},
            }
        out["bundles"][name] = per_tokens
    return out


def render(result: dict[str, Any]) -> str:
    lines = []
    for n in result["tokens"]:
        names = list(result["bundles"])
        cats = sorted({k for b in names for k in result["bundles"][b][str(n)]["categories_ms"]},
                      key=lambda k: -result["bundles"][names[0]][str(n)]["categories_ms"].get(k, 0.0))
        lines += [f"{n} tokens, ms (median of {result['repeats']}; share of the kernel time)", "",
                  "| category | " + " | ".join(_label(b) for b in names) + " |",
                  "|---|" + "---:|" * len(names)]
        for cat in cats:
            cells = []
            for b in names:
                entry = result["bundles"][b][str(n)]
                ms = entry["categories_ms"].get(cat, 0.0)
                cells.append(f"{ms:.1f} ({ms / entry['kernel_ms_median'] * 100:.0f}%)")
            lines.append(f"| {cat} | " + " | ".join(cells) + " |")
        lines.append("| **total kernel time** | " + " | ".join(
            f"**{result['bundles'][b][str(n)]['kernel_ms_median']:.0f}**" for b in names) + " |")
        lines.append("")
    return "\n".join(lines)


def _label(bundle: str) -> str:
    """The bundle's folder name; for `bench/run.py`'s cache (<variant>/bundle), the variant's."""
    path = Path(bundle)
    return path.parent.name if path.name == "bundle" else path.name


def main(argv: list[str] | None = None) -> int:
    from bench.real_run import write_json

    parser = argparse.ArgumentParser(prog="python bench/profile_onnx.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--tokens", default="256,2048")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    result = profile(args.bundles, [int(t) for t in args.tokens.split(",")], args.repeats, args.threads)
    if args.json:
        write_json(args.json, result)  # atomically: a reader never sees half a results file
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
