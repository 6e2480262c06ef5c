"""One call from ``--model`` to a validated, strictly loaded embedder."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from embg.model.graph import EmbeddingGemmaGraph, build_graph
from embg.checkpoint.resolve import ResolvedModel, resolve_model
from embg.model.spec import CheckpointSpec, read_checkpoint
from embg.model.tokenizer import EmbedTokenizer
from embg.model.weights import load_state_dict


@dataclass
class LoadedModel:
    spec: CheckpointSpec
    state_dict: dict[str, torch.Tensor]
    tokenizer: EmbedTokenizer

    def graph(self, output_dim: int | None = None) -> EmbeddingGemmaGraph:
        return build_graph(self.spec, self.state_dict, output_dim)


def load_model(model: str, revision: str | None = None, token: str | None = None) -> LoadedModel:
    return load_resolved(resolve_model(model, revision, token))


def load_resolved(resolved: ResolvedModel) -> LoadedModel:
    """Load a checkpoint already located on disk (callers check paths against it first)."""
    spec = read_checkpoint(resolved.directory, resolved.model_id, resolved.revision)
    state_dict = load_state_dict(spec)
    tokenizer = EmbedTokenizer(spec.directory, spec.prompts, spec.max_seq_length)
    return LoadedModel(spec, state_dict, tokenizer)
