"""The names a bundle's readers agree on: the manifest file, its schema number, the model's I/O tensors."""

from __future__ import annotations

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
#: the manifest field holding {file name: sha256} of every bundle file, recorded at export time
HASHES_FIELD = "file_sha256"
