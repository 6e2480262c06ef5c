"""The bundle format, at the bottom of embg: what a bundle directory holds and how it is read,
written and verified. It imports nothing of embg but ``errors`` and ``atomic``; everything else
(export, runtimes, devices, validate) builds on it."""

from embg.bundle.artifact import Artifact
from embg.bundle.buckets import DYNAMIC_LENGTHS, choose_bucket, fit_to, rows_by_bucket
from embg.bundle.digest import array_digest, file_sha256
from embg.bundle.manifest import Manifest, Signature, earlier_bundle_files, tool_versions
from embg.bundle.names import HASHES_FIELD, INPUT_NAMES, MANIFEST_NAME, MANIFEST_SCHEMA, OUTPUT_NAME

__all__ = ["DYNAMIC_LENGTHS", "HASHES_FIELD", "INPUT_NAMES", "MANIFEST_NAME", "MANIFEST_SCHEMA", "OUTPUT_NAME",
           "Artifact", "Manifest", "Signature", "array_digest", "earlier_bundle_files", "choose_bucket", "file_sha256", "fit_to",
           "rows_by_bucket", "tool_versions"]
