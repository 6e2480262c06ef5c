"""Calibrated int4 without a model: the storable scale form, GPTQ against rounding, recipe rules and parts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embg.errors import EmbgError
from embg.quantize.gptq import HessianAccumulator, gptq_quantize
from embg.quantize.groups import GROUP_PARTS, group_of, part_of
from embg.quantize.int4_blocks import (SCALE_MIN, blocks_of, dequantize, is_storable, mse_scales, quantize_rows,
                                       range_scales, storable_scales)
from embg.quantize.int4_choice import minmax_counterpart
from embg.quantize.recipe import load_recipe, parse_recipe


def _correlated_inputs(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Inputs like a real layer's: correlated channels and a few large outlier channels."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(cols, cols, generator=generator) / cols**0.5
    x = torch.randn(rows, cols, generator=generator) @ mixing
    x[:, :4] *= 20.0
    return x


def test_storable_scales_survive_bf16_and_fp16():
    raw = torch.tensor([1e-9, 3e-5, 0.0123456, 0.5, 3.14159, 1e6])
    scales = storable_scales(raw)
    assert is_storable(scales) and not is_storable(raw)
    assert float(scales.min()) >= SCALE_MIN
    assert torch.equal(scales.to(torch.bfloat16).to(torch.float32), scales)  # XNNPACK's rounding changes nothing
    assert torch.equal(scales.to(torch.float16).to(torch.float32), scales)  # LiteRT's fp16 storage changes nothing
    assert torch.isfinite(scales.to(torch.float16)).all()


@pytest.mark.parametrize("method", ["range", "mse"])
def test_block_quantization_lands_on_the_grid(method):
    weight = torch.randn(64, 128) * torch.rand(64, 1)
    weight[3, :32] = 0.0  # an all-zero block still gets a positive scale
    q, scales = quantize_rows(weight, 32, method)
    assert q.dtype == torch.int8 and int(q.min()) >= -8 and int(q.max()) <= 7
    assert scales.shape == (64, 4) and is_storable(scales)
    # range scales clip nothing: the largest magnitude in each block is reproduced within half a step
    if method == "range":
        error = (dequantize(q, scales) - weight).abs().reshape(64, 4, 32).amax(-1)
        assert bool((error <= scales / 2 + 1e-7).all())


def test_range_scales_use_minus_eight():
    block = torch.tensor([[[-8.0] + [1.0] * 31]])
    assert float(range_scales(block)) == 1.0  # |min| / 8, finer than max|w| / 7 = 8/7


def test_mse_scales_never_worse_than_range():
    blocks = blocks_of(torch.randn(256, 256) ** 3, 32)  # heavy tails: clipping pays
    def error(scales):
        return ((torch.clamp(torch.round(blocks / scales[..., None]), -8, 7) * scales[..., None] - blocks) ** 2).sum()
    assert error(mse_scales(blocks)) < error(range_scales(blocks))


def test_gptq_beats_rounding_on_the_layer_output():
    torch.manual_seed(0)
    x = _correlated_inputs(2048, 256)
    weight = torch.randn(96, 256) / 16
    hessian = HessianAccumulator(256)
    hessian.add(x)
    q, scales = gptq_quantize(weight, hessian.hessian, 32)
    assert int(q.min()) >= -8 and int(q.max()) <= 7 and is_storable(scales)
    q_rtn, s_rtn = quantize_rows(weight, 32, "mse")
    out_error = lambda w: float(((x @ w.T - x @ weight.T) ** 2).mean())  # noqa: E731
    gptq_error, rtn_error = out_error(dequantize(q, scales)), out_error(dequantize(q_rtn, s_rtn))
    assert gptq_error < 0.8 * rtn_error, (gptq_error, rtn_error)


def test_gptq_on_a_wider_grid_keeps_its_range_and_cuts_the_error():
    """bits=6 (bench probes): integers in -32..31, storable scales, and a smaller output error than int4."""
    torch.manual_seed(0)
    x = _correlated_inputs(1024, 256)
    weight = torch.randn(64, 256) / 16
    hessian = HessianAccumulator(256)
    hessian.add(x)
    out_error = lambda q, s: float(((x @ dequantize(q, s).T - x @ weight.T) ** 2).mean())  # noqa: E731
    q6, s6 = gptq_quantize(weight, hessian.hessian, 128, bits=6)
    assert int(q6.min()) >= -32 and int(q6.max()) <= 31 and int(q6.abs().max()) > 7 and is_storable(s6)
    assert out_error(q6, s6) < 0.2 * out_error(*gptq_quantize(weight, hessian.hessian, 128))


def test_gptq_is_deterministic():
    x = _correlated_inputs(512, 128, seed=1)
    hessian = HessianAccumulator(128)
    hessian.add(x)
    weight = torch.randn(32, 128)
    first, second = gptq_quantize(weight, hessian.hessian, 32), gptq_quantize(weight, hessian.hessian, 32)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_hessian_leaves_padding_out():
    x = torch.randn(2, 5, 8)
    keep = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    accumulator = HessianAccumulator(8)
    accumulator.add(x, keep)
    real = torch.cat([x[0, :3], x[1, :2]])
    assert accumulator.rows == 5
    assert torch.allclose(accumulator.hessian, (real.T @ real).double(), atol=1e-5)


def test_parts_and_groups():
    assert part_of("layers.3.self_attn.v_proj.weight") == "v_proj"
    assert group_of("layers.3.self_attn.v_proj.weight") == "attention"
    assert part_of("model_layers_3_mlp_down_proj") == "down_proj"  # LiteRT-style names
    assert group_of("head.1.weight") == "head" and part_of("layers.0.input_layernorm.weight") is None
    assert {p for parts in GROUP_PARTS.values() for p in parts} >= {"q_proj", "k_proj", "v_proj", "down_proj"}


def _rules(**override):
    rules = {"embedding": {"bits": 4, "granularity": "block", "block_size": 32, "algorithm": "mse-clip"},
             "attention": {"bits": 4, "granularity": "block", "block_size": 32, "algorithm": "gptq"},
             "projections": {"bits": 4, "granularity": "block", "block_size": 32, "algorithm": "gptq"},
             "feed_forward": {"bits": 4, "granularity": "block", "block_size": 32, "algorithm": "gptq"},
             "head": {"bits": 8, "granularity": "channel"}}
    rules.update(override)
    return {k: v for k, v in rules.items() if v is not None}


def test_recipe_split_into_parts():
    int8 = {"bits": 8, "granularity": "channel"}
    gptq = {"bits": 4, "granularity": "block", "block_size": 32, "algorithm": "gptq"}
    recipe = parse_recipe({"name": "split", "rules": _rules(attention=None, q_proj=gptq, k_proj=gptq, v_proj=int8)})
    assert recipe.rule("v_proj").bits == 8 and recipe.rule("q_proj").algorithm == "gptq"
    assert recipe.rule_key("v_proj") == "v_proj" and recipe.rule_key("down_proj") == "feed_forward"
    assert recipe.is_calibrated and parse_recipe(recipe.to_dict()) == recipe  # round-trips as data
    assert "v_proj" in recipe.summary()


@pytest.mark.parametrize("rules, message", [
    (_rules(q_proj={"bits": 8, "granularity": "channel"}), "both 'attention' and its part"),
    (_rules(attention=None, q_proj={"bits": 32}), "split into parts"),
    (_rules(embedding={"bits": 4, "granularity": "block", "block_size": 32, "algorithm": "gptq"}), "mse-clip"),
    (_rules(head={"bits": 8, "granularity": "channel", "algorithm": "gptq"}), "bits 4"),
    (_rules(head={"bits": 4, "granularity": "block", "block_size": 256, "algorithm": "gptq"}), "block_size"),
    (_rules(lm_head={"bits": 32}), "unknown group"),
])
def test_recipe_part_errors(rules, message):
    with pytest.raises(EmbgError, match=message):
        parse_recipe({"name": "bad", "rules": rules})


def test_minmax_preset_is_the_calibrated_mix_without_calibration():
    calibrated, minmax = load_recipe("int4"), load_recipe("int4-minmax")
    assert calibrated.is_calibrated and not minmax.is_calibrated
    assert minmax_counterpart(calibrated).rules == minmax.rules  # same bits and blocks: the same file size
    # and the same run-time activations: float channels and residual passes carried over, not dropped
    counterpart = minmax_counterpart(calibrated)
    assert counterpart.float_channels == minmax.float_channels == {"onnx": 16}
    assert counterpart.residual_pass == minmax.residual_pass == {"onnx": ("down_proj",)}
    assert counterpart.rotation is None and minmax.rotation is None
    rotated = load_recipe("int4-rotated")  # the same mix on rotated weights
    assert rotated.rules == calibrated.rules and rotated.rotation == {"block": 128, "table": True, "down": "auto"}


def test_storable_grid_survives_numpy_float16():
    scales = storable_scales(torch.rand(100) * 0.1).numpy()
    assert np.array_equal(scales.astype(np.float16).astype(np.float32), scales)


def test_ffn8_preset_is_int4_rotated_with_int8_gate_and_up_only():
    """int4-rotated-ffn8 spends its extra bytes on gate/up alone (int8 per channel, as down_proj): every other
    rule, the rotation and the activations are int4-rotated's, so the two presets cannot drift apart."""
    rotated, ffn8 = load_recipe("int4-rotated").to_dict(), load_recipe("int4-rotated-ffn8").to_dict()
    for part in ("gate_proj", "up_proj"):
        assert rotated["rules"].pop(part)["bits"] == 4
        assert ffn8["rules"].pop(part) == rotated["rules"]["down_proj"]
    for data in (rotated, ffn8):
        data.pop("name"), data.pop("description")
    assert ffn8 == rotated


def test_gptq_for_a_widened_grid_spreads_the_widening_error_too():
    """``widened``: ONNX runs a 6-bit grid widened to int8 per row; GPTQ that rounds to those int8 values
    leaves a smaller output error on them than GPTQ that ignores the widening, with the same scales."""
    from embg.quantize.int4_blocks import int8_row_steps, widened_to_int8

    torch.manual_seed(0)
    x = _correlated_inputs(2048, 256)
    weight = torch.randn(64, 256) / 16 * torch.tensor([1.0, 0.2, 0.1, 0.05]).repeat_interleave(64)  # uneven blocks
    hessian = HessianAccumulator(256)
    hessian.add(x)

    def widened_error(q, scales):
        w = widened_to_int8(q.reshape(64, 4, 64), scales[..., None], int8_row_steps(scales, 6)[:, None, None])
        return float(((x @ w.reshape(64, 256).T - x @ weight.T) ** 2).mean())

    plain = gptq_quantize(weight, hessian.hessian, 64, bits=6)
    aware = gptq_quantize(weight, hessian.hessian, 64, bits=6, widened=True)
    assert int(aware[0].min()) >= -32 and int(aware[0].max()) <= 31 and is_storable(aware[1])
    # small blocks raised to the row's int8 step, the largest kept: the step is the same
    assert bool((aware[1] >= plain[1]).all()) and torch.equal(aware[1].amax(1), plain[1].amax(1))
    assert bool((aware[1] > plain[1]).any())
    assert widened_error(*aware) < 0.8 * widened_error(*plain), (widened_error(*aware), widened_error(*plain))
