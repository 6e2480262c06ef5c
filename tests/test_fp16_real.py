"""The fp16-safe graph on the REAL checkpoint (issue 17's "what must be true" for fp16).

Needs EMBG_REAL_MODEL = a local copy of google/embeddinggemma-300m; slow (the fp32 part converts
the model to TFLite twice: ~10 min and 6-9 GB RAM each). Texts: the validator's built-in texts,
each with its prompt, truncated to 2048 tokens. Figures for docs/fp16.md come from
``python -m bench.fp16_headroom`` (the same helpers).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from bench.fp16_headroom import alone_rows, compare, embed_alone, embed_batches, export, runtime_embed, torch_embed
from embg.model.fp16_safe import FP16_LIMIT, make_fp16_safe, to_half
from embg.quantize.recipe import load_recipe, parse_recipe

pytestmark = pytest.mark.slow
SCALE = load_recipe("fp16").fp16_safe["residual_scale"]


@pytest.fixture(scope="module")
def real():
    directory = os.environ.get("EMBG_REAL_MODEL")
    if not directory:
        pytest.skip("EMBG_REAL_MODEL is unset: set it to a local copy of google/embeddinggemma-300m")
    from embg.checkpoint.load import load_model
    from embg.textdata.sets import builtin_texts

    model = load_model(directory)
    texts = builtin_texts()
    return model, texts, alone_rows(model, texts)


@pytest.fixture(scope="module")
def reference(real):
    from embg.runtimes.reference import SentenceTransformersReference

    model, _, rows = real
    return embed_alone(SentenceTransformersReference(model.spec.directory, threads=1).embed, rows)


@pytest.fixture(scope="module")
def safe(real):
    graph = real[0].graph()
    make_fp16_safe(graph, SCALE)
    return graph


def test_real_max_intermediate_per_layer_below_margin(real, safe):
    from embg.model.intermediates import measure

    _, _, rows = real
    found = measure(safe, [(torch.as_tensor(i), torch.as_tensor(m)) for i, m in rows])
    per_layer = found.per_layer()
    print(f"fp16-safe x{SCALE:g}, largest intermediate per layer:", " ".join(f"{v:.4g}" for v in per_layer),
          found.outer)
    assert len(per_layer) == real[0].spec.config["num_hidden_layers"]
    assert max(per_layer) < FP16_LIMIT and max(found.outer.values()) < FP16_LIMIT
    assert max(found.per_layer("residual")) > FP16_LIMIT / 16  # the scale is not so small it buries the stream


def test_real_fp16_safe_in_fp16_matches_where_plain_gives_nan(real, safe, reference):
    model, texts, rows = real
    plain_half = to_half(model.graph(), require_safe=False)
    plain = compare(embed_alone(torch_embed(plain_half), rows), reference)
    del plain_half
    safe_half = to_half(copy.deepcopy(safe))
    alone = compare(embed_alone(torch_embed(safe_half), rows), reference)
    batches = compare(embed_batches(torch_embed(safe_half), model, texts), reference)
    print("torch fp16 plain:", plain, "\nfp16-safe alone:", alone, "\nfp16-safe batches:", batches)
    assert plain["nonfinite"] > 0  # the plain graph in fp16: NaN/inf
    for found in (alone, batches):
        assert found["nonfinite"] == 0 and found["cosine_min"] >= 0.999


def test_real_onnx_bits_16_matches(real, reference, tmp_path_factory):
    model, texts, rows = real
    bundle = export(str(model.spec.directory), "onnx", load_recipe("fp16"), tmp_path_factory.mktemp("real") / "onnx16")
    embed, _ = runtime_embed(bundle)
    alone, batches = compare(embed_alone(embed, rows), reference), compare(embed_batches(embed, model, texts), reference)
    print("onnxruntime fp16 alone:", alone, "\nbatches:", batches)
    for found in (alone, batches):
        assert found["nonfinite"] == 0 and found["cosine_min"] >= 0.999


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_real_fp32_function_unchanged(real, target, tmp_path_factory):
    model, _, rows = real
    root: Path = tmp_path_factory.mktemp(f"real-{target}")
    data = {**load_recipe("fp32").to_dict(), "name": "fp32-fp16safe", "fp16_safe": {"residual_scale": SCALE}}
    outs = []
    for name, recipe in (("plain", load_recipe("fp32")), ("safe", parse_recipe(data))):
        embed, runtime = runtime_embed(export(str(model.spec.directory), target, recipe, root / name))
        outs.append(embed_alone(embed, rows))
        del runtime
    found = compare(outs[1], outs[0])
    print(f"{target} fp32, fp16-safe vs plain:", found)
    assert found["nonfinite"] == 0 and found["cosine_min"] >= 0.999999
