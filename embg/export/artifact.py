"""A bundle on disk: the model file, the tokenizer files and manifest.json describing both.

Apps read only the bundle; the manifest carries everything they need (prompts, dims, buckets,
input/output names) and what auditors need (model id/revision, weights hash, recipe, versions,
parity summary).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from embg.errors import EmbgError
from embg.model.tokenizer import TOKENIZER_FILES
from embg.model.weights import file_sha256

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
TOOL_PACKAGES = ("embg-export", "torch", "transformers", "sentence-transformers", "litert-torch", "ai-edge-litert",
                 "ai-edge-quantizer", "onnx", "onnxruntime", "onnxscript", "numpy")


@dataclass
class Artifact:
    """A loaded bundle directory."""

    directory: Path
    manifest: dict[str, Any]

    @property
    def target(self) -> str:
        return self.manifest["target"]

    @property
    def model_path(self) -> Path:
        return self.directory / self.manifest["model_file"]

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    @property
    def manifest_sha256(self) -> str:
        return file_sha256(self.directory / MANIFEST_NAME)

    @classmethod
    def load(cls, directory: Path) -> "Artifact":
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise EmbgError(f"{directory} is not a bundle: {MANIFEST_NAME} not found")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise EmbgError(f"{path} is not valid JSON: {exc}") from exc
        if manifest.get("schema") != MANIFEST_SCHEMA:
            raise EmbgError(f"{path}: manifest schema {manifest.get('schema')} is not {MANIFEST_SCHEMA}")
        artifact = cls(directory, manifest)
        if not artifact.model_path.is_file():
            raise EmbgError(f"bundle {directory} lacks its model file {manifest['model_file']}")
        return artifact


def artifact_stem(model_id: str, target: str, recipe: str, seq_len: int | None = None) -> str:
    """``embeddinggemma-300m_<target>_<recipe>[_seq<L>]``, named after the model's last id component."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", model_id.rstrip("/").split("/")[-1].split(":")[-1]) or "model"
    stem = f"{base}_{target}_{recipe}"
    return f"{stem}_seq{seq_len}" if seq_len else stem


def tool_versions() -> dict[str, str]:
    versions = {}
    for package in TOOL_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


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


def write_manifest(bundle: Path, manifest: dict[str, Any]) -> None:
    manifest = {"schema": MANIFEST_SCHEMA, **manifest}
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
