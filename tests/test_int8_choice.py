"""``--bits 8`` prefers int8-rotated on both targets and falls back to int8 where rotation measures worse
(embg/export/bits_choice.py, embg/quantize/int8_choice.py).

The choice rests on a torch simulation of each preset with the runtime's own int8 activation rounding, so
the simulation is checked against the exported ONNX files on the same held-out texts. On the tiny-outliers
fixture (down_proj feeding a residual channel amplified ~9e4, which the down_proj guard leaves unrotated)
int8's float channels hold and rotation does not; on the plain tiny fixture the two simulate alike.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from embg.bundle import Artifact
from embg.checkpoint.load import load_model
from embg.cli.export import main as export_main
from embg.export.base import TARGETS
from embg.export.pipeline import ExportRequest, export_bundle, load_targets
from embg.quantize.calibration_texts import batches_for, calibration_split
from embg.quantize.int8_choice import TOLERANCE, Simulated, rotated_shortfall, simulate
from embg.quantize.recipe import load_recipe
from embg.quantize.rotation import rotate_for
from embg.quantize.simulate import outputs_with
from embg.runtimes import load_all, load_runtime
from tests.conftest import _fixture


@pytest.fixture(scope="module")
def outliers_dir(fixture_root):
    return _fixture(fixture_root, "tiny-outliers")


def export_bits8(model_dir, out, capsys, target: str = "onnx") -> tuple[dict, str]:
    status = export_main(["--model", str(model_dir), "--target", target, "--bits", "8", "--out", str(out),
                          "--skip-parity"])
    err = capsys.readouterr().err
    assert status == 0, err
    return dict(Artifact.load(out).manifest), err


def test_both_targets_prefer_int8_rotated_for_bits8():
    load_targets()
    assert {name: TARGETS.get(name).bits_presets.get(8) for name in ("onnx", "tflite")} == {
        "onnx": "int8-rotated", "tflite": "int8-rotated"}


def test_the_rotated_preset_is_passed_over_only_beyond_the_tolerance():
    plain = Simulated(0.9990, 0.9995)
    within = Simulated(plain.cosine_min - TOLERANCE["cosine_min"] * 0.9, plain.cosine_mean - TOLERANCE["cosine_mean"] * 0.9)
    assert rotated_shortfall(within, plain, "int8", 21) is None
    assert rotated_shortfall(Simulated(0.9999, 0.9999), plain, "int8", 21) is None
    low_min = Simulated(plain.cosine_min - TOLERANCE["cosine_min"] * 1.1, plain.cosine_mean)
    low_mean = Simulated(plain.cosine_min, plain.cosine_mean - TOLERANCE["cosine_mean"] * 1.1)
    for rotated in (low_min, low_mean):
        reason = rotated_shortfall(rotated, plain, "int8", 21)
        assert reason and "under int8's 0.99900 / 0.99950" in reason and "21 held-out texts" in reason


def _held_out_cosines(bundle, batches, reference: np.ndarray) -> np.ndarray:
    """Cosine of the written file's embeddings (in its own runtime) against ``reference`` rows."""
    artifact = Artifact.load(bundle)
    load_all()
    runtime = load_runtime(artifact.manifest["runtime"], artifact, threads=1)
    outs = np.concatenate([runtime.embed(ids.numpy(), mask.numpy()) for ids, mask in batches])
    outs = outs / np.linalg.norm(outs, axis=1, keepdims=True)
    return (outs * reference).sum(axis=1)


def _held_out(model_dir):
    """(model, calibration batches, held-out batches, float graph, unit reference rows on the held-out texts)."""
    model = load_model(model_dir)
    calibration, held_out = calibration_split()
    cal, held = batches_for(model.tokenizer, calibration), batches_for(model.tokenizer, held_out)
    graph = model.graph()
    reference = outputs_with(graph, held).double().numpy()
    return model, cal, held, graph, reference / np.linalg.norm(reference, axis=1, keepdims=True)


@pytest.mark.heavy
def test_the_simulation_matches_the_onnx_files(outliers_dir, tmp_path):
    """Both presets' simulated cosine equals what their written files give on the same held-out texts (a
    simulation that quantized int8's float-channel weight columns was 0.004 off here)."""
    _model, cal, held, graph, reference = _held_out(outliers_dir)
    simulated = {"int8": simulate(graph, load_recipe("int8"), "onnx", cal, held)}
    rotate_for(graph, load_recipe("int8-rotated"), lambda: cal)
    simulated["int8-rotated"] = simulate(graph, load_recipe("int8-rotated"), "onnx", cal, held)
    for name, figures in simulated.items():
        bundle = export_bundle(ExportRequest(model=str(outliers_dir), target="onnx", recipe=load_recipe(name),
                                             out=tmp_path / name, parity=False))
        cosine = _held_out_cosines(bundle, held, reference)
        assert abs(float(cosine.min()) - figures.cosine_min) < 2e-4, (name, cosine.min(), figures)
        assert abs(float(cosine.mean()) - figures.cosine_mean) < 1e-4, (name, cosine.mean(), figures)
    # the gap the choice acts on, several tolerances wide (the files agree with these figures, above)
    assert simulated["int8-rotated"].cosine_min < simulated["int8"].cosine_min - 4 * TOLERANCE["cosine_min"]


@pytest.mark.heavy
def test_bits8_falls_back_to_int8_where_rotation_does_not_tame_the_outliers(outliers_dir, tmp_path, capsys):
    manifest, err = export_bits8(outliers_dir, tmp_path / "out", capsys)
    assert "trying recipe int8-rotated first" in err
    assert "(rotation does not tame this model's outlier channels): using recipe int8" in err
    choice = manifest["bits_choice"]
    assert choice["used"] == "int8" and list(choice["passed_over"]) == ["int8-rotated"]
    assert choice["simulated"]["int8-rotated"]["cosine_min"] < choice["simulated"]["int8"]["cosine_min"]
    assert manifest["recipe"]["name"] == "int8" and manifest["rotation"] is None
    # int8 from the checkpoint's own graph, not the rotated attempt's: the same file as --recipe int8
    artifact = Artifact.load(tmp_path / "out")
    initializers = {init.name for init in onnx.load(str(artifact.model_path)).graph.initializer}
    assert not [n for n in initializers if "rotation" in n]
    plain = export_bundle(ExportRequest(model=str(outliers_dir), target="onnx", recipe=load_recipe("int8"),
                                        out=tmp_path / "plain", parity=False))
    assert Artifact.load(plain).model_path.read_bytes() == artifact.model_path.read_bytes()
    assert "used recipe int8:" in err and "used recipe int8-rotated" not in err


def test_bits8_keeps_int8_rotated_where_it_simulates_as_well(tiny_dir, tmp_path, capsys):
    manifest, err = export_bits8(tiny_dir, tmp_path / "out", capsys)
    choice = manifest["bits_choice"]
    assert choice["used"] == "int8-rotated" and choice["passed_over"] == {}
    assert set(choice["simulated"]) == {"int8", "int8-rotated"}  # both figures recorded for the user
    assert manifest["recipe"]["name"] == "int8-rotated" and manifest["rotation"] is not None
    assert "simulated cosine min / mean on 21 held-out texts: int8-rotated" in err
    assert "used recipe int8-rotated:" in err


@pytest.mark.heavy
def test_bits8_on_litert_judges_with_xnnpack_rounding(outliers_dir, tmp_path, capsys):
    """LiteRT's simulation rounds rows as XNNPACK does (asymmetric), and its figure for int8 is what the written
    .tflite gives on the same held-out texts; the outlier fixture falls back there too."""
    manifest, err = export_bits8(outliers_dir, tmp_path / "out", capsys, target="tflite")
    assert "with tflite's int8 activation rounding" in err
    assert manifest["bits_choice"]["used"] == "int8" and manifest["recipe"]["name"] == "int8"
    figures = manifest["bits_choice"]["simulated"]["int8"]
    _model, _cal, held, _graph, reference = _held_out(outliers_dir)
    cosine = _held_out_cosines(tmp_path / "out", held, reference)
    assert abs(float(cosine.min()) - figures["cosine_min"]) < 2e-4, (cosine.min(), figures)
    assert abs(float(cosine.mean()) - figures["cosine_mean"]) < 1e-4, (cosine.mean(), figures)


def test_every_preferred_bits_preset_has_a_hold_check():
    """A target preferring a preset for a --bits value with no check would fail with a KeyError mid-export."""
    from embg.export.bits_choice import HOLD_CHECKS

    load_targets()
    for name in TARGETS.names():
        assert set(TARGETS.get(name).bits_presets) <= set(HOLD_CHECKS), name
