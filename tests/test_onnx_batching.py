"""ONNX int8/int4 embeddings must not depend on their batch neighbours or their padding (issue 14).

onnxruntime's quantize_dynamic quantizes activations with ONE scale over the whole [batch, sequence,
hidden] tensor, so a text's embedding changed with what else was in the batch. The presets now
quantize activations per row (token). Measured on ``tiny-outliers`` (activations with the real
model's outlier structure), where per-tensor scales gave alone-vs-batched cosine 0.9986 (int8) and
0.9968 (int4).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

from embg.errors import ExportError
from embg.bundle import Artifact
from embg.export.pipeline import ExportRequest, export_bundle
from embg.quantize.onnx_backend import (PER_TENSOR_OPS, ROW_QUANT_TAG, WIDENED_MATMUL, OnnxQuantPlan, plan_quantization,
                                        verify_per_row, verify_quantized)
from embg.quantize.groups import part_of
from embg.quantize.recipe import PER_ROW, load_recipe, parse_recipe, recipe_for_bits
from embg.runtimes import load_all, load_runtime
from embg.textdata.builtin import parity_texts
from embg.parity.path import cosine_rows
from tests.conftest import _fixture

TEXTS = parity_texts()  # 23 texts, 10 to 286 tokens
RECIPES = ("int8", "int4", "int4-minmax")
PAD_TO = 512
BATCH = 8


@pytest.fixture(scope="module")
def outliers_dir(fixture_root):
    return _fixture(fixture_root, "tiny-outliers")


@pytest.fixture(scope="module")
def bundles(outliers_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    # --bits 8 (16 float channels per activation), --bits 4 (calibrated) and the min-max int4 mix; int4
    # blocks are stored int4 and widened to int8 per column at load
    return {name: export_bundle(ExportRequest(model=str(outliers_dir), target="onnx", recipe=load_recipe(name),
                                              out=root / f"onnx-{name}"))
            for name in RECIPES}


@pytest.fixture(scope="module")
def tokenizer(outliers_dir):
    from embg.checkpoint.load import load_model

    return load_model(str(outliers_dir)).tokenizer


def embed_alone_and_batched(bundle, tokenizer, prompt: str, pads: tuple) -> tuple[np.ndarray, dict]:
    """Every text alone, and inside batches of BATCH for each padding in ``pads`` (None = to the longest)."""
    load_all()
    runtime = load_runtime("onnxruntime", Artifact.load(bundle), threads=1)
    alone = np.concatenate([runtime.embed(*_ids(tokenizer.encode([text], prompt=prompt))) for text in TEXTS])
    batched = {pad_to: np.concatenate([runtime.embed(*_ids(tokenizer.encode(TEXTS[i:i + BATCH], prompt=prompt,
                                                                              pad_to=pad_to)))
                                       for i in range(0, len(TEXTS), BATCH)])
               for pad_to in pads}
    return alone, batched


def _ids(batch):
    return batch.input_ids, batch.attention_mask


@pytest.mark.parametrize("recipe", RECIPES)
def test_text_alone_equals_text_inside_padded_batch(bundles, tokenizer, recipe):
    worst = {}
    for prompt in ("query", "document"):
        alone, batched = embed_alone_and_batched(bundles[recipe], tokenizer, prompt, (None, PAD_TO))
        for pad_to, emb in batched.items():
            worst[prompt, pad_to or "longest"] = float(cosine_rows(alone, emb).min())
    print(f"{recipe} alone vs batch of {BATCH} (padded to longest / to {PAD_TO}): cosine min {worst}")
    assert min(worst.values()) >= 0.999, worst


def _optimized_ops(path, tmp_path) -> list[str]:
    """The op types onnxruntime actually runs, after its graph optimizations and fusions."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]


@pytest.mark.parametrize("recipe", RECIPES)
def test_no_per_tensor_activation_quantization(bundles, recipe, tmp_path):
    artifact = Artifact.load(bundles[recipe])
    rules = artifact.manifest["recipe"]["rules"]
    # every integer rule quantizes activations per row, except the head: float (int8) or weight-only (int4)
    assert all(rule["activations"] == PER_ROW for group, rule in rules.items()
               if rule["bits"] != 32 and rule.get("algorithm") != "qat-grid" and group != "head")
    assert rules["head"]["bits"] == 32 or rules["head"]["activations"] == "fp32"
    model = onnx.load(str(artifact.model_path))
    written = [node.op_type for node in model.graph.node]
    run = _optimized_ops(artifact.model_path, tmp_path)
    ops_planned = artifact.manifest["quantization"]["ops"]
    for ops in (written, run):  # what the file says, and what onnxruntime makes of it
        assert not set(PER_TENSOR_OPS) & set(ops) and "MatMulInteger" not in ops
        assert ops.count("MatMulIntegerToFloat") == ops_planned.get("MatMulIntegerToFloat", 0)
    assert "MatMul" in written  # activation x activation (attention) stays float
    verify_per_row(model)
    # Every decoder weight, calibrated int4 blocks too, runs on per-row int8 rows (MatMulIntegerToFloat); the
    # weight-only int8 head's two Dense layers are float MatMuls on blocks folded to float at load: the
    # file holds them as int8, onnxruntime's optimized graph as one float constant each (no MatMulNBits,
    # whose 8-bit float path dequantized the whole weight on every call).
    assert "MatMulNBits" not in written and "MatMulNBits" not in run
    widened = [n for n in model.graph.node if n.op_type == "MatMul" and n.name.endswith(WIDENED_MATMUL)]
    assert len(widened) == ops_planned.get(WIDENED_MATMUL, 0) == (2 if rules["head"]["bits"] == 8 else 0)
    assert {part_of(n.name.split("/")[0]) for n in widened} <= {"head"}
    inits = {init.name: init for init in model.graph.initializer}
    for node in widened:
        assert inits[f"{node.name.split('/')[0]}_q8"].data_type == onnx.TensorProto.INT8
    # float_channels: one split per activation the products read (q/k/v, o, gate/up and down per layer)
    products = [n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"]
    layers = {n.name.split(".")[1] for n in products}
    splits = [n for n in model.graph.node if n.name.endswith("float_channels/float")]
    kept = parse_recipe(artifact.manifest["recipe"]).float_channels_on("onnx")
    assert len(splits) == (4 * len(layers) if kept else 0)
    # residual_pass: a second integer product per layer for each named part, fed by its residual's rows
    second = [n for n in products if "/residual/" in n.input[0]]
    passes = parse_recipe(artifact.manifest["recipe"]).residual_pass_on("onnx")
    assert len(second) == len(layers) * len(passes)
    assert {part_of(n.name.split("/")[0]) for n in second} <= set(passes)
    if recipe == "int4-minmax":  # min-max int4 weights stay int4 in the file; onnxruntime widens them at load
        assert "Cast" in written and not any(n.op_type == "Cast" and ROW_QUANT_TAG in n.name
                                             for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
        int4 = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT4]
        assert len(int4) >= ops_planned["MatMulIntegerToFloat"] // 2


def _per_row_model(bundle) -> tuple[onnx.ModelProto, OnnxQuantPlan]:
    model = onnx.load(str(Artifact.load(bundle).model_path))
    plan = OnnxQuantPlan()
    plan.expected_ops["MatMulIntegerToFloat"] = sum(n.op_type == "MatMulIntegerToFloat" for n in model.graph.node)
    plan.nodes["any"] = ("attention", recipe_for_bits(8).rule("attention"))
    return model, plan


def test_weight_only_head_is_the_min_max_int8_grid_folded_at_load(bundles, outliers_dir):
    """The int4 presets' weight-only int8 head keeps the numbers MatMulNBits had (symmetric min-max blocks
    of 32, integers x scales), now stored int8 and turned into float once at load."""
    from embg.checkpoint.load import load_model
    from embg.quantize.onnx_backend import block_symmetric, dequantize_blocks, read_back_weights

    model = onnx.load(str(Artifact.load(bundles["int4"]).model_path))
    found = read_back_weights(model)
    head = {name: value for name, value in load_model(str(outliers_dir)).graph().state_dict().items()
            if name.startswith("head.") and value.ndim == 2}
    assert head
    for name, weight in head.items():
        stored = found[name]
        dense = weight.numpy().T  # [K, N] as the MatMul reads it
        expected = dequantize_blocks(*block_symmetric(dense, 8, 32), 32).T
        assert np.array_equal(stored, expected), name
        assert not np.array_equal(stored, weight.numpy())  # quantized, not the float weight


def test_verify_fails_when_per_tensor_quantization_remains(bundles):
    model, plan = _per_row_model(bundles["int8"])
    verify_quantized(model, plan)  # the written model passes
    first = next(n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat")
    model.graph.node.insert(0, onnx.helper.make_node("DynamicQuantizeLinear", [first.input[0]], ["q", "s", "z"]))
    with pytest.raises(ExportError, match="per tensor"):
        verify_quantized(model, plan)


def test_verify_fails_when_a_product_reads_rows_not_quantized_per_row(bundles):
    model, plan = _per_row_model(bundles["int8"])
    first = next(n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat")
    first.input[0] = "input_ids"
    with pytest.raises(ExportError, match="not quantized per row"):
        verify_quantized(model, plan)


def test_verify_fails_when_a_weight_was_skipped(bundles):
    model, plan = _per_row_model(bundles["int8"])
    plan.expected_ops["MatMulIntegerToFloat"] += 1
    with pytest.raises(ExportError, match="skipped weights"):
        verify_quantized(model, plan)


def test_plan_counts_every_per_row_matmul(outliers_dir, tmp_path):
    from embg.export.onnx_target import export_fp32
    from embg.checkpoint.load import load_model

    model = load_model(str(outliers_dir))
    fp32 = export_fp32(model.graph(), model.spec.max_positions)
    from embg.export.onnx_target import restore_weight_names

    restore_weight_names(fp32, model.graph())
    weights = {i.name for i in fp32.graph.initializer}
    weighted = [n for n in fp32.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    head = sum(part_of(n.input[1]) == "head" for n in weighted)
    assert head == 2
    # int8: every weighted MatMul but the float head reads per-row int8 rows; down_proj reads two
    # (its rows and their rounding residual, the preset's residual_pass)
    down = sum(part_of(n.input[1]) == "down_proj" for n in weighted)
    plan = plan_quantization(fp32, load_recipe("int8"), web_compatible=False)
    assert load_recipe("int8").residual_pass_on("onnx") == ("down_proj",)
    assert plan.per_row and plan.expected_ops["MatMulIntegerToFloat"] == len(weighted) - head + down
    # int4: min-max and calibrated blocks read per-row int8 rows; the weight-only int8 head is a float
    # MatMul on blocks folded to float at load
    for recipe in (load_recipe("int4-minmax"), recipe_for_bits(4)):
        plan = plan_quantization(fp32, recipe, web_compatible=False)
        assert plan.per_row and plan.expected_ops[WIDENED_MATMUL] == head and not plan.expected_ops["MatMulNBits"]
        assert recipe.residual_pass_on("onnx") == ("down_proj",)
        assert plan.expected_ops["MatMulIntegerToFloat"] == len(weighted) - head + down


def _constant(model: onnx.ModelProto, tensor: str) -> np.ndarray:
    """The value of a tensor computed from initializers alone, by onnxruntime (as it folds it at load)."""
    import onnxruntime as ort

    order = {n.name: i for i, n in enumerate(model.graph.node)}
    producers = {out: n for n in model.graph.node for out in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    nodes, used, stack = {}, {}, [tensor]
    while stack:
        name = stack.pop()
        if name in inits:
            used[name] = inits[name]
        elif name and producers[name].name not in nodes:
            nodes[producers[name].name] = producers[name]
            stack.extend(producers[name].input)
    graph = onnx.helper.make_graph(sorted(nodes.values(), key=lambda n: order[n.name]), "rows", [],
                                   [onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None)],
                                   list(used.values()))
    sub = onnx.helper.make_model(graph, opset_imports=model.opset_import)
    return ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]


def test_float_channel_rows_cost_grid_weights_no_bytes(bundles, outliers_dir):
    """The float channels' weight rows: a calibrated grid's are gathered at load from its own integers x
    scales (the same numbers, no bytes), a min-max weight's are stored in float16 (half of float32)."""
    from embg.checkpoint.load import load_model
    from embg.quantize.onnx_backend import read_back_weights
    from embg.quantize.rotation import rotate_for

    model = onnx.load(str(Artifact.load(bundles["int4"]).model_path))
    rules = parse_recipe(Artifact.load(bundles["int4"]).manifest["recipe"])
    graph = load_model(str(outliers_dir)).graph()
    rotate_for(graph, rules)  # the weights as the exporter rotated them
    weights = graph.state_dict()
    found = read_back_weights(model)
    rows_nodes = [n for n in model.graph.node if n.output[0].endswith("_float_rows")]
    assert rows_nodes and not any(i.name.endswith("_float_rows") for i in model.graph.initializer)
    seen = set()
    for node in rows_nodes:
        name = node.output[0][: -len("_float_rows")]
        value = _constant(model, node.output[0])
        kept = numpy_index(model, node) if node.op_type == "Gather" else None
        if rules.rule(part_of(name)).carries_grid:
            assert node.op_type == "Gather"
            assert np.array_equal(value, found[name].T[kept]), name  # the grid's own rows, bit for bit
        else:
            assert node.op_type == "Cast"
            stored = {i.name: i for i in model.graph.initializer}[node.input[0]]
            assert stored.data_type == onnx.TensorProto.FLOAT16
            original = weights[name].numpy().T  # [K, N]
            match = [k for k in range(original.shape[0]) if np.allclose(original[k], value[0], rtol=1e-3, atol=1e-6)]
            assert match, name  # its rows are the float weight's rows, to float16's rounding
        seen.add(node.op_type)
    assert seen == {"Gather", "Cast"}  # the int4 preset has both: gptq parts and int8 v/down


def numpy_index(model: onnx.ModelProto, gather: onnx.NodeProto) -> np.ndarray:
    inits = {i.name: i for i in model.graph.initializer}
    return onnx.numpy_helper.to_array(inits[gather.input[1]])
