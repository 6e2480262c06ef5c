"""embg-fixture writes checkpoints in the real layout: loadable by sentence-transformers unchanged,
seeded (byte-identical on a second run), snapped exactly onto the QAT grids, and `full` with the
real model's parameter count."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

REAL_PARAMETERS = 307_581_696  # google/embeddinggemma-300m with its Dense head
REAL_TRANSFORMER_PARAMETERS = 302_863_104
DETERMINISTIC_FILES = ("model.safetensors", "2_Dense/model.safetensors", "3_Dense/model.safetensors",
                       "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "config.json", "modules.json",
                       "1_Pooling/config.json", "config_sentence_transformers.json")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def test_tiny_loads_in_sentence_transformers_unchanged(tiny_dir):
    from sentence_transformers import SentenceTransformer

    from embg.fixtures import FIXTURE_KINDS, PROMPTS

    model = SentenceTransformer(str(tiny_dir), device="cpu", local_files_only=True)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Transformer", "Pooling", "Dense", "Dense", "Normalize"]
    assert model.prompts == PROMPTS
    texts = ["which river is the longest", "the Nile is about 6650 km long " * 4]
    with_prompt = model.encode(texts, prompt_name="query", convert_to_numpy=True)
    plain = model.encode(texts, convert_to_numpy=True)
    assert with_prompt.shape == (2, FIXTURE_KINDS["tiny"].head[1]) and np.isfinite(with_prompt).all()
    assert np.allclose(np.linalg.norm(with_prompt, axis=1), 1.0, atol=1e-5)
    assert np.abs(with_prompt - plain).max() > 1e-3  # the prompt really was prepended
    # BOS and EOS added, PAD 0 on the right, as the real Gemma 3 tokenizer does.
    features = model.tokenize(["a", "a b c d e f"])
    ids, mask = features["input_ids"], features["attention_mask"]
    assert ids[0, 0] == 2 and ids[0, int(mask[0].sum()) - 1] == 1
    assert (ids[0][mask[0] == 0] == 0).all() and mask[0, -1] == 0


def test_fixture_command_is_deterministic(tiny_dir, tmp_path):
    """A second run of `embg-fixture --kind tiny` in a fresh process writes the same bytes."""
    out = tmp_path / "again"
    proc = subprocess.run([sys.executable, "-m", "embg.cli.fixture", "--kind", "tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in DETERMINISTIC_FILES:
        assert sha256(out / name) == sha256(tiny_dir / name), name
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".again.")]


@pytest.mark.parametrize("fixture_name, grid", [("tiny_q4_dir", "q4_0"), ("tiny_q8_dir", "q8_0")])
def test_qat_fixture_weights_are_on_grid(fixture_name, grid, request, tiny_dir):
    from embg.fixtures import FIXTURE_KINDS
    from embg.quantize.grids import GRIDS

    layers = FIXTURE_KINDS["tiny"].config["num_hidden_layers"]
    directory = request.getfixturevalue(fixture_name)
    tensors = read_tensors(directory / "model.safetensors")
    matrices = {k: v for k, v in tensors.items() if v.ndim == 2}
    assert "embed_tokens.weight" in matrices and len(matrices) == 1 + 7 * layers
    for name, weight in matrices.items():
        assert weight.dtype == torch.float32, name
        assert torch.equal(GRIDS[grid].snap(weight), weight), name
    # Control: the unsnapped tiny weights are off that grid, so the check above can fail.
    plain = read_tensors(tiny_dir / "model.safetensors")["layers.0.mlp.up_proj.weight"]
    assert not torch.equal(GRIDS[grid].snap(plain), plain)
    meta = json.loads((directory / "embg_fixture.json").read_text())
    assert meta["snap"] == grid


def test_full_parameter_count_without_writing():
    """Counted from the shapes the strict loader demands, and cross-checked against transformers."""
    from transformers import Gemma3TextConfig, Gemma3TextModel

    from embg.fixtures import FIXTURE_KINDS, FULL_CONFIG
    from embg.model.weights import expected_transformer_shapes

    kind = FIXTURE_KINDS["full"]
    shapes = expected_transformer_shapes(kind.config)
    transformer = sum(math.prod(s) for s in shapes.values())
    hidden = kind.config["hidden_size"]
    head = hidden * kind.head[0] + kind.head[0] * kind.head[1]
    assert (hidden, *kind.head) == (768, 3072, 768)
    assert transformer == REAL_TRANSFORMER_PARAMETERS
    assert transformer + head == REAL_PARAMETERS
    with torch.device("meta"):  # no memory: shapes only
        model = Gemma3TextModel(Gemma3TextConfig(**FULL_CONFIG))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes


@pytest.mark.slow
def test_full_fixture_written_has_real_parameter_count(tmp_path):
    from embg.fixtures import FULL_CONFIG, write_fixture
    from embg.model.spec import read_checkpoint

    out = write_fixture("full", tmp_path / "full")
    total = 0
    for path in (out / "model.safetensors", out / "2_Dense" / "model.safetensors", out / "3_Dense" / "model.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            total += sum(math.prod(handle.get_slice(k).get_shape()) for k in handle.keys())
    assert total == REAL_PARAMETERS
    spec = read_checkpoint(out)
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "sliding_window", "max_position_embeddings"):
        assert spec.config[key] == FULL_CONFIG[key], key
    assert spec.matryoshka_dims == (768, 512, 256, 128)
    shutil.rmtree(out)


def test_builtin_fixture_name_uses_cache(tiny_dir, tmp_path, monkeypatch):
    """`--model tiny` resolves to the fixture cache without writing when it is already there."""
    from embg.fixtures import FIXTURE_VERSION
    from embg.checkpoint.resolve import fixture_cache_dir, resolve_model

    monkeypatch.setenv("EMBG_CACHE", str(tmp_path / "cache"))
    tag = f"tiny-v{FIXTURE_VERSION}-py{sys.version_info.major}{sys.version_info.minor}"
    cached = fixture_cache_dir() / tag
    shutil.copytree(tiny_dir, cached)
    marker = sha256(cached / "model.safetensors")
    resolved = resolve_model("tiny")
    assert resolved.directory == cached
    assert resolved.model_id == "embg-fixture:tiny" and resolved.revision == FIXTURE_VERSION
    assert sha256(cached / "model.safetensors") == marker


def test_fixture_cli_refuses_bad_input(tmp_path, capsys):
    from embg.cli.fixture import main

    with pytest.raises(SystemExit) as info:
        main(["--kind", "huge", "--out", str(tmp_path / "x")])
    assert info.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err
    target = tmp_path / "file"
    target.write_text("keep me")
    assert main(["--kind", "tiny", "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("embg-fixture: error:") and "is a file" in err[-1]
    assert target.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
