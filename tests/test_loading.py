"""Strict checkpoint loading: every unexportable checkpoint is refused through the CLI with one
clear line, exit status 2 and nothing written; the hub's legacy on-disk layout still loads."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from embg.fixtures import FIXTURE_KINDS
from embg.model.weights import expected_transformer_shapes
from embg.parity.path import cosine_rows

EXPORT_ARGS = ("--target", "onnx", "--bits", "8")

# Shapes come from the fixture definition, so the tests follow it if the tiny sizes change.
TINY = FIXTURE_KINDS["tiny"]
HIDDEN = TINY.config["hidden_size"]
KV_ROWS = TINY.config["num_key_value_heads"] * TINY.config["head_dim"]
HEAD_OUT = TINY.head[1]


def run_export(argv: list[str], capsys) -> tuple[int, str, str]:
    """embg-export in-process (a subprocess per case would re-import torch each time)."""
    from embg.cli.export import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    """The single error line, which must be the last thing the CLI printed, without a traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("embg-export: error:")]
    assert len(errors) == 1, err
    assert lines[-1] == errors[0], err
    return errors[0]


def assert_nothing_written(out: Path, before: set[str] | None = None) -> None:
    """``out`` was not created and its parent holds no leftover temporary directories."""
    assert not out.exists() or out.is_file()
    if out.parent.exists():
        names = {p.name for p in out.parent.iterdir()}
        leftovers = [n for n in names if n.startswith(f".{out.name}.")]
        assert not leftovers, leftovers
        if before is not None:
            assert names == before, names ^ before


def assert_refused(argv: list[str], out: Path, capsys, *needles: str) -> str:
    """Run the CLI, expect exit 2 with one error line naming every needle, and no output."""
    # The closest existing ancestor must look exactly the same afterwards.
    anchor = out.parent
    while not anchor.exists():
        anchor = anchor.parent
    before = {p.name for p in anchor.iterdir()}
    code, stdout, err = run_export([*argv, "--out", str(out)], capsys)
    assert code == 2, (stdout, err)
    line = error_line(err)
    for needle in needles:
        assert needle.lower() in line.lower(), (needle, line)
    assert not out.exists()
    assert {p.name for p in anchor.iterdir()} == before
    assert_nothing_written(out, before if anchor == out.parent else None)
    assert stdout.strip() == ""  # stdout is only ever the bundle path
    return line


# --------------------------------------------------------------------------- mutations

def edit_json(path: Path, change: Callable[[object], object]) -> None:
    """Apply ``change`` to the parsed JSON in place (its return value is ignored) and write it back."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def edit_weights(path: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def _causal_missing(d: Path) -> None:
    edit_json(d / "config.json", lambda c: c.pop("use_bidirectional_attention"))


def _causal_false(d: Path) -> None:
    edit_json(d / "config.json", lambda c: c.update(use_bidirectional_attention=False))


def _model_type(d: Path) -> None:
    edit_json(d / "config.json", lambda c: c.update(model_type="gemma2"))


def _missing_weight(d: Path) -> None:
    edit_weights(d / "model.safetensors", lambda t: t.pop("layers.1.mlp.up_proj.weight"))


def _extra_weight(d: Path) -> None:
    edit_weights(d / "model.safetensors", lambda t: t.update({"lm_head.weight": torch.zeros(TINY.config["vocab_size"], HIDDEN)}))


def _wrong_shape(d: Path) -> None:
    edit_weights(d / "model.safetensors",
                 lambda t: t.update({"layers.2.self_attn.k_proj.weight": torch.zeros(2 * KV_ROWS, HIDDEN)}))


def _dense_wrong_shape(d: Path) -> None:
    edit_weights(d / "3_Dense" / "model.safetensors", lambda t: t.update({"linear.weight": torch.zeros(HEAD_OUT, HEAD_OUT)}))


def _dense_missing_key(d: Path) -> None:
    edit_weights(d / "2_Dense" / "model.safetensors",
                 lambda t: t.update({"weight": t.pop("linear.weight")}))


def _no_dense_module(d: Path) -> None:
    def drop(modules):
        modules[:] = [m for m in modules if m["path"] != "2_Dense"]
        for i, m in enumerate(modules):
            m["idx"], m["name"] = i, str(i)

    edit_json(d / "modules.json", drop)
    shutil.rmtree(d / "2_Dense")


def _dense_dir_removed(d: Path) -> None:
    shutil.rmtree(d / "2_Dense")


def _hub_pooling(**modes: bool) -> Callable[[Path], None]:
    def mutate(d: Path) -> None:
        flags = {f"pooling_mode_{m}": False for m in
                 ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")}
        flags.update({f"pooling_mode_{k}": v for k, v in modes.items()})
        (d / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": HIDDEN, **flags}))
    return mutate


def _st6_pooling(mode: str) -> Callable[[Path], None]:
    def mutate(d: Path) -> None:
        edit_json(d / "1_Pooling" / "config.json", lambda c: c.update(pooling_mode=mode))
    return mutate


def _pickle_weights(d: Path) -> None:
    torch.save(load_file(str(d / "model.safetensors")), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()


def _pickle_dense(d: Path) -> None:
    torch.save(load_file(str(d / "2_Dense" / "model.safetensors")), d / "2_Dense" / "pytorch_model.bin")
    (d / "2_Dense" / "model.safetensors").unlink()


def _auto_map(d: Path) -> None:
    edit_json(d / "config.json",
              lambda c: c.update(auto_map={"AutoModel": "modeling_custom.CustomModel"}))


def _tokenizer_auto_map(d: Path) -> None:
    edit_json(d / "tokenizer_config.json",
              lambda c: c.update(auto_map={"AutoTokenizer": ["tokenization_custom.CustomTokenizer", None]}))


def _custom_module(d: Path) -> None:
    edit_json(d / "modules.json", lambda m: m[1].update(type="custom_pooling.Pooling"))


def _truncated_weights(d: Path) -> None:
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


def _garbage_weights(d: Path) -> None:
    (d / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))


def _missing_config(d: Path) -> None:
    (d / "config.json").unlink()


def _emptied(d: Path) -> None:
    shutil.rmtree(d)
    d.mkdir()


def _invalid_config(d: Path) -> None:
    (d / "config.json").write_text('{"model_type": "gemma3_text", ')


def _invalid_modules(d: Path) -> None:
    (d / "modules.json").write_text("[{]")


def _config_lacks_hidden(d: Path) -> None:
    edit_json(d / "config.json", lambda c: c.pop("hidden_size"))


def _module_without_path(d: Path) -> None:
    edit_json(d / "modules.json", lambda m: m[2].pop("path"))


REFUSALS = {
    "causal-flag-missing": (_causal_missing, ["use_bidirectional_attention", "causal"]),
    "causal-flag-false": (_causal_false, ["use_bidirectional_attention", "causal"]),
    "model-type": (_model_type, ["model_type", "'gemma2'", "gemma3_text"]),
    "missing-weight": (_missing_weight, ["missing", "layers.1.mlp.up_proj.weight"]),
    "unexpected-weight": (_extra_weight, ["unexpected", "lm_head.weight"]),
    "wrong-shape": (_wrong_shape, ["layers.2.self_attn.k_proj.weight", str((2 * KV_ROWS, HIDDEN)), str((KV_ROWS, HIDDEN))]),
    "dense-wrong-shape": (_dense_wrong_shape, ["3_Dense", "linear.weight", "shape"]),
    "dense-missing-weight": (_dense_missing_key, ["2_Dense", "missing", "linear.weight"]),
    "no-dense-module": (_no_dense_module, ["modules.json", "Dense", "missing"]),
    "dense-dir-removed": (_dense_dir_removed, ["2_Dense", "not found"]),
    "pooling-cls-hub": (_hub_pooling(cls_token=True), ["pooling", "cls_token", "mean"]),
    "pooling-mean-and-max-hub": (_hub_pooling(mean_tokens=True, max_tokens=True), ["pooling", "max_tokens"]),
    "pooling-cls-st6": (_st6_pooling("cls"), ["pooling", "cls", "mean"]),
    "pooling-lasttoken-st6": (_st6_pooling("lasttoken"), ["pooling", "lasttoken"]),
    "pickle-weights": (_pickle_weights, ["pickle", "pytorch_model.bin", "safetensors"]),
    "pickle-dense": (_pickle_dense, ["pickle", "2_Dense", "pytorch_model.bin"]),
    "auto-map": (_auto_map, ["auto_map", "remote code"]),
    "tokenizer-auto-map": (_tokenizer_auto_map, ["tokenizer_config.json", "auto_map"]),
    "custom-module-type": (_custom_module, ["custom_pooling.Pooling", "remote code"]),
    "truncated-safetensors": (_truncated_weights, ["model.safetensors", "corrupt or truncated"]),
    "garbage-safetensors": (_garbage_weights, ["model.safetensors", "corrupt or truncated"]),
    "missing-config": (_missing_config, ["holds no config.json", "sentence-transformers layout", "hub id", "fixture"]),
    "empty-directory": (_emptied, ["holds no config.json", "sentence-transformers layout"]),
    "invalid-config-json": (_invalid_config, ["config.json", "not valid JSON"]),
    "invalid-modules-json": (_invalid_modules, ["modules.json", "not valid JSON"]),
    "config-lacks-hidden-size": (_config_lacks_hidden, ["hidden_size"]),
    "module-without-path": (_module_without_path, ["modules.json", "'path'"]),
}


@pytest.fixture
def bad_copy(tiny_dir, tmp_path) -> Path:
    directory = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, directory)
    return directory


def test_unmutated_copy_is_accepted(bad_copy):
    """Control: the copy itself loads, so each refusal below is caused by its mutation alone."""
    from embg.checkpoint.load import load_model

    model = load_model(str(bad_copy))
    assert model.spec.output_dim == HEAD_OUT
    assert len(model.state_dict) == len(expected_transformer_shapes(TINY.config)) + 2  # + two Dense


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_checkpoint_is_refused(case, bad_copy, tmp_path, capsys):
    mutate, needles = REFUSALS[case]
    mutate(bad_copy)
    assert_refused(["--model", str(bad_copy), *EXPORT_ARGS], tmp_path / "work" / "out", capsys, *needles)


def test_refusal_leaves_existing_bundle_untouched(bad_copy, tmp_path, capsys):
    out = tmp_path / "work" / "out"
    out.mkdir(parents=True)
    previous = json.dumps({"schema": 1, "target": "onnx", "model_file": "m.onnx"})  # an earlier embg bundle
    (out / "manifest.json").write_text(previous)
    _causal_missing(bad_copy)
    code, _, err = run_export(["--model", str(bad_copy), *EXPORT_ARGS, "--out", str(out)], capsys)
    assert code == 2
    assert "use_bidirectional_attention" in error_line(err)
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    assert (out / "manifest.json").read_text() == previous
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_read_checkpoint_raises_checkpoint_error(bad_copy):
    """Library callers get the typed error, not only the CLI."""
    from embg.errors import CheckpointError
    from embg.model.spec import read_checkpoint

    _pickle_weights(bad_copy)
    with pytest.raises(CheckpointError, match="pickle"):
        read_checkpoint(bad_copy)


# --------------------------------------------------------------------------- legacy hub layout

LEGACY_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"},
    {"idx": 4, "name": "4", "path": "4_Normalize", "type": "sentence_transformers.models.Normalize"},
]


def make_legacy(directory: Path, max_seq_length: int = 2048) -> None:
    """Rewrite a fixture copy into the layout google/embeddinggemma-300m has on the hub."""
    (directory / "modules.json").write_text(json.dumps(LEGACY_MODULES, indent=2))
    _hub_pooling(mean_tokens=True)(directory)
    edit_json(directory / "1_Pooling" / "config.json", lambda c: c.update(include_prompt=True))
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}))
    for dense in ("2_Dense", "3_Dense"):  # the hub's Dense configs predate module_*_name
        edit_json(directory / dense / "config.json",
                  lambda c: [c.pop(k, None) for k in ("module_input_name", "module_output_name")])


def test_legacy_hub_layout_loads_and_matches(bad_copy, tiny_dir, tiny_reference):
    from embg.checkpoint.load import load_model
    from embg.model.spec import read_checkpoint
    from embg.runtimes.reference import SentenceTransformersReference

    make_legacy(bad_copy)
    spec = read_checkpoint(bad_copy)
    assert [d.path.name for d in spec.dense] == ["2_Dense", "3_Dense"]
    assert spec.max_seq_length == 2048 and spec.output_dim == HEAD_OUT
    assert spec.prompts["query"] == "task: search result | query: "

    model = load_model(str(bad_copy))
    texts = ["a short text", "a longer text " * 6, ""]
    batch = model.tokenizer.encode(texts, prompt="query")
    with torch.no_grad():
        ours = model.graph()(torch.as_tensor(batch.input_ids), torch.as_tensor(batch.attention_mask)).numpy()

    legacy_ref = SentenceTransformersReference(bad_copy).encode(texts, prompt_name="query")
    modern_ref = tiny_reference.encode(texts, prompt_name="query")
    # sentence-transformers reads the legacy layout as the same model ...
    assert np.abs(legacy_ref - modern_ref).max() <= 1e-6
    # ... and so does embg.
    assert cosine_rows(ours, legacy_ref).min() >= 0.999999
    assert np.abs(ours - legacy_ref).max() <= 1e-5


def test_sentence_bert_max_seq_length_is_honoured(bad_copy):
    from embg.model.spec import read_checkpoint

    make_legacy(bad_copy, max_seq_length=64)
    assert read_checkpoint(bad_copy).max_seq_length == 64


# --------------------------------------------------------------------------- tokenizer and prompts

BOS, EOS, PAD = 2, 1, 0


def st_ids(reference, texts: list[str], max_length: int) -> list[list[int]]:
    """sentence-transformers' own tokenization of ``texts``, unpadded: the behaviour to match."""
    reference.model.max_seq_length = max_length
    features = reference.model.tokenize(texts)
    return [row[mask.bool()].tolist() for row, mask in zip(features["input_ids"], features["attention_mask"])]


def rows(batch) -> list[list[int]]:
    return [ids[mask.astype(bool)].tolist() for ids, mask in zip(batch.input_ids, batch.attention_mask)]


def test_long_text_truncated_with_warning(tiny_model, tiny_reference, caplog):
    tok = tiny_model.tokenizer
    assert tok.max_length == 2048
    long_text = "the quick brown fox jumps over the lazy dog " * 400
    texts = ["short", long_text]
    with caplog.at_level("WARNING", logger="embg.model.tokenizer"):
        batch = tok.encode(texts)
    warnings = [r for r in caplog.records if r.name == "embg.model.tokenizer" and "truncated" in r.getMessage()]
    assert len(warnings) == 1 and "2048" in warnings[0].getMessage()
    assert batch.truncated == [1]
    assert batch.input_ids.shape == (2, 2048)
    assert batch.attention_mask[1].all()
    assert rows(batch) == st_ids(tiny_reference, texts, 2048)  # BOS first, EOS kept last, as ST does
    assert batch.input_ids[1, 0] == BOS and batch.input_ids[1, -1] == EOS
    # (Running the graph at 2048 costs ~5 s here; parity at long lengths is test_graph_parity's job.)


def test_pad_to_shorter_than_text_truncates(tiny_model, caplog):
    with caplog.at_level("WARNING", logger="embg.model.tokenizer"):
        batch = tiny_model.tokenizer.encode(["one two three four five six seven eight nine ten eleven", "hi"],
                                            pad_to=8)
    assert batch.input_ids.shape == (2, 8) and batch.truncated == [0]
    assert any("truncated" in r.getMessage() for r in caplog.records)
    assert batch.input_ids[0, 0] == BOS and batch.input_ids[0, -1] == EOS
    assert batch.attention_mask[1].tolist()[:3] == [1, 1, 1] and batch.attention_mask[1, -1] == 0


def test_short_texts_do_not_warn(tiny_model, caplog):
    with caplog.at_level("WARNING", logger="embg.model.tokenizer"):
        batch = tiny_model.tokenizer.encode(["a few words"], pad_to=32)
    assert batch.truncated == [] and not caplog.records
    assert batch.input_ids.shape == (1, 32)


def test_empty_and_whitespace_texts(tiny_model, tiny_reference):
    texts = ["", " ", "   \n\t  "]
    batch = tiny_model.tokenizer.encode(texts)
    encoded = rows(batch)
    assert encoded[0] == [BOS, EOS]
    for row in encoded[1:]:
        assert row[0] == BOS and row[-1] == EOS and len(row) >= 3  # Gemma keeps whitespace as tokens
    assert encoded == st_ids(tiny_reference, texts, 2048)
    with torch.no_grad():
        out = tiny_model.graph()(torch.as_tensor(batch.input_ids), torch.as_tensor(batch.attention_mask)).numpy()
    assert np.isfinite(out).all()
    # With a prompt, an empty text is the prompt alone.
    prompted = rows(tiny_model.tokenizer.encode([""], prompt="document"))[0]
    assert prompted == rows(tiny_model.tokenizer.encode(["title: none | text: "]))[0]


def test_padding_is_on_the_right(tiny_model):
    batch = tiny_model.tokenizer.encode(["a", "a considerably longer text with several more tokens in it"])
    mask = batch.attention_mask[0]
    length = int(mask.sum())
    assert mask[:length].all() and not mask[length:].any()  # ones first, then zeros
    assert (batch.input_ids[0, length:] == PAD).all()
    assert batch.input_ids[0, 0] == BOS and batch.input_ids[0, length - 1] == EOS
    assert batch.input_ids.dtype == np.int64 and batch.attention_mask.dtype == np.int64


def test_prompt_by_name(tiny_model):
    from embg.errors import EmbgError

    tok = tiny_model.tokenizer
    named = rows(tok.encode(["how long is the nile"], prompt="query"))[0]
    literal = rows(tok.encode(["task: search result | query: how long is the nile"]))[0]
    plain = rows(tok.encode(["how long is the nile"]))[0]
    assert named == literal and named != plain
    assert rows(tok.encode(["x"], prompt="STS"))[0] == rows(tok.encode(["task: sentence similarity | query: x"]))[0]
    with pytest.raises(EmbgError, match="unknown prompt name 'querry'"):
        tok.encode(["x"], prompt="querry")
