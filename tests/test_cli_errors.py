"""Bad command-line input: exit status 2, one clear error line, nothing written."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import pytest

from tests.test_loading import assert_refused, error_line, run_export


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "work" / "bundle"


def tiny_args(tiny_dir: Path, *extra: str) -> list[str]:
    return ["--model", str(tiny_dir), *extra]


@pytest.mark.parametrize("argv, needles", [
    (["--target", "coreml", "--bits", "8"], ["--target", "'coreml'", "tflite", "onnx"]),
    (["--target", "onnx", "--bits", "5"], ["--bits", "5", "32", "8", "4"]),
    (["--target", "onnx", "--bits", "12"], ["--bits", "12", "32", "16", "8", "4"]),
    (["--target", "onnx", "--bits", "8", "--recipe", "int8"], ["--bits", "--recipe", "not both"]),
    (["--target", "onnx", "--recipe", "int3"], ["unknown recipe", "'int3'", "int8"]),
    (["--target", "onnx", "--recipe", "/nonexistent/recipe.json"], ["recipe file", "not found"]),
    (["--target", "onnx", "--bits", "8", "--dim", "50"], ["--dim 50", "{dims}"]),
    (["--target", "onnx", "--bits", "8", "--dim", "768"], ["--dim 768", "{dims}"]),
])
def test_bad_arguments_refused(argv, needles, tiny_dir, out, capsys):
    from embg.model.spec import read_checkpoint

    dims = read_checkpoint(tiny_dir).matryoshka_dims
    assert 50 not in dims and 768 not in dims and len(dims) == 4
    needles = [n.replace("{dims}", str(list(dims))) for n in needles]
    assert_refused(tiny_args(tiny_dir, *argv), out, capsys, *needles)


def test_out_is_an_existing_file(tiny_dir, tmp_path, capsys):
    target = tmp_path / "bundle"
    target.write_text("not a directory")
    code, _, err = run_export(tiny_args(tiny_dir, "--target", "onnx", "--bits", "8", "--out", str(target)), capsys)
    assert code == 2
    line = error_line(err)
    assert str(target) in line and "is a file" in line
    assert target.read_text() == "not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_out_inside_read_only_directory(tiny_dir, tmp_path, capsys, monkeypatch):
    import embg.atomic

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            # Running as root: permission bits are not enforced, so let the OS answer "not
            # writable" for this directory only, as it would for an ordinary user.
            real_access = os.access

            def access(path, mode, *args, **kwargs):
                if Path(path) == locked and mode & os.W_OK:
                    return False
                return real_access(path, mode, *args, **kwargs)

            monkeypatch.setattr(embg.atomic.os, "access", access)
        out = locked / "nested" / "bundle"
        assert_refused(tiny_args(tiny_dir, "--target", "onnx", "--bits", "8"), out, capsys,
                       str(locked), "not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


# --------------------------------------------------------------------------- recipe files

def base_recipe() -> dict:
    return json.loads(resources.files("embg.quantize.presets").joinpath("int8.json").read_text())


def _unknown_field(r: dict) -> None:
    r["colour"] = "red"


def _unknown_rule_field(r: dict) -> None:
    r["rules"]["feed_forward"]["blocksize"] = 32


def _unknown_group(r: dict) -> None:
    r["rules"]["lm_head"] = {"bits": 8}


def _missing_group(r: dict) -> None:
    del r["rules"]["head"]


def _float_with_block(r: dict) -> None:
    r["rules"]["attention"] = {"bits": 32, "block_size": 32}


def _channel_with_block(r: dict) -> None:
    r["rules"]["feed_forward"] = {"bits": 4, "granularity": "channel", "block_size": 32}


def _fp16_activations(r: dict) -> None:
    r["activations"] = "fp16"


def _bits_16_rule(r: dict) -> None:
    r["rules"]["embedding"] = {"bits": 16}


RECIPE_CASES = {
    "unknown-field": (_unknown_field, ["unknown field", "colour"]),
    "unknown-rule-field": (_unknown_rule_field, ["unknown field", "blocksize", "feed_forward"]),
    "unknown-group": (_unknown_group, ["unknown group", "lm_head"]),
    "missing-group": (_missing_group, ["no rule", "head"]),
    "float-with-block-size": (_float_with_block, ["attention", "bits 32", "block_size", "conflict"]),
    "channel-with-block-size": (_channel_with_block, ["feed_forward", "block_size", "conflicts", "channel"]),
    "fp16-activations": (_fp16_activations, ["activations", "fp16"]),
    "bits-16-rule": (_bits_16_rule, ["embedding.bits 16", "refused", "fp16_safe", "overflow"]),
}


def test_base_recipe_is_valid(tmp_path):
    """Control: the unmutated recipe file is accepted, so each refusal below comes from its mutation."""
    from embg.quantize.recipe import load_recipe

    path = tmp_path / "ok.json"
    path.write_text(json.dumps(base_recipe()))
    assert load_recipe(str(path)).rule("feed_forward").bits == 8


@pytest.mark.parametrize("case", list(RECIPE_CASES))
def test_bad_recipe_file_refused(case, tiny_dir, tmp_path, out, capsys):
    mutate, needles = RECIPE_CASES[case]
    recipe = base_recipe()
    mutate(recipe)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    line = assert_refused(tiny_args(tiny_dir, "--target", "onnx", "--recipe", str(path)), out, capsys, *needles)
    assert str(path) in line  # the user learns which file is wrong


def test_recipe_file_not_json(tiny_dir, tmp_path, out, capsys):
    path = tmp_path / "recipe.json"
    path.write_text("{name: int8")
    assert_refused(tiny_args(tiny_dir, "--target", "onnx", "--recipe", str(path)), out, capsys,
                   str(path), "not valid JSON")
