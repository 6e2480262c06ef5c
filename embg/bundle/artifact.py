"""A bundle on disk: the model file, the tokenizer files and manifest.json describing both.

Apps read only the bundle; the manifest carries everything they need (prompts, dims, buckets,
input/output names) and what auditors need (model id/revision, weights hash, recipe, versions,
parity summary).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from embg.bundle.digest import file_sha256
from embg.bundle.manifest import Manifest
from embg.bundle.names import MANIFEST_NAME


@dataclass
class Artifact:
    """A loaded bundle directory.

    ``load`` reads manifest.json and checks its fields and that every path it names is a file inside
    the bundle; ``verify`` proves the files are the ones exported (see its docstring). Anything that
    hands a bundle to a native loader or copies it to a device calls ``verify`` first.
    """

    directory: Path
    manifest: Manifest
    _verified: dict[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def target(self) -> str:
        return self.manifest.target

    @property
    def model_path(self) -> Path:
        return self.directory / self.manifest.model_file

    @property
    def embedding_dim(self) -> int:
        return self.manifest.embedding_dim

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
            from embg.bundle.integrity import verify_bundle

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
        return cls(directory, Manifest.read(directory))
