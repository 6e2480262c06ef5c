"""The digests embg compares by: sha256 of a file, read in 4 MiB chunks (bundle files, weights, cache
entries), and of a weight's float32 values (to find a weight again in a converted file)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np


def update_digest(digest: Any, path: Path) -> None:
    """Feed ``path``'s bytes into a hashlib object without reading the whole file into memory."""
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    update_digest(digest, Path(path))
    return digest.hexdigest()


def array_digest(array: np.ndarray) -> str:
    """sha256 of an array's float32 values in C order: equal values, equal digest."""
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()
