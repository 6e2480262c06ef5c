"""A bundle on disk: the model file, the tokenizer files and manifest.json describing both.

Apps read only the bundle; the manifest carries everything they need (prompts, dims, buckets,
input/output names) and what auditors need (model id/revision, weights hash, recipe, versions,
parity summary).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
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
    """A loaded bundle directory.

    ``load`` reads manifest.json and checks its fields and that every path it names is a file inside
    the bundle; ``verify`` proves the files are the ones exported (see its docstring). Anything that
    hands a bundle to a native loader or copies it to a device calls ``verify`` first.
    """

    directory: Path
    manifest: dict[str, Any]
    _verified: dict[str, str] | None = field(default=None, repr=False, compare=False)

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

    def verify(self) -> "Artifact":
        """Prove this bundle is intact before any native loader sees it or it is copied to a device.

        Checks, raising :class:`embg.errors.EmbgError` (exit status 2) with one line naming the file:
        * the manifest's fields have the types runtimes and apps read, and every path it names
          (model file, external data, tokenizer files) is a file inside the bundle directory;
        * every file has the sha256 recorded in the manifest's ``file_sha256`` at export time;
        * the model file is structurally sound: a .tflite flatbuffer's identifier, and every
          buffer, tensor, operator and signature offset lie inside the file (the signatures the
          manifest lists exist with inputs [1, seq_len]); an .onnx parses, passes onnx's checker,
          and keeps external data only in bundle files within their sizes.

        Call it before pushing or uploading a bundle (every device runner does, in ``open``) and
        before loading it (every Runtime does). The result is remembered on this object, so
        calling it again costs nothing; :meth:`file_sha256` then gives hashes without rehashing.
        """
        if self._verified is None:
            from embg.export.integrity import verify_bundle

            self._verified = verify_bundle(self.directory, self.manifest)
        return self

    def file_sha256(self, name: str) -> str:
        """The verified sha256 of a bundle file (verifies the bundle first if not done yet)."""
        self.verify()
        assert self._verified is not None
        return self._verified[name]

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
        except UnicodeDecodeError as exc:
            raise EmbgError(f"{path} is not UTF-8 text: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
            schema = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
            raise EmbgError(f"{path}: manifest schema {schema} is not {MANIFEST_SCHEMA}")
        from embg.export.integrity import check_manifest

        check_manifest(directory, manifest)
        return cls(directory, manifest)


def is_bundle(directory: Path) -> bool:
    """Whether ``directory`` holds an embg bundle (its manifest.json): the only directory --out may replace."""
    try:
        manifest = json.loads((Path(directory) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(manifest, dict) and manifest.get("schema") == MANIFEST_SCHEMA
            and isinstance(manifest.get("target"), str) and "model_file" in manifest)


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
