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


# --------------------------------------------------------------------------- --out never deletes a user's files

def test_out_non_empty_directory_that_is_not_a_bundle_is_refused(tiny_dir, tmp_path, capsys):
    work = tmp_path / "my-project"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    (work / "src").mkdir()
    code, stdout, err = run_export(tiny_args(tiny_dir, "--target", "onnx", "--bits", "8", "--out", str(work)), capsys)
    assert code == 2 and stdout == ""
    line = error_line(err)
    assert str(work) in line and "not an embg bundle" in line
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt", "src"] and (work / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-project"]  # no partial directory either


def test_out_equal_to_or_above_the_checkpoint_is_refused(tiny_dir, tiny_bundle, tmp_path, capsys):
    import shutil

    # an earlier bundle directory that holds the checkpoint the user now exports from
    outer = shutil.copytree(tiny_bundle("onnx", 32), tmp_path / "bundle")
    checkpoint = shutil.copytree(tiny_dir, outer / "checkpoint")
    before = sorted(p.name for p in outer.iterdir())
    # the checkpoint is not the bundle's: refused before the model is even read (check_not_over_model backs it up)
    for out, needle in ((outer, "checkpoint/, which that bundle did not write"), (checkpoint, "not an embg bundle")):
        code, _, err = run_export(["--model", str(checkpoint), "--target", "onnx", "--bits", "8", "--out", str(out)],
                                  capsys)
        assert code == 2
        assert needle in error_line(err)
    assert sorted(p.name for p in outer.iterdir()) == before and (checkpoint / "model.safetensors").is_file()


def test_out_over_the_checkpoint_is_refused_by_its_own_check_too(tmp_path):
    from embg.errors import EmbgError
    from embg.export.pipeline import check_not_over_model

    model = tmp_path / "bundle" / "checkpoint"
    for out in (model, model.parent, tmp_path):
        with pytest.raises(EmbgError, match="checkpoint directory or one above it"):
            check_not_over_model(out, model)
    check_not_over_model(tmp_path / "elsewhere", model)


def test_atomic_directory_replaces_only_an_earlier_output_and_says_so(tmp_path):
    from embg.atomic import atomic_directory
    from embg.errors import EmbgError
    from embg.bundle import earlier_bundle_files

    dest = tmp_path / "bundle"
    said = []
    with atomic_directory(dest, earlier_bundle_files, "bundle", said.append) as tmp:
        (tmp / "manifest.json").write_text(json.dumps({"schema": 1, "target": "onnx", "model_file": "m.onnx",
                                                       "files": ["m.onnx"]}))
        (tmp / "m.onnx").write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert (dest.stat().st_mode & 0o777) == 0o777 & ~umask  # not mkdtemp's 0700
    assert said == []
    with atomic_directory(dest, earlier_bundle_files, "bundle", said.append) as tmp:
        (tmp / "manifest.json").write_text((dest / "manifest.json").read_text())
        (tmp / "new").write_text("x")
    assert (dest / "new").is_file() and not (dest / "m.onnx").exists()
    assert said == [f"replacing the earlier bundle in {dest}"]
    (dest / "manifest.json").unlink()  # no longer recognisable as a bundle: the user's directory now
    with pytest.raises(EmbgError, match="not an embg bundle"):
        with atomic_directory(dest, earlier_bundle_files, "bundle", said.append):
            raise AssertionError("must not be reached")
    assert (dest / "new").is_file()


def test_an_earlier_bundle_with_the_users_files_beside_it_is_not_replaced(tmp_path):
    """A bundle is replaced only when it holds nothing but what it wrote; checked again just before the
    rename, so a file added while an export runs is kept too."""
    from embg.atomic import atomic_directory, foreign_entries
    from embg.errors import EmbgError
    from embg.bundle import earlier_bundle_files

    dest = tmp_path / "bundle"
    with atomic_directory(dest, earlier_bundle_files, "bundle") as tmp:
        (tmp / "manifest.json").write_text(json.dumps({"schema": 1, "target": "onnx", "model_file": "m.onnx",
                                                       "files": ["m.onnx"], "tokenizer": {"files": {"t.json": "x"}},
                                                       "file_sha256": {"m.onnx": "x", "t.json": "x"}}))
        for name in ("m.onnx", "t.json"):
            (tmp / name).write_text("x")
    assert foreign_entries(dest, earlier_bundle_files(dest)) == []
    with pytest.raises(EmbgError, match="which that bundle did not write"):
        with atomic_directory(dest, earlier_bundle_files, "bundle") as tmp:
            (dest / "NOTES.md").write_text("mine")  # added while the export runs
    assert (dest / "NOTES.md").read_text() == "mine" and (dest / "m.onnx").is_file()
    (dest / "results").mkdir()
    (dest / "results" / "r.json").write_text("{}")
    assert foreign_entries(dest, earlier_bundle_files(dest)) == ["NOTES.md", "results/"]


def test_export_into_an_earlier_bundle_holding_a_users_file_is_refused(tiny_dir, tiny_bundle, tmp_path, capsys):
    import shutil

    bundle = shutil.copytree(tiny_bundle("onnx", 32), tmp_path / "bundle")
    (bundle / "results").mkdir()
    (bundle / "results" / "validation.json").write_text("mine")
    before = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*"))
    code, stdout, err = run_export(tiny_args(tiny_dir, "--target", "onnx", "--bits", "8", "--out", str(bundle)), capsys)
    assert code == 2 and stdout == ""
    line = error_line(err)
    assert "earlier embg bundle" in line and "results/" in line and "move them out" in line
    assert sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no partial directory either


def test_stale_partial_directories_of_dead_processes_are_removed(tmp_path):
    from embg.atomic import atomic_directory

    dest = tmp_path / "out"
    dead = tmp_path / f".out.partial-{2**22 + 4321}-abcd"  # no such pid
    dead.mkdir()
    (dead / "half.onnx").write_bytes(b"x")
    alive = tmp_path / f".out.partial-{os.getpid()}-live"  # a run in progress right now: kept
    alive.mkdir()
    other = tmp_path / f".other.partial-{2**22 + 4321}-abcd"  # another output's: not ours to judge
    other.mkdir()
    said = []
    with atomic_directory(dest, None, "bundle", said.append):
        pass
    assert not dead.exists() and alive.exists() and other.exists()
    assert said == [f"removed {dead.name}, left by an interrupted run"]


def test_kill_9_leaves_a_partial_directory_the_next_run_removes(tmp_path):
    """A real SIGKILL during embg-fixture (it writes through the same atomic directory as embg-export)."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "fixture"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-m", "embg.cli.fixture", "--kind", "tiny", "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    partial = []
    while time.time() < deadline and not partial and child.poll() is None:
        partial = list(tmp_path.glob(".fixture.partial-*"))
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert partial and partial[0].exists(), "the fixture finished before it could be killed"
    assert str(child.pid) in partial[0].name  # the pid is in the name: a later run can tell it is dead

    from embg.cli.fixture import main as fixture_main
    from tests.conftest import run_cli

    code, _, err = run_cli(fixture_main, ["--kind", "tiny", "--out", out])
    assert code == 0, err
    assert not partial[0].exists() and (out / "embg_fixture.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixture"]
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask  # an ordinary directory, not mkdtemp's 0700


def test_fixture_out_refuses_a_users_directory(tmp_path):
    from embg.cli.fixture import main as fixture_main
    from tests.conftest import run_cli

    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("mine")
    code, _, err = run_cli(fixture_main, ["--kind", "tiny", "--out", work])
    assert code == 2 and "not an embg fixture checkpoint" in err
    assert [p.name for p in work.iterdir()] == ["thesis.tex"]


def test_fixture_out_replaces_an_earlier_fixture_only_without_the_users_files(tmp_path):
    from embg.cli.fixture import main as fixture_main
    from embg.fixtures import earlier_fixture_files
    from tests.conftest import run_cli

    out = tmp_path / "fixture"
    assert run_cli(fixture_main, ["--kind", "tiny", "--out", out])[0] == 0
    written = earlier_fixture_files(out)
    assert {"embg_fixture.json", "config.json", "modules.json", "tokenizer.model"} <= written
    assert written == {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    (out / "my_notes.txt").write_text("mine")
    code, _, err = run_cli(fixture_main, ["--kind", "tiny", "--out", out])
    assert code == 2 and "my_notes.txt" in err and "did not write" in err
    assert (out / "my_notes.txt").read_text() == "mine"
    (out / "my_notes.txt").unlink()
    assert run_cli(fixture_main, ["--kind", "tiny", "--out", out])[0] == 0  # only its own files: replaced


# --------------------------------------------------------------------------- checked before any work: exit 2

def test_out_under_proc_is_refused_with_one_line(tiny_dir, capsys):
    out = Path("/proc/embg-bundle")
    code, stdout, err = run_export(tiny_args(tiny_dir, "--target", "onnx", "--bits", "8", "--out", str(out)), capsys)
    assert code == 2 and stdout == ""
    assert "not writable" in error_line(err)


def test_recipe_file_not_utf8(tiny_dir, tmp_path, out, capsys):
    path = tmp_path / "recipe.json"
    path.write_bytes(b'{"name": "int8\xff\xfe"}')
    assert_refused(tiny_args(tiny_dir, "--target", "onnx", "--recipe", str(path)), out, capsys,
                   str(path), "not UTF-8")


@pytest.mark.parametrize("argv, needles", [
    (["--target", "onnx", "--bits", "8", "--dim", "0"], ["--dim 0", "positive"]),
    (["--target", "onnx", "--bits", "8", "--seq-lens", "64"], ["--seq-lens", "tflite target only"]),
])
def test_options_a_target_or_model_cannot_honour_are_refused(argv, needles, tiny_dir, out, capsys):
    assert_refused(tiny_args(tiny_dir, *argv), out, capsys, *needles)


def _validate(args: list) -> tuple[int, str, str]:
    from embg.cli.validate import main
    from tests.conftest import run_cli

    return run_cli(main, args)


@pytest.mark.parametrize("case", ["report-is-a-file", "report-not-writable", "baseline-bundles-not-a-list",
                                  "baseline-without-metrics"])
def test_validate_bad_report_and_baseline_refused_before_any_work(case, tiny_bundle, tiny_dir, tmp_path,
                                                                  monkeypatch):
    import embg.validate.rows as rows

    monkeypatch.setattr(rows, "measure_bundle", lambda *a, **k: pytest.fail("work started before the check"))
    report = tmp_path / "report"
    args = [tiny_bundle("onnx", 8), "--model", tiny_dir, "--report", report]
    if case == "report-is-a-file":
        report.write_text("x")
        needle = "is a file"
    elif case == "report-not-writable":
        args[-1] = Path("/proc/embg-report")
        needle = "not writable"
    elif case == "baseline-bundles-not-a-list":
        baseline = tmp_path / "b.json"
        baseline.write_text(json.dumps({"schema": 1, "bundles": 5}))
        args += ["--baseline", baseline]
        needle = "'bundles' must be a list"
    else:
        baseline = tmp_path / "b.json"
        baseline.write_text(json.dumps({"schema": 1, "bundles": [{"name": "onnx8", "metrics": {"drift": {}}}]}))
        args += ["--baseline", baseline]
        needle = "lacks the metric(s) drift.cosine_mean, drift.cosine_min, size.model_file_mb"
    code, out, err = _validate(args)
    assert code == 2, out + err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("embg-validate: error:") and needle in lines[-1] and "Traceback" not in err
