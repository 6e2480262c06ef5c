"""The one file digest: sha256 of a file, read in 4 MiB chunks (bundle files, weights, cache entries)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def update_digest(digest: Any, path: Path) -> None:
    """Feed ``path``'s bytes into a hashlib object without reading the whole file into memory."""
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    update_digest(digest, Path(path))
    return digest.hexdigest()
