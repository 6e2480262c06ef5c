"""manifest.json, typed: read (checked), written (atomically), and the fields apps read as properties.

The Java ``dev.embg.core.Manifest`` in android_demo mirrors the fields an app needs. Every other
field (model id and weights hash, recipe, parity, versions ...) stays reachable by key: a Manifest
is a read-only mapping over the JSON object, so what is written is exactly what is read back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from embg.atomic import atomic_write_bytes
from embg.bundle.names import HASHES_FIELD, MANIFEST_NAME, MANIFEST_SCHEMA
from embg.errors import EmbgError

TOOL_PACKAGES = ("embg-export", "torch", "transformers", "sentence-transformers", "litert-torch", "ai-edge-litert",
                 "ai-edge-quantizer", "onnx", "onnxruntime", "onnxscript", "numpy")


@dataclass(frozen=True)
class Signature:
    """One fixed-length entry point of a .tflite bundle: inputs [1, seq_len]."""

    name: str
    seq_len: int


class Manifest(Mapping[str, Any]):
    """A bundle's manifest.json. Build one from the fields (``Manifest(fields)``), ``write`` it, or
    ``read`` a bundle's (which checks the fields' types and that every path names a file inside the bundle)."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self._fields = {"schema": MANIFEST_SCHEMA, **fields}

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Manifest(target={self.get('target')!r}, model_file={self.get('model_file')!r})"

    # ------------------------------------------------------------ the fields runtimes and apps read

    @property
    def target(self) -> str:
        return self._fields["target"]

    @property
    def runtime(self) -> str:
        return self._fields["runtime"]

    @property
    def model_file(self) -> str:
        return self._fields["model_file"]

    @property
    def files(self) -> list[str]:
        return list(self._fields["files"])

    @property
    def embedding_dim(self) -> int:
        return int(self._fields["embedding_dim"])

    @property
    def max_sequence_length(self) -> int | None:
        value = self._fields.get("max_sequence_length")
        return int(value) if value else None

    @property
    def prompts(self) -> dict[str, str]:
        return dict(self._fields["prompts"])

    @property
    def signatures(self) -> tuple[Signature, ...]:
        """The .tflite signatures, ascending by length (empty for dynamic-shape bundles)."""
        return tuple(sorted((Signature(s["name"], int(s["seq_len"])) for s in self._fields.get("signatures") or []),
                            key=lambda s: s.seq_len))

    @property
    def buckets(self) -> list[int]:
        """The sequence buckets, ascending (empty when the model takes any length)."""
        return [s.seq_len for s in self.signatures]

    @property
    def file_hashes(self) -> dict[str, str]:
        return dict(self._fields[HASHES_FIELD])

    def to_dict(self) -> dict[str, Any]:
        return dict(self._fields)

    # ------------------------------------------------------------ disk

    def write(self, bundle: Path) -> None:
        text = json.dumps(self._fields, indent=2, sort_keys=False) + "\n"
        atomic_write_bytes(Path(bundle) / MANIFEST_NAME, text.encode("utf-8"))

    @classmethod
    def read(cls, directory: Path) -> "Manifest":
        """The bundle's manifest, its fields and paths checked (:func:`embg.bundle.integrity.check_manifest`)."""
        from embg.bundle.integrity import check_manifest

        directory = Path(directory)
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise EmbgError(f"{directory} is not a bundle: {MANIFEST_NAME} not found")
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise EmbgError(f"{path} is not valid JSON: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise EmbgError(f"{path} is not UTF-8 text: {exc}") from exc
        if not isinstance(fields, dict) or fields.get("schema") != MANIFEST_SCHEMA:
            schema = fields.get("schema") if isinstance(fields, dict) else type(fields).__name__
            raise EmbgError(f"{path}: manifest schema {schema} is not {MANIFEST_SCHEMA}")
        check_manifest(directory, fields)
        return cls(fields)


def earlier_bundle_files(directory: Path) -> set[str] | None:
    """The files an embg bundle in ``directory`` wrote (its manifest and every file the manifest names or
    hashes), or None when it holds no bundle: --out replaces a directory only when it holds nothing else."""
    try:
        manifest = json.loads((Path(directory) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(manifest, dict) and manifest.get("schema") == MANIFEST_SCHEMA
            and isinstance(manifest.get("target"), str) and "model_file" in manifest):
        return None
    tokenizer = manifest.get("tokenizer")
    named = [manifest["model_file"], *_listed(manifest.get("files")), *_listed(manifest.get(HASHES_FIELD)),
             *_listed(tokenizer.get("files") if isinstance(tokenizer, dict) else None)]
    return {MANIFEST_NAME, *(name for name in named if isinstance(name, str))}


def _listed(value: Any) -> list[Any]:
    """A manifest field's file names, whether a list of names or a {name: ...} mapping (damaged: none)."""
    return list(value) if isinstance(value, (list, dict)) else []


def tool_versions() -> dict[str, str]:
    """Installed versions of the packages an export or a validation run depends on (manifest, reports)."""
    versions = {}
    for package in TOOL_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
