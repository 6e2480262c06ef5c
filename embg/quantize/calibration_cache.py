"""Calibrated grids kept on disk, so exporting one checkpoint to both targets calibrates once (and the
down_proj rotation guard's choice, so it measures once: ``load_decision``/``store_decision``).

The key covers everything the result depends on: every weight and buffer of the graph as it is
calibrated (after any smoothing), the recipe's rules, the calibration batches, the source of the
calibration code and the torch version. A change to any of them is a new entry, never a stale hit.
Entries live in ``$EMBG_CACHE/calibration`` (``EMBG_CALIBRATION_CACHE=DIR`` moves them, ``=off``
turns the cache off); one entry of the real model is ~110 MB (int4 integers packed two per byte; wider
ones, bits 6, one per byte).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embg.atomic import atomic_write_bytes
from embg.cache_dir import cache_dir
from embg.quantize.tflite_flatbuffer import pack_int4, unpack_int4

# the calibration code, and this module: its storage format is part of what a hit must reproduce
CODE_MODULES = ("embg.quantize.int4_blocks", "embg.quantize.gptq", "embg.quantize.calibrate",
                "embg.quantize.calibration_cache")


def cache_key(graph: torch.nn.Module, rules: dict[str, Any], batches: list,
              code_modules: tuple[str, ...] = CODE_MODULES) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(graph.state_dict(keep_vars=False).items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(value.detach().to(torch.float32).numpy()).tobytes())
    for name, value in sorted(graph.named_buffers()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(value.detach().to(torch.float32).numpy()).tobytes())
    digest.update(json.dumps(rules, sort_keys=True).encode())
    for ids, mask in batches:
        digest.update(ids.numpy().tobytes())
        digest.update(mask.numpy().tobytes())
    for module in code_modules:
        digest.update(Path(sys.modules[module].__file__).read_bytes())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()[:32]


def _path(key: str, suffix: str = ".npz") -> Path | None:
    root = cache_dir("EMBG_CALIBRATION_CACHE", "calibration")
    return None if root is None else root / f"{key}{suffix}"


def load_decision(key: str) -> dict[str, Any] | None:
    """A small measured decision (e.g. which layers the down_proj guard rotates) stored under ``key``."""
    path = _path(key, ".json")
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def store_decision(key: str, decision: dict[str, Any]) -> None:
    path = _path(key, ".json")
    if path is not None:
        atomic_write_bytes(path, json.dumps(decision).encode())


def load(key: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]] | None:
    path = _path(key)
    if path is None or not path.is_file():
        return None
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        grids = {}
        packed = meta.get("int4_packed", [True] * len(meta["names"]))
        for i, (name, shape) in enumerate(zip(meta["names"], meta["shapes"])):
            q = (unpack_int4(data[f"q{i}"].tobytes(), shape[0] * shape[1]).reshape(shape) if packed[i]
                 else data[f"q{i}"])
            grids[name] = (q, data[f"s{i}"])
    return grids, meta["report"]


def store(key: str, grids: dict[str, tuple[np.ndarray, np.ndarray]], report: dict[str, Any]) -> None:
    path = _path(key)
    if path is None:
        return
    arrays: dict[str, np.ndarray] = {}
    # int4 integers two per byte; wider ones (bits 6) as int8, which packing would cut to their low 4 bits
    packed = [bool(-8 <= int(q.min(initial=0)) and int(q.max(initial=0)) <= 7) for q, _ in grids.values()]
    for i, (q, scales) in enumerate(grids.values()):
        arrays[f"q{i}"], arrays[f"s{i}"] = (pack_int4(q) if packed[i] else q.astype(np.int8)), scales
    meta = {"names": list(grids), "shapes": [list(q.shape) for q, _ in grids.values()], "report": report,
            "int4_packed": packed}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
