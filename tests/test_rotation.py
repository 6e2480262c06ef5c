"""The rotations of embg/quantize/rotation.py: the fp32 function unchanged, deterministic, never quantized,
refused where they would break a QAT grid, and better int4 blocks on weights with outlier columns."""

from __future__ import annotations

import pytest
import torch

from embg.errors import EmbgError
from embg.quantize.rotation import TableUnrotation, block_size_for, hadamard, rotate_graph
from embg.quantize.groups import part_of
from embg.quantize.int4_blocks import dequantize, quantize_rows
from embg.quantize.recipe import load_recipe, parse_recipe


def _inputs(vocab: int):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(2, vocab, (3, 24), generator=generator)
    mask = torch.ones(3, 24, dtype=torch.long)
    mask[1, 15:] = 0
    mask[2, 5:] = 0
    return ids, mask


@pytest.mark.parametrize("table, down", [(True, False), (False, False), (True, True)])
def test_rotation_keeps_the_float_function(tiny_model, table, down):
    graph = tiny_model.graph()
    ids, mask = _inputs(graph.embed_tokens.weight.shape[0])
    with torch.no_grad():
        before = graph(ids, mask)
        report = rotate_graph(graph, 128, table, down)
        after = graph(ids, mask)
    assert report["table"] is table and report["down"] is down and report["block"] >= 1
    assert isinstance(graph.layers[0].mlp.rotate_hidden, torch.nn.Identity) is not down
    assert torch.nn.functional.cosine_similarity(before, after).min() > 0.99999
    assert not torch.equal(graph.layers[0].self_attn.q_proj.weight, tiny_model.graph().layers[0].self_attn.q_proj.weight)
    with pytest.raises(ValueError, match="already rotated"):
        rotate_graph(graph)


def test_down_rotation_of_chosen_layers_only(tiny_model):
    """A layer list rotates down_proj's input in those layers alone, with the very weights down=True gives
    them (the signs are drawn for every layer either way), and the float function unchanged."""
    every, some = tiny_model.graph(), tiny_model.graph()
    ids, mask = _inputs(some.embed_tokens.weight.shape[0])
    with torch.no_grad():
        before = some(ids, mask)
        rotate_graph(every, down=True)
        report = rotate_graph(some, down=[1])
        after = some(ids, mask)
    assert report["down"] is True and report["down_layers"] == [1]
    assert isinstance(some.layers[0].mlp.rotate_hidden, torch.nn.Identity)
    assert not isinstance(some.layers[1].mlp.rotate_hidden, torch.nn.Identity)
    theirs = every.state_dict()
    for name, value in some.state_dict().items():
        parts = name.split(".")
        unrotated_down = parts[0] == "layers" and parts[1] != "1" and parts[3:4] in (["up_proj"], ["down_proj"])
        assert torch.equal(value, theirs[name]) is not unrotated_down, name
    assert torch.nn.functional.cosine_similarity(before, after).min() > 0.99999
    with pytest.raises(ValueError, match="names layers"):
        rotate_graph(tiny_model.graph(), down=[len(some.layers)])


def test_rotation_is_deterministic(tiny_model):
    first, second = tiny_model.graph(), tiny_model.graph()
    rotate_graph(first)
    rotate_graph(second)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_rotations_are_orthogonal_and_the_table_one_mixes_every_channel():
    h = hadamard(128)
    assert torch.allclose(h @ h.T, torch.eye(128, dtype=torch.float64))
    unrotation = TableUnrotation(768, 128, torch.Generator().manual_seed(0))
    rotation = unrotation.matrix()
    assert torch.allclose(rotation @ rotation.T, torch.eye(768, dtype=torch.float64), atol=1e-12)
    # every output channel depends on every 128-block of input channels, and the other way round
    assert (rotation.abs().reshape(6, 128, 768).sum(1) > 0).all() and (rotation.abs().reshape(768, 6, 128).sum(-1) > 0).all()
    y = torch.randn(5, 768)
    assert torch.allclose(unrotation(y).double(), y.double() @ rotation, atol=1e-5)  # the module is the matrix
    assert block_size_for((768, 256), 128) == 128 and block_size_for((48, 16), 128) == 16
    with pytest.raises(ValueError):
        hadamard(96)


def test_rotation_buffers_belong_to_no_recipe_group(tiny_model):
    graph = tiny_model.graph()
    rotate_graph(graph)
    names = [name for name in graph.state_dict() if "rotation" in name]
    assert "unrotate_table.table_rotation" in names and any(name.endswith(".input_rotation") for name in names)
    # one Hadamard block for every layer: one constant in the exported file
    rotations = {graph.get_submodule(f"layers.{i}.{m}.rotate_input") for i in range(len(graph.layers))
                 for m in ("self_attn", "mlp")}
    assert len(rotations) == 1
    assert all(part_of(name) is None for name in names)


def test_rotation_spreads_outlier_columns_over_int4_blocks():
    """The reason for it: a weight whose few input columns are large quantizes far worse per block of 32
    than the same weight rotated (measured as the product error on random inputs)."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(256, 768, generator=generator)
    weight[:, ::97] *= 25  # outlier input columns, as real checkpoints have
    x = torch.randn(512, 768, generator=generator)
    rotation = torch.block_diag(*[hadamard(128).float()] * 6)

    def error(w, r):
        q, scales = quantize_rows(w @ r, 32)
        return ((x @ (dequantize(q, scales) @ r.T).T - x @ w.T).norm() / (x @ w.T).norm()).item()

    plain, rotated = error(weight, torch.eye(768)), error(weight, rotation)
    assert rotated < 0.7 * plain, (plain, rotated)


def test_recipe_rotation_field():
    base = load_recipe("int4").to_dict()
    recipe = parse_recipe({**base, "rotation": {"block": 64, "table": False}})
    assert recipe.rotation == {"block": 64, "table": False, "down": False}
    assert parse_recipe({**base, "rotation": {"down": True}}).rotation == {"block": 128, "table": True, "down": True}
    assert parse_recipe(recipe.to_dict()).rotation == recipe.rotation
    assert "rotation" in recipe.summary()
    assert parse_recipe({**base, "rotation": {"down": "auto"}}).rotation["down"] == "auto"
    assert "where it measures better" in parse_recipe({**base, "rotation": {"down": "auto"}}).summary()
    for bad in ({"block": 96}, {"block": True}, {"table": "yes"}, {"down": 1}, {"down": "yes"}, {"blocks": 128}, 128):
        with pytest.raises(EmbgError, match="rotation"):
            parse_recipe({**base, "rotation": bad})
    qat = load_recipe("int4-qat").to_dict()
    with pytest.raises(EmbgError, match="qat-grid"):
        parse_recipe({**qat, "rotation": {"block": 128}})
