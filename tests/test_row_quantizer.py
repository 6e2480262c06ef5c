"""The ONNX per-row activation quantizer on one MatMul, against a numpy model of what it must compute.

Each row (token) gets its own symmetric int8 scale; with the recipe's float_channels the channels with
the largest calibrated peaks leave the int8 rows and are multiplied in float.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from embg.quantize.onnx_backend import RowQuantizer, int8_channel_weight

K, N = 64, 48


def _matmul_model(weight: np.ndarray) -> onnx.ModelProto:
    """y = x @ w with x [rows, K]: one float MatMul for the quantizer to replace."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", N])],
        [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])


def _quantized_session(weight: np.ndarray, residual_pass: bool = False) -> ort.InferenceSession:
    model = _matmul_model(weight)
    rows = RowQuantizer(model)
    rows.matmul(model.graph.node[0], int8_channel_weight("w", weight), residual_pass=residual_pass)
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _expected(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    scale_w = np.abs(weight).max(axis=0) / 127.0
    w8 = np.clip(np.round(weight / scale_w), -127, 127)
    s = np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-30) / 127.0
    return (np.round(x / s) @ w8) * s * scale_w


def test_rows_are_quantized_one_scale_each():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(K, N)).astype(np.float32)
    x = rng.normal(size=(6, K)).astype(np.float32)
    x[1] *= 1000  # an outlier row must not coarsen its neighbours
    x[2] = 0  # an all-zero row stays zero
    got = _quantized_session(weight).run(None, {"x": x})[0]
    want = _expected(x, weight)
    # equal up to fp32 rounding, relative to each row's magnitude
    assert np.all(np.abs(got - want) <= 1e-4 * (np.abs(want).max(axis=1, keepdims=True) + 1e-12))
    assert np.all(got[2] == 0)


def test_a_row_gives_the_same_result_in_any_batch():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(K, N)).astype(np.float32)
    x = rng.normal(size=(5, K)).astype(np.float32)
    x[3] *= 500
    session = _quantized_session(weight)
    whole = session.run(None, {"x": x})[0]
    for i in range(len(x)):
        np.testing.assert_array_equal(session.run(None, {"x": x[i:i + 1]})[0][0], whole[i])


def _split_session(weight: np.ndarray, peaks: np.ndarray, kept: int) -> tuple[ort.InferenceSession, onnx.ModelProto]:
    model = _matmul_model(weight)
    rows = RowQuantizer(model, {"w": peaks}, kept)
    node = model.graph.node[0]
    channels = rows.channels_kept_float("x", "w")
    rest = weight.copy()
    rest[channels] = 0.0
    rows.matmul(node, int8_channel_weight("w", rest), weight[channels])
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]), model


def test_outlier_channels_kept_float_stop_setting_the_row_step():
    """A token whose channels 5 and 40 are 1000x the rest: with them float, the others keep their resolution."""
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(K, N)).astype(np.float32)
    x = rng.normal(size=(8, K)).astype(np.float32)
    x[:, [5, 40]] *= 1000
    peaks = np.abs(x).max(axis=0)
    split, model = _split_session(weight, peaks, 2)
    exact = x @ weight
    got_split = split.run(None, {"x": x})[0]
    got_plain = _quantized_session(weight).run(None, {"x": x})[0]
    err = lambda y: float(np.abs(y - exact).max())  # noqa: E731
    assert err(got_split) < 0.1 * err(got_plain)
    index = next(i for i in model.graph.initializer if i.name.endswith("float_channels/index"))
    assert numpy_helper.to_array(index).tolist() == [5, 40]
    # still one integer product, fed by per-row quantized rows (what verify_per_row checks)
    assert [n.op_type for n in model.graph.node].count("MatMulIntegerToFloat") == 1


def test_recipe_float_channels_field():
    from embg.errors import EmbgError
    from embg.quantize.recipe import load_recipe, parse_recipe

    data = load_recipe("int8").to_dict()
    assert parse_recipe({**data, "float_channels": 16}).float_channels_on("onnx") == 16
    for bad in (-1, 1.5, True, 10_000):
        try:
            parse_recipe({**data, "float_channels": bad})
        except EmbgError as exc:
            assert "float_channels" in str(exc)
        else:
            raise AssertionError(f"float_channels {bad!r} accepted")
    fp32 = load_recipe("fp32").to_dict()
    try:
        parse_recipe({**fp32, "float_channels": 4})
    except EmbgError as exc:
        assert "dynamic_int8_per_row" in str(exc)
    else:
        raise AssertionError("float_channels without per-row activations accepted")


def _rows_session(weight, stored, peaks: np.ndarray, row_dtype: str = "float32", float_rows=None):
    model = _matmul_model(weight)
    rows = RowQuantizer(model, {"w": peaks}, 3, row_dtype)
    rows.channels_kept_float("x", "w")
    rows.matmul(model.graph.node[0], stored, float_rows)
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]), model


def test_float_channel_rows_of_a_grid_weight_are_its_own_rows_gathered_at_load():
    """A grid's float rows come from its stored integers x scales (no bytes): the same outputs, bit for bit,
    as the rows stored in float32; a min-max weight's rows stored float16 differ by float16's rounding."""
    from dataclasses import replace

    from embg.quantize.onnx_backend import block_weight_as_int8, block_symmetric, dequantize_blocks

    rng = np.random.default_rng(3)
    weight = rng.normal(size=(K, N)).astype(np.float32)
    x = rng.normal(size=(7, K)).astype(np.float32)
    x[:, [2, 9, 30]] *= 300
    peaks = np.abs(x).max(axis=0)
    q, scales = block_symmetric(weight, 4, 32)
    kept = np.array([2, 9, 30])
    gathered, model = _rows_session(weight, block_weight_as_int8("w", q, scales, 4, 32), peaks)
    stored, stored_model = _rows_session(weight, replace(block_weight_as_int8("w", q, scales, 4, 32), matrix=None),
                                         peaks, float_rows=dequantize_blocks(q, scales, 32)[kept])
    np.testing.assert_array_equal(gathered.run(None, {"x": x})[0], stored.run(None, {"x": x})[0])
    assert not any(i.name == "w_float_rows" for i in model.graph.initializer)
    assert any(i.name == "w_float_rows" for i in stored_model.graph.initializer)

    rest = weight.copy()
    rest[kept] = 0.0
    half, half_model = _rows_session(weight, int8_channel_weight("w", rest), peaks, "float16", weight[kept])
    full, _ = _rows_session(weight, int8_channel_weight("w", rest), peaks, "float32", weight[kept])
    rows16 = next(i for i in half_model.graph.initializer if i.name == "w_float_rows_fp16")
    assert rows16.data_type == TensorProto.FLOAT16 and list(rows16.dims) == [3, N]
    got, want = half.run(None, {"x": x})[0], full.run(None, {"x": x})[0]
    assert not np.array_equal(got, want)
    # the float product's part of each output: |x_kept| @ |rows| bounds it; float16 moves it by <= 2^-11 of that
    bound = np.abs(x[:, kept]) @ np.abs(weight[kept]) * 2.0 ** -11 + 1e-4 * np.abs(want)
    assert np.all(np.abs(got - want) <= bound)


def test_recipe_float_channel_rows_field():
    from embg.errors import EmbgError
    from embg.quantize.recipe import load_recipe, parse_recipe

    int4 = load_recipe("int4")
    assert int4.float_channel_rows == "float16" and load_recipe("int8").float_channel_rows == "float32"
    assert parse_recipe(int4.to_dict()).float_channel_rows == "float16"  # written back as it was read
    data = load_recipe("int8").to_dict()
    for bad, says in (({**data, "float_channel_rows": "int8"}, "must be one of"),
                      ({**data, "float_channels": 0, "float_channel_rows": "float16"}, "no float channels on onnx")):
        try:
            parse_recipe(bad)
        except EmbgError as exc:
            assert says in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")


def test_residual_pass_leaves_only_the_weight_rounding():
    """Two int8 passes (the rows, then their rounding residual) carry the activation to ~15 bits: the
    product is then the int8 weight's exactly, up to 1/254 of one pass's activation error."""
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(K, N)).astype(np.float32)
    x = rng.normal(size=(7, K)).astype(np.float32)
    x[:, 9] *= 300  # an outlier channel coarsens every row's step
    x[4] = 0
    scale_w = np.abs(weight).max(axis=0) / 127.0
    weight_only = x.astype(np.float64) @ (np.clip(np.round(weight / scale_w), -127, 127) * scale_w)
    one = _quantized_session(weight).run(None, {"x": x})[0]
    two = _quantized_session(weight, residual_pass=True).run(None, {"x": x})[0]
    err = lambda y: float(np.abs(y - weight_only).max())  # noqa: E731
    assert err(two) < err(one) / 50
    assert np.all(two[4] == 0)
    for i in range(len(x)):  # still one scale per row: a row alone gives the same result
        np.testing.assert_array_equal(_quantized_session(weight, True).run(None, {"x": x[i:i + 1]})[0][0], two[i])


def test_recipe_residual_pass_field():
    from embg.errors import EmbgError
    from embg.quantize.recipe import load_recipe, parse_recipe

    data = load_recipe("int8").to_dict()
    recipe = parse_recipe({**data, "residual_pass": ["down_proj", "down_proj"]})
    assert recipe.residual_pass_on("onnx") == recipe.residual_pass_on("tflite") == ("down_proj",)
    assert parse_recipe(recipe.to_dict()).residual_pass == recipe.residual_pass  # survives the manifest round trip
    assert recipe.to_dict()["residual_pass"] == ["down_proj"]  # the same on every target: written as one list
    assert "residual_pass down_proj on onnx; down_proj on tflite" in recipe.summary()
    # per target: a target not named gets no second pass
    only_onnx = parse_recipe({**data, "residual_pass": {"onnx": ["down_proj"], "tflite": []}})
    assert only_onnx.residual_pass_on("onnx") == ("down_proj",) and only_onnx.residual_pass_on("tflite") == ()
    assert only_onnx.to_dict()["residual_pass"] == {"onnx": ["down_proj"], "tflite": []}
    assert parse_recipe(only_onnx.to_dict()).residual_pass == only_onnx.residual_pass
    for bad, says in (("down_proj", "list"), (["embedding"], "linear parts"), (["mlp"], "linear parts"),
                      (["down_proj"], "dynamic_int8_per_row"), ({"coreml": ["down_proj"]}, "unknown target"),
                      ({"tflite": "down_proj"}, "list")):
        source = load_recipe("fp32").to_dict() if says == "dynamic_int8_per_row" else data
        try:
            parse_recipe({**source, "residual_pass": bad})
        except EmbgError as exc:
            assert says in str(exc), str(exc)
        else:
            raise AssertionError(f"residual_pass {bad!r} accepted")


def test_products_sharing_an_activation_share_its_residual():
    """q, k and v read one activation: its rows and its residual are quantized once, for all three."""
    rng = np.random.default_rng(4)
    weights = [rng.normal(size=(K, N)).astype(np.float32) for _ in range(2)]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"], name=f"mm{i}") for i in range(2)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", K])],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["rows", N]) for i in range(2)],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    rows = RowQuantizer(model)
    for i, node in enumerate(list(model.graph.node)):
        rows.matmul(node, int8_channel_weight(f"w{i}", weights[i]), residual_pass=True)
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == 2 and ops.count("MatMulIntegerToFloat") == 4
    x = rng.normal(size=(3, K)).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    alone = _quantized_session(weights[1], residual_pass=True).run(None, {"x": x})[0]
    np.testing.assert_allclose(got[1], alone, rtol=1e-6, atol=1e-6)


def test_the_printed_summary_keeps_the_descriptions_first_sentence_only():
    """The CLI prints a recipe's first sentence (a new user's first run printed 1000 characters about ONNX for
    a LiteRT file); the whole description stays in the recipe the manifest records."""
    from embg.quantize.recipe import load_recipe

    recipe = load_recipe("int4")
    first = recipe.summary().splitlines()[0]
    assert first.startswith("recipe int4: calibrated int4") and first.endswith("at run time.")
    assert "LiteRT does neither" not in first and "LiteRT does neither" in recipe.to_dict()["description"]
