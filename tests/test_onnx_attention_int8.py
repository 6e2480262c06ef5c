"""int8 attention products on ONNX (recipe field attention_products): every layer's scores and
weighted values become per-token int8 products; no embedding depends on batch neighbours or padding."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from embg.errors import EmbgError
from embg.bundle import Artifact
from embg.export.pipeline import ExportRequest, export_bundle
from embg.quantize.recipe import GROUPS, load_recipe, parse_recipe
from embg.runtimes import load_all, load_runtime
from embg.textdata.builtin import parity_texts
from embg.parity.path import cosine_rows

TEXTS = parity_texts()


@pytest.fixture(scope="module")
def products_bundle(tiny_dir, tmp_path_factory):
    """fp32 weights, int8 attention products only: isolates what this recipe field does."""
    root = tmp_path_factory.mktemp("attention-int8")
    recipe = {"name": "fp32-int8-products", "rules": {group: {"bits": 32} for group in GROUPS},
              "attention_products": "int8"}
    path = root / "recipe.json"
    path.write_text(json.dumps(recipe))
    return export_bundle(ExportRequest(model=str(tiny_dir), target="onnx", recipe=load_recipe(str(path)),
                                       out=root / "bundle", parity=False))


def test_every_layer_has_int8_scores_and_values(products_bundle):
    artifact = Artifact.load(products_bundle)
    assert artifact.manifest["quantization"]["attention_products"] == {"scores": 6, "values": 6}
    graph = onnx.load(str(artifact.model_path)).graph
    weights = {init.name for init in graph.initializer}
    float_products = [n for n in graph.node if n.op_type == "MatMul" and not any(i in weights for i in n.input)]
    assert not float_products
    assert sum(n.op_type == "MatMulIntegerToFloat" for n in graph.node) == 12


def test_products_close_to_reference_and_independent_of_padding(products_bundle, tiny_model, tiny_reference):
    load_all()
    runtime = load_runtime("onnxruntime", Artifact.load(products_bundle), threads=1)
    batch = tiny_model.tokenizer.encode(TEXTS, prompt="document")
    padded = runtime.embed(batch.input_ids, batch.attention_mask)
    lengths = batch.attention_mask.sum(1)
    alone = np.concatenate([runtime.embed(batch.input_ids[i:i + 1, :n], batch.attention_mask[i:i + 1, :n])
                            for i, n in enumerate(lengths)])
    ref = tiny_reference.encode(TEXTS, prompt_name="document", batch_size=len(TEXTS))
    assert np.isfinite(padded).all()
    assert cosine_rows(padded, ref).min() >= 0.999
    # per-token scales: a text's embedding does not depend on its padding or its batch neighbours
    assert np.abs(padded - alone).max() <= 1e-4


def test_recipe_field_is_checked():
    data = {**load_recipe("int8").to_dict(), "attention_products": "int4"}
    with pytest.raises(EmbgError, match="attention_products must be one of"):
        parse_recipe(data)
    assert parse_recipe({**data, "attention_products": "int8"}).to_dict()["attention_products"] == "int8"
