"""The machine: what it is, and what its matmul units can do at the model's shapes on 1 thread.

The throughput is the ceiling a variant is compared with ("achieved fraction"): fp32 via
torch and numpy, int8 via onnxruntime's MatMulInteger (what the ORT int8 bundles run) and
torch._int_mm where the CPU build has it. Best of several runs: a ceiling, not a typical value.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

FLAG_NAMES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def describe() -> dict[str, Any]:
    cpu, flags, generation = "unknown", set(), {}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and cpu == "unknown":
                    cpu = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                elif key in ("cpu family", "model") and key not in generation:
                    generation[key] = value.strip()
    except OSError:
        pass
    memory_gb = None
    try:
        import psutil

        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    from embg.bundle import tool_versions

    return {
        # "AMD EPYC" names several generations; family/model tell them apart (25/17: Zen 4, 26: Zen 5),
        # and the same int8 bundles ran 1.6-1.8x slower on a Zen 4 host than on an AVX-VNNI one (docs/measurements.md)
        "cpu": cpu, "cpu_family_model": " / ".join(generation.get(k, "?") for k in ("cpu family", "model")),
        "cpu_flags": sorted(f for f in FLAG_NAMES if f in flags),
        "logical_cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": memory_gb, "platform": platform.platform(), "python": sys.version.split()[0],
        "packages": {**tool_versions(), **_extra_versions()}, "git_commit": _git_commit(),
        "git_modified_embg_files": _git_modified(),  # others edit the shared tree: say what the run used
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _extra_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("psutil", "matplotlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _git_modified() -> list[str] | None:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", "embg"], capture_output=True, text=True, check=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [line[3:] for line in out.splitlines() if line.strip()]


def model_matmul_shapes(config: dict[str, Any], m: int) -> list[tuple[int, int, int]]:
    """(M, K, N) of the distinct projections at M tokens: q/o 768x768, k/v 768x256, gate/up, down."""
    d, ff = config["hidden_size"], config["intermediate_size"]
    q = config["num_attention_heads"] * config["head_dim"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    return sorted({(m, d, q), (m, d, kv), (m, d, ff), (m, ff, d), (m, q, d)})


def _best_gflops(fn: Callable[[], Any], flops: float, min_time: float = 0.3, rounds: int = 5) -> float:
    fn()  # warm-up (packing, thread pool)
    start = time.perf_counter()
    inner = 0
    while time.perf_counter() - start < 0.05:
        fn()
        inner += 1
    inner = max(1, int(inner * min_time / 0.05 / rounds))
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return flops / best / 1e9


def _ort_matmul_integer(m: int, k: int, n: int) -> Callable[[], Any]:
    """A one-node MatMulInteger session (uint8 activations x int8 weights, as quantize_dynamic emits)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, size=(k, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, size=(m, k), dtype=np.uint8)
    return lambda: session.run(None, {"a": a})


def _ort_matmul_fp32(m: int, k: int, n: int) -> Callable[[], Any]:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((k, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = rng.standard_normal((m, k), dtype=np.float32)
    return lambda: session.run(None, {"a": a})


def matmul_sample(config: dict[str, Any], m: int = 256, min_time: float = 0.3, rounds: int = 5
                  ) -> list[dict[str, Any]]:
    """Best GFLOP/s (2 ops per multiply-add) per engine and shape on 1 thread: one sample."""
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    per_shape = []
    try:
        with threadpool_limits(limits=1):  # numpy's OpenBLAS would otherwise use every core
            for (mm, k, n) in model_matmul_shapes(config, m):
                flops = 2.0 * mm * k * n
                a32 = rng.standard_normal((mm, k), dtype=np.float32)
                w32 = rng.standard_normal((k, n), dtype=np.float32)
                ta, tw = torch.from_numpy(a32), torch.from_numpy(w32)

                def best(fn: Callable[[], Any]) -> float:
                    return _best_gflops(fn, flops, min_time, rounds)

                row: dict[str, Any] = {"m": mm, "k": k, "n": n,
                                       "fp32_torch": best(lambda: torch.mm(ta, tw)),
                                       "fp32_numpy": best(lambda: a32 @ w32),
                                       "fp32_onnxruntime": best(_ort_matmul_fp32(mm, k, n)),
                                       "int8_onnxruntime": best(_ort_matmul_integer(mm, k, n))}
                if hasattr(torch, "_int_mm"):
                    ia = torch.randint(-127, 128, (mm, k), dtype=torch.int8)
                    iw = torch.randint(-127, 128, (k, n), dtype=torch.int8)
                    try:
                        row["int8_torch_int_mm"] = best(lambda: torch._int_mm(ia, iw))
                    except RuntimeError:  # not every CPU build has the kernel
                        pass
                per_shape.append({k2: round(v, 2) if isinstance(v, float) else v for k2, v in row.items()})
    finally:
        torch.set_num_threads(previous)
    return per_shape


def matmul_limits(samples: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Merge samples taken across the run (best per engine and shape: the machine's ceiling
    when the shared box was least busy), then the FLOP-weighted throughput over the model's mix."""
    per_shape = []
    for rows in zip(*samples):
        merged = dict(rows[0])
        for row in rows[1:]:
            for key, value in row.items():
                if key.startswith(("fp32_", "int8_")):
                    merged[key] = max(merged.get(key, 0.0), value)
        per_shape.append(merged)

    def flop_weighted(key: str) -> float | None:
        """Throughput over the model's mix of shapes (weighted by each shape's FLOPs)."""
        values = [(2.0 * r["m"] * r["k"] * r["n"], r.get(key)) for r in per_shape]
        if any(v is None for _, v in values):
            return None
        return round(sum(f for f, _ in values) / sum(f / v for f, v in values), 2)

    engines = [k for k in per_shape[0] if k.startswith(("fp32_", "int8_"))]
    mix = {engine: flop_weighted(engine) for engine in engines}
    fp32 = max(v for k, v in mix.items() if k.startswith("fp32_") and v)
    int8 = max(v for k, v in mix.items() if k.startswith("int8_") and v)
    return {"threads": 1, "m": per_shape[0]["m"], "samples": len(samples), "shapes": per_shape,
            "model_mix_gflops": mix, "peak_fp32_gflops": fp32, "peak_int8_gops": int8,
            "note": "1 thread; best over samples taken once per repetition of the interleaved loop; the peak "
                    "is the fastest engine over the model's shape mix (FLOP-weighted harmonic mean)"}
