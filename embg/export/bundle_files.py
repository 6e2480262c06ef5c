"""What the exporter adds to a bundle besides the model file: its default name and the tokenizer files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from embg.bundle.digest import file_sha256
from embg.errors import EmbgError
from embg.model.tokenizer import TOKENIZER_FILES


def artifact_stem(model_id: str, target: str, recipe: str, seq_len: int | None = None) -> str:
    """``embeddinggemma-300m_<target>_<recipe>[_seq<L>]``, named after the model's last id component."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", model_id.rstrip("/").split("/")[-1].split(":")[-1]) or "model"
    stem = f"{base}_{target}_{recipe}"
    return f"{stem}_seq{seq_len}" if seq_len else stem


def copy_tokenizer(source: Path, bundle: Path) -> dict[str, str]:
    """Copy the tokenizer files into the bundle; returns {file name: sha256}."""
    hashes = {}
    for name in TOKENIZER_FILES:
        src = Path(source) / name
        if src.is_file():
            shutil.copy2(src, bundle / name)
            hashes[name] = file_sha256(bundle / name)
    if "tokenizer.json" not in hashes and "tokenizer.model" not in hashes:
        raise EmbgError(f"no tokenizer.json or tokenizer.model in {source}")
    return hashes
