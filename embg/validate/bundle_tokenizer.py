"""The bundle's own tokenizer files, as a device reads them, checked against the reference checkpoint's.

A device tokenizes with the files shipped in the bundle (Android: tokenizer.json; SentencePiece
apps: tokenizer.model), never with the checkpoint's. A bundle whose tokenizer differs (other
files, two ids swapped) gives other embeddings on the device while parity computed with the
checkpoint's tokenizer still passes. So the validator embeds with the bundle's tokenizer and
compares, text by text, the ids each bundle tokenizer file gives with the reference's ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from embg.errors import EmbgError
from embg.bundle import Artifact
from embg.model.tokenizer import EmbedTokenizer

EXAMPLES = 3


def load_bundle_tokenizer(artifact: Artifact) -> EmbedTokenizer:
    """tokenizer.json (+ tokenizer_config.json) from the bundle directory, with the manifest's prompts."""
    tokenizer = artifact.manifest["tokenizer"]
    try:
        loaded = EmbedTokenizer(artifact.directory, artifact.manifest["prompts"],
                                int(tokenizer.get("max_length") or artifact.manifest["max_sequence_length"]))
    except EmbgError as exc:
        raise EmbgError(f"{artifact.directory}: the bundle's tokenizer files ({', '.join(tokenizer['files'])}) "
                        f"cannot be loaded: {exc}") from exc
    _sentencepiece(artifact)  # tokenizer.model too, up front: a device may read that one
    return loaded


def _sentencepiece(artifact: Artifact):
    """A SentencePiece processor over the bundle's tokenizer.model (None when the bundle has none)."""
    if "tokenizer.model" not in artifact.manifest["tokenizer"]["files"]:
        return None
    import sentencepiece

    path = artifact.directory / "tokenizer.model"
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(str(path))
    except (OSError, RuntimeError) as exc:
        raise EmbgError(f"{path}: not a SentencePiece model the device could load ({exc})") from exc
    return processor


@dataclass
class TokenizerCheck:
    """How many texts each bundle tokenizer file encodes differently from the reference checkpoint."""

    texts: int
    mismatched: dict[str, list[int]]  # file -> indices of texts with other ids
    previews: dict[int, str]

    @property
    def mismatched_texts(self) -> int:
        return len({i for found in self.mismatched.values() for i in found})

    def detail(self) -> str:
        """Names the texts (and the files) that differ, for the failure line."""
        parts = []
        for name, found in self.mismatched.items():
            if found:
                shown = "; ".join(repr(self.previews[i]) for i in found[:EXAMPLES])
                more = f" and {len(found) - EXAMPLES} more" if len(found) > EXAMPLES else ""
                parts.append(f"the bundle's {name} gives other token ids than the reference for {shown}{more}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"texts": self.texts, "mismatched_texts": self.mismatched_texts,
                "by_file": {name: len(found) for name, found in self.mismatched.items()},
                "examples": [{"index": i, "preview": self.previews[i]}
                             for i in sorted({i for f in self.mismatched.values() for i in f})[:EXAMPLES]]}


def compare_token_ids(artifact: Artifact, bundle: EmbedTokenizer, reference: EmbedTokenizer,
                      texts: Sequence[Any]) -> TokenizerCheck:
    """Ids of every text (with its prompt, BOS/EOS, untruncated) from each bundle tokenizer file vs the reference."""
    sentencepiece = _sentencepiece(artifact)
    bos, eos = artifact.manifest["tokenizer"].get("bos_id"), artifact.manifest["tokenizer"].get("eos_id")
    mismatched: dict[str, list[int]] = {"tokenizer.json": []}
    if sentencepiece is not None:
        mismatched["tokenizer.model"] = []
    previews = {}
    for i, text in enumerate(texts):
        full = reference.prompt_text(text.task or None) + text.text
        want = list(reference.backend(full, add_special_tokens=True)["input_ids"])
        previews[i] = f"{text.text[:60]}{'...' if len(text.text) > 60 else ''} ({text.task or 'no prompt'})"
        if list(bundle.backend(bundle.prompt_text(text.task or None) + text.text,
                               add_special_tokens=True)["input_ids"]) != want:
            mismatched["tokenizer.json"].append(i)
        if sentencepiece is not None:
            got = [bos, *sentencepiece.EncodeAsIds(full), eos]
            if got != want:
                mismatched["tokenizer.model"].append(i)
    return TokenizerCheck(len(texts), mismatched, previews)
