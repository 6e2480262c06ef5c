"""Per-layer rules in recipes (``layer_rules``): parsed strictly, resolved per weight, and carried into
both targets (each weight stored by its own layer's rule, calibrated grids exactly)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from embg.bundle import Artifact
from embg.checkpoint.load import load_model
from embg.errors import EmbgError
from embg.export.pipeline import ExportRequest, export_bundle
from embg.quantize import tflite_flatbuffer as fb
from embg.quantize.calibrate import calibrate_grids
from embg.quantize.rotation import rotate_for
from embg.quantize.calibration_texts import batches_for, calibration_split
from embg.quantize.int4_blocks import dequantize
from embg.quantize.int4_choice import minmax_counterpart
from embg.quantize.onnx_backend import read_back_weights
from embg.quantize.recipe import load_recipe, parse_recipe
from tests.conftest import _fixture

G4 = {"bits": 4, "granularity": "block", "block_size": 32, "algorithm": "gptq"}
I8 = {"bits": 8, "granularity": "channel"}
# layer 0: v and down calibrated int4 (the preset keeps them int8); layers 1-2: the feed-forward int8
LAYER_RULES = {"0": {"v_proj": G4, "down_proj": G4}, "1-2": {"feed_forward": I8}}


def with_layer_rules(layer_rules, base: str = "int4"):
    data = load_recipe(base).to_dict()
    data["activations"] = "dynamic_int8_per_row"
    return parse_recipe({**data, "name": "layered", "layer_rules": layer_rules})


def test_rule_for_resolves_each_weight_by_its_layer():
    recipe = with_layer_rules(LAYER_RULES)
    assert recipe.rule_for("layers.0.self_attn.v_proj.weight").bits == 4
    assert recipe.rule_for("layers.0.self_attn.v_proj.weight").algorithm == "gptq"
    assert recipe.rule_for("layers.3.self_attn.v_proj.weight") == recipe.rule("v_proj")  # not listed: recipe-wide
    assert recipe.rule_for("layers.2.mlp.gate_proj.weight").bits == 8  # a group key covers its parts
    assert recipe.rule_for("layers.3.mlp.gate_proj.weight").bits == 4
    assert recipe.rule_for("layers.1.self_attn.q_proj.weight") == recipe.rule("q_proj")  # part not in the entry
    assert recipe.rule_for("embed_tokens.weight") == recipe.rule("embedding")
    assert recipe.rule_key_for("layers.2.mlp.up_proj.weight") == "layers 1-2 feed_forward"
    assert recipe.rule_key_for("layers.4.mlp.up_proj.weight") == "up_proj"
    # ONNX initializer and LiteRT-planned names keep the layer index
    assert recipe.rule_for("layers.0.self_attn.v_proj.weight_q4").bits == 4
    assert recipe.layers_named() == {0, 1, 2}
    assert recipe.is_calibrated and "layers 1-2: feed_forward int8" in recipe.summary()
    again = parse_recipe(recipe.to_dict())
    assert again.layer_rules == recipe.layer_rules and again.weight_rules() == recipe.weight_rules()


def test_ranges_and_lists():
    recipe = with_layer_rules({"0,3-5,9": {"down_proj": G4}})
    assert recipe.layers_named() == {0, 3, 4, 5, 9}


@pytest.mark.parametrize("layer_rules, message", [
    ({"0": {"down_proj": G4}, "0-1": {"feed_forward": I8}}, "layer 0's down_proj already has a rule"),
    ({"3-1": {"down_proj": G4}}, "ranges such as"),
    ({"x": {"down_proj": G4}}, "ranges such as"),
    ({"1,1": {"down_proj": G4}}, "listed twice"),
    ({"0": {"embedding": G4}}, "not decoder parts or groups"),
    ({"0": {"head": I8}}, "not decoder parts or groups"),
    ({"0": {}}, "must map decoder parts or groups"),
    ({"0": {"down_proj": {"bits": 16}}}, "not per layer"),
    ({"0": {"down_proj": {"bits": 8, "granularity": "channel", "rounding": 1}}}, "unknown field"),
    ({"0": {"down_proj": {"bits": 32}}}, "residual_pass 'down_proj' needs integer weights"),
    ([{"layers": "0"}], "layer_rules must map decoder layers"),
])
def test_layer_rule_mistakes_refused(layer_rules, message):
    with pytest.raises(EmbgError, match=message):
        with_layer_rules(layer_rules)


def test_minmax_counterpart_keeps_layer_rules():
    plain = minmax_counterpart(with_layer_rules(LAYER_RULES))
    assert plain.rule_for("layers.0.mlp.down_proj.weight").algorithm == "min-max"
    assert plain.rule_for("layers.0.mlp.down_proj.weight").bits == 4
    assert plain.rule_for("layers.1.mlp.up_proj.weight").bits == 8


def test_calibration_cache_key_includes_layer_rules():
    assert "layer_rules" in with_layer_rules(LAYER_RULES).weight_rules()
    assert "layer_rules" not in load_recipe("int4").weight_rules()  # unchanged keys for recipes without


@pytest.fixture(scope="module")
def outliers_dir(fixture_root):
    return _fixture(fixture_root, "tiny-outliers")


@pytest.fixture(scope="module")
def layered_grids(outliers_dir):
    model, recipe = load_model(str(outliers_dir)), with_layer_rules(LAYER_RULES)
    graph = model.graph()
    rotate_for(graph, recipe)  # as the exporter does before calibrating (the int4 preset's rotations)
    grids, _ = calibrate_grids(graph, recipe, batches_for(model.tokenizer, calibration_split()[0]))
    return grids


def test_calibration_follows_layer_rules(layered_grids):
    assert {"layers.0.self_attn.v_proj.weight", "layers.0.mlp.down_proj.weight"} <= set(layered_grids)
    assert not {"layers.1.self_attn.v_proj.weight", "layers.1.mlp.down_proj.weight", "layers.1.mlp.gate_proj.weight",
                "layers.2.mlp.up_proj.weight"} & set(layered_grids)
    assert "layers.3.mlp.gate_proj.weight" in layered_grids


def _export(outliers_dir, target, out):
    return Artifact.load(export_bundle(ExportRequest(
        model=str(outliers_dir), target=target, recipe=with_layer_rules(LAYER_RULES), out=out, parity=False,
        seq_lens=(64,) if target == "tflite" else ())))


def test_onnx_stores_each_weight_by_its_layer_rule(outliers_dir, layered_grids, tmp_path):
    artifact = _export(outliers_dir, "onnx", tmp_path / "onnx")
    model = onnx.load(str(artifact.model_path))
    names = {init.name for init in model.graph.initializer}
    assert "layers.0.mlp.down_proj.weight_q4" in names and "layers.3.mlp.down_proj.weight_int8" in names
    assert "layers.1.mlp.gate_proj.weight_int8" in names and "layers.3.mlp.gate_proj.weight_q4" in names
    weights = read_back_weights(model)
    for name, (q, scales) in layered_grids.items():
        assert np.array_equal(weights[name], dequantize(torch.from_numpy(q), torch.from_numpy(scales)).numpy()), name
    assert artifact.manifest["recipe"]["layer_rules"]["1-2"]["feed_forward"]["bits"] == 8


def test_tflite_stores_each_weight_by_its_layer_rule(outliers_dir, layered_grids, tmp_path):
    artifact = _export(outliers_dir, "tflite", tmp_path / "tflite")
    model = fb.read_model(artifact.model_path)
    subgraph = model.subgraphs[0]
    int4 = [fb.dequantize(model, subgraph, subgraph.tensors[use.tensor_index])
            for use in fb.weight_uses(model) if use.subgraph == 0 and use.type == "INT4"]
    assert len(int4) == len(layered_grids)  # every int4 tensor is one of the layer-resolved grids, no other
    expected = [dequantize(torch.from_numpy(q), torch.from_numpy(s)).numpy() for q, s in layered_grids.values()]
    for weight in int4:
        assert any(w.shape == weight.shape and np.array_equal(w, weight) for w in expected)


def test_layers_the_model_lacks_are_refused(outliers_dir, tmp_path):
    recipe = with_layer_rules({"40-47": {"down_proj": G4}})
    with pytest.raises(EmbgError, match=r"layer\(s\) \[40, 41.*decoder layers"):
        export_bundle(ExportRequest(model=str(outliers_dir), target="onnx", recipe=recipe, out=tmp_path / "x",
                                    parity=False))
    assert not (tmp_path / "x").exists()
