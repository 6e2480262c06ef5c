"""``"rotation": {"down": "auto"}`` (embg/quantize/down_guard.py): down_proj's input is rotated in a layer
only where that lowers the rounding error after the post-feed-forward norm, measured on the calibration texts.
On the outlier fixture (a channel with norm gain ~9e4 fed by normally silent units) it rotates no layer;
where a layer's input has one huge channel on every token, it rotates that layer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from embg.checkpoint.load import load_model
from embg.quantize.calibration_texts import batches_for, calibration_split
from embg.quantize.down_guard import choose_down_layers
from embg.quantize.recipe import load_recipe
from embg.quantize.rotation import rotate_for
from embg.quantize.simulate import int8_channel
from tests.conftest import _fixture


def _batches(model, count: int = 6):
    return batches_for(model.tokenizer, calibration_split()[0])[:count]


def test_guard_leaves_the_outlier_fixture_unrotated(fixture_root):
    model = load_model(str(_fixture(fixture_root, "tiny-outliers")))
    choice = choose_down_layers(model.graph(), _batches(model), 128, int8_channel)
    assert choice.layers == ()
    assert min(choice.error_ratio) > 10  # rotated: the noise reaches the high-gain channel


def test_guard_keeps_only_the_layer_with_a_silent_high_gain_circuit(tiny_model):
    """The fixture's mechanism planted in layer 1 alone: units 0-7 made near-silent (up_proj rows x1e-6)
    feed residual channel 3 alone (down_proj weights x1e6 there, 0 elsewhere in that row), whose norm
    gain is 1e4. Rotating spreads the other units' rounding noise into those units: layer 1 stays
    unrotated; the random-weight layers, whose inputs have no such circuit, are all rotated."""
    graph = tiny_model.graph()
    plain = choose_down_layers(graph, _batches(tiny_model), 128, int8_channel)
    assert plain.layers == tuple(range(len(graph.layers)))  # random weights: rotating always helps
    layer = graph.layers[1]
    silent = slice(0, 8)
    with torch.no_grad():
        layer.mlp.up_proj.weight[silent] *= 1e-6
        row = layer.mlp.down_proj.weight[3]
        kept = row[silent] * 1e6
        row.zero_()
        row[silent] = kept
        layer.post_feedforward_layernorm.weight[3] = 1e4 - layer.post_feedforward_layernorm.unit_offset
    planted = choose_down_layers(graph, _batches(tiny_model), 128, int8_channel)
    assert planted.layers == tuple(i for i in range(len(graph.layers)) if i != 1)
    assert planted.error_ratio[1] > 10


def test_auto_rotation_records_its_choice_and_needs_texts(tiny_model):
    recipe = load_recipe("int8-rotated")
    assert recipe.rotation["down"] == "auto"
    with pytest.raises(ValueError, match="calibration texts"):
        rotate_for(tiny_model.graph(), recipe)
    graph = tiny_model.graph()
    report = rotate_for(graph, recipe, lambda: _batches(tiny_model, 2))
    chosen = report["down_layers"]
    assert len(report["down_guard"]["error_ratio"]) == len(graph.layers)
    for index, layer in enumerate(graph.layers):
        assert isinstance(layer.mlp.rotate_hidden, torch.nn.Identity) is (index not in chosen)
    # an explicit true still rotates every layer, with no measurement
    plain = rotate_for(tiny_model.graph(), dataclasses.replace(recipe, rotation={**recipe.rotation, "down": True}))
    assert plain["down"] is True and "down_layers" not in plain


def test_guard_choice_is_measured_once_per_graph_and_texts(tiny_model, tmp_path, monkeypatch):
    """Exporting one checkpoint to both targets measures the guard once: the second rotate_for finds the
    choice in the calibration cache (measuring again would fail here) and reports the same; other texts
    measure again; with the cache off nothing is stored."""
    import embg.quantize.down_guard as down_guard

    monkeypatch.setenv("EMBG_CALIBRATION_CACHE", str(tmp_path))
    recipe = load_recipe("int8-rotated")
    first = rotate_for(tiny_model.graph(), recipe, lambda: _batches(tiny_model, 2))
    assert len(list(tmp_path.glob("*.json"))) == 1
    measure = down_guard.choose_down_layers

    def refuse(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(down_guard, "choose_down_layers", refuse)
    messages = []
    second = rotate_for(tiny_model.graph(), recipe, lambda: _batches(tiny_model, 2), messages.append)
    assert second == first and any("calibration cache" in m for m in messages)
    with pytest.raises(AssertionError, match="measured again"):  # other texts: another key
        rotate_for(tiny_model.graph(), recipe, lambda: _batches(tiny_model, 3))
    monkeypatch.setattr(down_guard, "choose_down_layers", measure)
    monkeypatch.setenv("EMBG_CALIBRATION_CACHE", "off")
    rotate_for(tiny_model.graph(), recipe, lambda: _batches(tiny_model, 3))
    assert len(list(tmp_path.glob("*.json"))) == 1
