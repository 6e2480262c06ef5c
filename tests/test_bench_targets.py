"""bench/targets.py and bench/exports.py: issue 18's int8 targets and the bench-derived recipes (no timing)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.exports import DERIVED_RECIPES, derived_recipe_file  # noqa: E402
from bench.targets import LONG_INT8_SPEEDUP, evaluate_targets  # noqa: E402
from embg.quantize.recipe import load_recipe  # noqa: E402


def _results(speeds: dict[str, float]) -> dict:
    return {"mode": "full", "variants": {n: {"target": n.split("-")[0], "speedup_vs_eager": {"1": {"s2048": v}}}
                                         for n, v in speeds.items()}}


def _long_target(results: dict) -> dict:
    return next(t for t in evaluate_targets(results) if "2048 tokens" in t["target"])


def test_each_target_counts_its_fastest_int8_variant():
    below, above = LONG_INT8_SPEEDUP * 0.9, LONG_INT8_SPEEDUP * 1.1
    # ONNX reaches it only with int8 attention products, LiteRT with its one int8 variant: met.
    assert _long_target(_results({"onnx-int8": below, "onnx-int8-products": above, "tflite-int8": above}))["status"] == "met"
    # One target below: missed, whatever the other reaches.
    assert _long_target(_results({"onnx-int8": above, "tflite-int8": below}))["status"] == "missed"
    # The graph before banding does not count for the shipped target.
    assert _long_target(_results({"onnx-int8": below, "onnx-int8-dense": above, "tflite-int8": above}))["status"] == "missed"
    # A target without any measured int8 variant: not measured.
    assert _long_target(_results({"onnx-int8": above}))["status"] == "not measured"


def test_derived_recipes_change_only_what_they_say(tmp_path):
    products = load_recipe(str(derived_recipe_file("int8-products", tmp_path)))
    int8 = load_recipe("int8")
    assert products.attention_products == "int8" and int8.attention_products == "fp32"
    assert products.rules == int8.rules and products.smoothing == int8.smoothing
    naive = load_recipe(str(derived_recipe_file("int4-naive", tmp_path)))
    assert {rule.algorithm for rule in naive.rules.values()} == {"min-max"}
    assert load_recipe("int4-qat").rules.keys() == naive.rules.keys()
    assert set(DERIVED_RECIPES) == {"int4-naive", "int8-products"}
