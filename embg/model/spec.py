"""Read and validate a checkpoint directory in the Hugging Face + sentence-transformers layout.

Everything that makes a checkpoint unexportable is refused here, before any work is done:
a causal or foreign config, a head other than mean pooling -> Dense -> Dense -> Normalize,
pickle-only weights, or anything that would need ``trust_remote_code``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embg.errors import CheckpointError

SUPPORTED_MODEL_TYPE = "gemma3_text"
# The module sequence of EmbeddingGemma's modules.json, matched on the class name so both the
# hub's `sentence_transformers.models.X` and newer module paths are accepted.
EXPECTED_MODULES = ("Transformer", "Pooling", "Dense", "Dense", "Normalize")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# EmbeddingGemma was trained with Matryoshka dims 768/512/256/128: fractions 1, 2/3, 1/3, 1/6.
MATRYOSHKA_FRACTIONS = ((1, 1), (2, 3), (1, 3), (1, 6))
IDENTITY_ACTIVATIONS = {"torch.nn.modules.linear.Identity", "Identity", "torch.nn.Identity"}


@dataclass(frozen=True)
class DenseSpec:
    """One sentence-transformers Dense module (no bias, identity activation)."""

    path: Path
    in_features: int
    out_features: int
    weight_file: Path


@dataclass(frozen=True)
class CheckpointSpec:
    """What a validated checkpoint directory contains. Loading weights happens elsewhere."""

    directory: Path
    config: dict[str, Any]
    weight_files: tuple[Path, ...]
    dense: tuple[DenseSpec, ...]
    prompts: dict[str, str]
    max_seq_length: int
    model_id: str = ""
    revision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def output_dim(self) -> int:
        return self.dense[-1].out_features

    @property
    def matryoshka_dims(self) -> tuple[int, ...]:
        full = self.output_dim
        dims = [full * num // den for num, den in MATRYOSHKA_FRACTIONS if (full * num) % den == 0]
        return tuple(sorted(set(dims), reverse=True))

    @property
    def max_positions(self) -> int:
        return int(self.config.get("max_position_embeddings", 2048))


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{what} is not valid JSON ({path}): {exc}") from exc


# Keys the export graph and the strict weight check derive shapes from; without them we would
# fail later with a bare KeyError instead of a one-line reason.
REQUIRED_CONFIG_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                        "num_key_value_heads", "vocab_size")


def _check_config(config: Any, path: Path) -> None:
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(config).__name__}")
    if "auto_map" in config or config.get("trust_remote_code"):
        raise CheckpointError(
            f"{path} asks for custom code (auto_map/trust_remote_code); embg never runs remote code"
        )
    model_type = config.get("model_type")
    if model_type != SUPPORTED_MODEL_TYPE:
        raise CheckpointError(
            f"model_type is {model_type!r} in {path}; only EmbeddingGemma ({SUPPORTED_MODEL_TYPE!r}) is supported"
        )
    if config.get("use_bidirectional_attention") is not True:
        raise CheckpointError(
            f"{path} does not set use_bidirectional_attention=true: this is a causal (decoder) config, "
            "not EmbeddingGemma; exporting it would give wrong embeddings"
        )
    missing = [k for k in REQUIRED_CONFIG_KEYS if not isinstance(config.get(k), int)]
    if missing:
        raise CheckpointError(f"{path} lacks integer value(s) for {missing}; not a complete Gemma3TextModel config")
    heads, kv_heads = config.get("num_attention_heads"), config.get("num_key_value_heads")
    if not heads or not kv_heads or heads % kv_heads:
        raise CheckpointError(f"{path}: num_attention_heads must be a multiple of num_key_value_heads")
    softcap = config.get("attn_logit_softcapping")
    if softcap not in (None, 0):
        raise CheckpointError(f"{path}: attn_logit_softcapping={softcap} is not supported by the export graph")
    if config.get("attention_bias"):
        raise CheckpointError(f"{path}: attention_bias=true is not EmbeddingGemma's layout")
    for layer_type, params in (config.get("rope_parameters") or {}).items():
        if params and params.get("rope_type", "default") != "default":
            raise CheckpointError(f"{path}: rope_type {params.get('rope_type')!r} for {layer_type} is not supported")
    if config.get("rope_scaling"):
        raise CheckpointError(f"{path}: rope_scaling is not supported by the export graph")


def _check_tokenizer_config(directory: Path) -> None:
    # transformers silently ignores a tokenizer auto_map when trust_remote_code is off and falls back
    # to the built-in class, so the bundle would tokenize unlike the checkpoint's own (custom) code.
    path = directory / "tokenizer_config.json"
    if path.is_file():
        cfg = _read_json(path, "tokenizer_config.json")
        if isinstance(cfg, dict) and "auto_map" in cfg:
            raise CheckpointError(
                f"{path} asks for a custom tokenizer class (auto_map/trust_remote_code); embg never runs remote code"
            )


TOKENIZER_MODEL_FILES = ("tokenizer.json", "tokenizer.model")


def _check_tokenizer_files(directory: Path) -> None:
    # Without them transformers still builds *a* tokenizer (a few special tokens mapping every text to
    # one id): the bundle would ship it and validation would compare two equally wrong tokenizers.
    if not any((directory / name).is_file() for name in TOKENIZER_MODEL_FILES):
        raise CheckpointError(f"{directory} has no tokenizer ({' or '.join(TOKENIZER_MODEL_FILES)}); copy the "
                              "checkpoint's tokenizer files into it")


def _find_weight_files(directory: Path, what: str) -> tuple[Path, ...]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index, "safetensors index")["weight_map"].values()))
        files = tuple(directory / shard for shard in shards)
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{what}: safetensors shards listed in the index are missing: {missing}")
        return files
    single = directory / "model.safetensors"
    if single.is_file():
        return (single,)
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{what} has weights only in pickle form ({', '.join(pickles)}); pickle files can run code "
            "when loaded, so embg refuses them. Convert to model.safetensors first"
        )
    raise CheckpointError(f"{what}: no model.safetensors in {directory}")


def _read_modules(directory: Path) -> list[dict[str, Any]]:
    modules = _read_json(directory / "modules.json", "modules.json (the sentence-transformers head)")
    if not isinstance(modules, list) or not all(
        isinstance(m, dict) and isinstance(m.get("type"), str) and isinstance(m.get("path"), str) for m in modules
    ):
        raise CheckpointError(f"{directory / 'modules.json'} must be a list of modules, each with a 'type' and a 'path'")
    # A type outside sentence_transformers is a module class that only custom code can provide.
    foreign = [m["type"] for m in modules if not m["type"].startswith("sentence_transformers.")]
    if foreign:
        raise CheckpointError(
            f"modules.json names custom module(s) {foreign} (trust_remote_code); embg never runs remote code"
        )
    kinds = tuple(m["type"].rsplit(".", 1)[-1] for m in modules)
    if kinds != EXPECTED_MODULES:
        missing_dense = kinds.count("Dense") < 2
        hint = " (the 2_Dense/3_Dense projection modules are missing)" if missing_dense else ""
        raise CheckpointError(
            f"modules.json lists {list(kinds)}; EmbeddingGemma needs {list(EXPECTED_MODULES)}{hint}"
        )
    return modules


def _check_pooling(directory: Path) -> None:
    pooling = _read_json(directory / "config.json", "1_Pooling/config.json")
    if not isinstance(pooling, dict):
        raise CheckpointError(f"{directory}/config.json must hold a JSON object")
    # The hub's files use pooling_mode_*_tokens booleans; sentence-transformers 6 writes "pooling_mode".
    if "pooling_mode" in pooling:
        modes = {str(pooling["pooling_mode"])}
    else:
        modes = {k[len("pooling_mode_"):] for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
    if modes not in ({"mean"}, {"mean_tokens"}):
        raise CheckpointError(f"pooling in {directory} is {sorted(modes)}; only mean pooling is supported")
    if pooling.get("include_prompt") is False:
        raise CheckpointError(f"{directory}: include_prompt=false pooling is not supported")


def _read_dense(directory: Path) -> DenseSpec:
    cfg = _read_json(directory / "config.json", f"{directory.name}/config.json")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("in_features"), int) or not isinstance(cfg.get("out_features"), int):
        raise CheckpointError(f"{directory}/config.json must give integer in_features and out_features")
    if cfg.get("bias"):
        raise CheckpointError(f"{directory}: Dense with bias is not EmbeddingGemma's head")
    activation = cfg.get("activation_function", "torch.nn.modules.linear.Identity")
    if activation not in IDENTITY_ACTIVATIONS:
        raise CheckpointError(f"{directory}: Dense activation {activation!r} is not identity")
    weight_file = directory / "model.safetensors"
    if not weight_file.is_file():
        pickles = [p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise CheckpointError(
                f"{directory} has Dense weights only in pickle form ({', '.join(pickles)}); embg refuses "
                "pickle files. Re-save the model with safetensors"
            )
        raise CheckpointError(f"{directory}: Dense weights model.safetensors not found")
    return DenseSpec(directory, int(cfg["in_features"]), int(cfg["out_features"]), weight_file)


def read_checkpoint(directory: Path, model_id: str = "", revision: str | None = None) -> CheckpointSpec:
    """Validate ``directory`` and describe it; raise :class:`CheckpointError` with one clear line otherwise."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory} holds no config.json: --model needs a checkpoint directory in the Hugging "
                              "Face + sentence-transformers layout of google/embeddinggemma-300m (config.json, "
                              "model.safetensors, tokenizer files, modules.json and its Dense modules), a hub id, or "
                              "a built-in fixture such as tiny")
    config = _read_json(directory / "config.json", "config.json")
    _check_config(config, directory / "config.json")
    _check_tokenizer_config(directory)
    _check_tokenizer_files(directory)
    weight_files = _find_weight_files(directory, "checkpoint")
    modules = _read_modules(directory)
    _check_pooling(directory / modules[1]["path"])
    dense = tuple(_read_dense(directory / m["path"]) for m in modules[2:4])
    hidden = int(config["hidden_size"])
    if dense[0].in_features != hidden or dense[1].in_features != dense[0].out_features:
        raise CheckpointError(
            f"Dense shapes {dense[0].in_features}->{dense[0].out_features}->{dense[1].out_features} "
            f"do not chain from hidden size {hidden}"
        )
    st_config_path = directory / "config_sentence_transformers.json"
    st_config = _read_json(st_config_path, "config_sentence_transformers.json") if st_config_path.is_file() else {}
    bert_path = directory / "sentence_bert_config.json"
    bert_config = _read_json(bert_path, "sentence_bert_config.json") if bert_path.is_file() else {}
    max_positions = int(config.get("max_position_embeddings", 2048))
    max_seq_length = int(bert_config.get("max_seq_length") or max_positions)
    return CheckpointSpec(
        directory=directory,
        config=config,
        weight_files=weight_files,
        dense=dense,
        prompts=dict(st_config.get("prompts") or {}),
        max_seq_length=min(max_seq_length, max_positions),
        model_id=model_id or str(directory),
        revision=revision,
    )
