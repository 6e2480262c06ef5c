"""Strict weight loading from safetensors: every expected tensor present, nothing unknown, shapes exact."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import safe_open

from embg.bundle.digest import update_digest
from embg.errors import CheckpointError
from embg.model.spec import CheckpointSpec

HEAD_KEYS = ("head.0.weight", "head.1.weight")


def expected_transformer_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Names and shapes of every tensor a Gemma3TextModel checkpoint must hold, derived from its config."""
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config["num_key_value_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    inner = int(config["intermediate_size"])
    shapes: dict[str, tuple[int, ...]] = {
        "embed_tokens.weight": (int(config["vocab_size"]), hidden),
        "norm.weight": (hidden,),
    }
    for i in range(int(config["num_hidden_layers"])):
        p = f"layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": (hidden, heads * head_dim),
            p + "self_attn.q_norm.weight": (head_dim,),
            p + "self_attn.k_norm.weight": (head_dim,),
            p + "mlp.gate_proj.weight": (inner, hidden),
            p + "mlp.up_proj.weight": (inner, hidden),
            p + "mlp.down_proj.weight": (hidden, inner),
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "pre_feedforward_layernorm.weight": (hidden,),
            p + "post_feedforward_layernorm.weight": (hidden,),
        })
    return shapes


def _read_safetensors(files: tuple[Path, ...]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    tensors[key] = handle.get_tensor(key)
        except Exception as exc:  # safetensors raises several types for corrupt headers/data
            raise CheckpointError(f"cannot read {file} as safetensors ({exc}); the file is corrupt or truncated") from exc
    return tensors


def _strip_uniform_prefix(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Checkpoints saved from a wrapper carry "model." on every key; the layout is otherwise the same.
    if tensors and all(k.startswith("model.") for k in tensors):
        return {k[len("model."):]: v for k, v in tensors.items()}
    return tensors


def check_exact_keys(found: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], where: str) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        raise CheckpointError(f"{where} is missing {len(missing)} weight(s), e.g. {missing[:3]}; refusing to fill them with random values")
    if unexpected:
        raise CheckpointError(f"{where} has {len(unexpected)} unexpected weight(s), e.g. {unexpected[:3]}; this is not EmbeddingGemma's layout")
    wrong = [(k, tuple(found[k].shape), shape) for k, shape in expected.items() if tuple(found[k].shape) != shape]
    if wrong:
        key, got, want = wrong[0]
        raise CheckpointError(f"{where}: weight {key} has shape {got}, config says {want}")


def load_state_dict(spec: CheckpointSpec) -> dict[str, torch.Tensor]:
    """All weights of the embedder as float32, keyed by export-graph parameter name."""
    tensors = _strip_uniform_prefix(_read_safetensors(spec.weight_files))
    check_exact_keys(tensors, expected_transformer_shapes(spec.config), f"{spec.directory}/model.safetensors")
    for key, dense in zip(HEAD_KEYS, spec.dense):
        head = _read_safetensors((dense.weight_file,))
        check_exact_keys(head, {"linear.weight": (dense.out_features, dense.in_features)}, str(dense.weight_file))
        tensors[key] = head["linear.weight"]
    for key, value in tensors.items():
        if not torch.is_floating_point(value):
            raise CheckpointError(f"weight {key} has dtype {value.dtype}; expected floating point")
    return {k: v.to(torch.float32) for k, v in tensors.items()}


def weights_sha256(spec: CheckpointSpec) -> str:
    """One hash over every weight file (transformer and head), in a fixed order."""
    digest = hashlib.sha256()
    for path in (*spec.weight_files, *(d.weight_file for d in spec.dense)):
        digest.update(path.name.encode())
        update_digest(digest, path)
    return digest.hexdigest()
