"""``--bits`` and a target's own preset (ExportTarget.bits_presets): ONNX ``--bits 4`` tries
int4-rotated-int6, and falls back to int4 where its blocks do not fit the model or where its calibration
collapses in the held-out simulation; an explicit recipe whose blocks do not fit is refused before any work.

The real preset's 6-bit blocks of 128 do not fit the fixtures (192 input columns), so the fallback on a
collapse is exercised with the same preset at block 64 standing in as ONNX's preference: with GPTQ on
down_proj it collapses on the tiny-outliers fixture (docs/measurements.md), with min-max down_proj it holds.
"""

from __future__ import annotations

import json
import re

import onnx
import pytest

from embg.bundle import Artifact
from embg.cli.export import main as export_main
from embg.errors import ExportError
from embg.export.onnx_target import OnnxTarget
from embg.export.pipeline import ExportRequest, export_bundle
from embg.quantize.int4_choice import HOLD_FLOOR
from embg.quantize.recipe import load_recipe
from embg.validate.thresholds import THRESHOLDS
from tests.conftest import _fixture
from tests.test_int6 import SIX_BIT, _recipe


@pytest.fixture(scope="module")
def outliers_dir(fixture_root):
    return _fixture(fixture_root, "tiny-outliers")


def six_bit_preset(tmp_path, down_proj: str):
    """int4-rotated-int6 at block 64 (the fixture's 192 columns take it), as a recipe file."""
    data = _recipe(gate_proj=dict(SIX_BIT), up_proj=dict(SIX_BIT), down_proj={**SIX_BIT, "algorithm": down_proj},
                   v_proj=dict(SIX_BIT), head={**SIX_BIT, "activations": "fp32"})
    data["name"] = f"int6-block64-{down_proj}"
    path = tmp_path / f"{data['name']}.json"
    path.write_text(json.dumps(data))
    return data["name"], path


def export_bits4(model_dir, out, capsys) -> tuple[dict, str]:
    status = export_main(["--model", str(model_dir), "--target", "onnx", "--bits", "4", "--out", str(out),
                          "--skip-parity"])
    err = capsys.readouterr().err
    assert status == 0, err
    return dict(Artifact.load(out).manifest), err


def test_onnx_bits4_prefers_int4_rotated_int6():
    assert OnnxTarget.bits_presets[4] == "int4-rotated-int6"  # --bits 8: tests/test_int8_choice.py
    assert load_recipe(OnnxTarget.bits_presets[4]).name == "int4-rotated-int6"


def test_the_hold_floor_is_the_validators_int4_gate():
    assert HOLD_FLOOR == {metric: THRESHOLDS["int4"][metric][1] for metric in HOLD_FLOOR}


@pytest.mark.heavy
def test_a_preferred_preset_that_collapses_falls_back_on_a_fresh_graph(outliers_dir, tmp_path, monkeypatch, capsys):
    name, path = six_bit_preset(tmp_path, "gptq")
    monkeypatch.setattr(OnnxTarget, "bits_presets", {**OnnxTarget.bits_presets, 4: str(path)})
    manifest, err = export_bits4(outliers_dir, tmp_path / "out", capsys)
    assert f"trying recipe {name} first" in err
    assert "under the 0.95 / 0.97 floor: using recipe int4" in err
    choice = manifest["bits_choice"]
    assert choice["used"] == "int4" and list(choice["passed_over"]) == [name]
    # the collapse shows in simulation: the calibrated grids far under the floor, min-max under it too
    assert choice["passed_over"][name].startswith(f"{name}-minmax simulates cosine min")
    assert "under the 0.95 / 0.97 floor" in choice["passed_over"][name]
    calibrated_min = float(re.search(r"calibrated cosine min (-?[\d.]+)", err).group(1))
    assert calibrated_min < 0.5  # GPTQ's grids, before the min-max counterpart was tried (measured 0.1005)
    assert manifest["recipe"]["name"] == "int4" and manifest["calibration"]["used"] is True
    # int4 exported from the checkpoint's own graph, not the one the 6-bit attempt rotated in place: no
    # Hadamard factors in the file, and the same weights as a plain --recipe int4 export
    artifact = Artifact.load(tmp_path / "out")
    initializers = {init.name for init in onnx.load(str(artifact.model_path)).graph.initializer}
    assert not [n for n in initializers if "rotation" in n or "table_signs" in n]
    plain = export_bundle(ExportRequest(model=str(outliers_dir), target="onnx", recipe=load_recipe("int4"),
                                        out=tmp_path / "plain", parity=False))
    assert Artifact.load(plain).model_path.read_bytes() == artifact.model_path.read_bytes()


@pytest.mark.heavy
def test_a_preferred_preset_that_holds_is_used(outliers_dir, tmp_path, monkeypatch, capsys):
    name, path = six_bit_preset(tmp_path, "min-max")
    monkeypatch.setattr(OnnxTarget, "bits_presets", {**OnnxTarget.bits_presets, 4: str(path)})
    manifest, err = export_bits4(outliers_dir, tmp_path / "out", capsys)
    assert "using recipe int4\n" not in err and f"using recipe {name}" in err
    assert manifest["bits_choice"] == {"used": name, "passed_over": {}}
    assert manifest["recipe"]["name"] == name and manifest["rotation"] is not None
    initializers = {init.name for init in onnx.load(str(Artifact.load(tmp_path / "out").model_path)).graph.initializer}
    assert [n for n in initializers if "rotation" in n]  # what the fallback test checks is absent
    figures = manifest["calibration"]["choice"]["calibrated"]
    assert all(figures[metric] >= floor for metric, floor in HOLD_FLOOR.items())


def test_bits4_passes_over_a_preset_whose_blocks_do_not_fit(tiny_dir, tmp_path, capsys):
    manifest, err = export_bits4(tiny_dir, tmp_path / "out", capsys)
    assert "preset int4-rotated-int6 does not fit this model" in err and "192 input columns, block 128" in err
    assert manifest["bits_choice"]["used"] == "int4" and manifest["recipe"]["name"] == "int4"
    assert "192 input columns, block 128" in manifest["bits_choice"]["passed_over"]["int4-rotated-int6"]
    # the summary printed is the recipe used, never the preset passed over
    assert "used recipe int4:" in err and "recipe int4-rotated-int6:" not in err


def test_an_explicit_recipe_whose_blocks_do_not_fit_is_refused_before_any_work(tiny_dir, tmp_path, monkeypatch):
    import embg.quantize.calibrate as calibrate

    monkeypatch.setattr(calibrate, "calibrate_grids", lambda *a, **k: pytest.fail("calibrated before refusing"))
    request = ExportRequest(model=str(tiny_dir), target="onnx", recipe=load_recipe("int4-rotated-int6"),
                            out=tmp_path / "out")
    with pytest.raises(ExportError, match=r"do not fit .*v_proj.*192 input columns, block 128.*\(and \d+ more\)"):
        export_bundle(request)
    assert not (tmp_path / "out").exists()
