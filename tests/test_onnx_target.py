"""ONNX target: bundles from the tiny fixture, run in ONNX Runtime, against sentence-transformers."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from embg.bundle import Artifact
from embg.export.pipeline import ExportRequest, export_bundle
from embg.quantize.recipe import recipe_for_bits
from embg.runtimes import load_all, load_runtime
from embg.parity.path import embed_texts
from embg.textdata.builtin import parity_texts
from tests.conftest import float_head_bytes
from embg.parity.path import cosine_rows

TEXTS = parity_texts()


@pytest.fixture(scope="module")
def onnx_bundles(tiny_bundle):
    bundles = {bits: tiny_bundle("onnx", bits) for bits in (32, 8, 4)}
    bundles["web"] = tiny_bundle("onnx", 4, web_compatible=True)
    return bundles


def runtime_for(bundle):
    load_all()
    artifact = Artifact.load(bundle)
    return artifact, load_runtime("onnxruntime", artifact, threads=1)


def bundle_bytes(bundle) -> int:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return sum((bundle / f).stat().st_size for f in manifest["files"])


def float_channel_bytes(bundle) -> int:
    """The float weight rows of the float_channels (16 of the tiny model's 192 or 768 input channels: a far
    larger share than the real model's 16 of 768-1152, about 8 MB of 333)."""
    model = onnx.load(str(Artifact.load(bundle).model_path))
    names = [n.output[0] for n in model.graph.node] + [i.name for i in model.graph.initializer]
    assert any(name.endswith("_float_rows") for name in names), "the preset keeps float channels"
    width = {"_float_rows": 4, "_float_rows_fp16": 2}  # grids gather theirs at load
    return sum(int(np.prod(i.dims)) * size for i in model.graph.initializer
               for suffix, size in width.items() if i.name.endswith(suffix))


@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("prompt", ["query", "document"])
def test_fp32_matches_reference(onnx_bundles, tiny_model, tiny_reference, batch_size, prompt):
    _, runtime = runtime_for(onnx_bundles[32])
    ours = embed_texts(runtime, tiny_model.tokenizer, TEXTS, prompt, batch_size=batch_size)
    ref = tiny_reference.encode(TEXTS, prompt_name=prompt)
    assert cosine_rows(ours, ref).min() >= 0.99999


@pytest.mark.parametrize("dim", [128, 64, 32])
@pytest.mark.heavy
def test_fp32_matryoshka_dims(tiny_dir, tiny_model, tiny_reference, tmp_path, dim):
    bundle = export_bundle(ExportRequest(model=str(tiny_dir), target="onnx", recipe=recipe_for_bits(32),
                                         out=tmp_path / "d", dim=dim, parity=False))
    artifact, runtime = runtime_for(bundle)
    assert artifact.embedding_dim == dim
    ours = embed_texts(runtime, tiny_model.tokenizer, TEXTS, "query", batch_size=5)
    ref = tiny_reference.encode(TEXTS, prompt_name="query", dim=dim)
    assert ours.shape == (len(TEXTS), dim)
    assert cosine_rows(ours, ref).min() >= 0.99999


def test_int8_parity_and_size(onnx_bundles, tiny_model, tiny_reference):
    _, runtime = runtime_for(onnx_bundles[8])
    ours = embed_texts(runtime, tiny_model.tokenizer, TEXTS, "query", batch_size=5)
    ref = tiny_reference.encode(TEXTS, prompt_name="query")
    assert cosine_rows(ours, ref).min() >= 0.995
    head = float_head_bytes(tiny_model)  # the preset keeps the Dense head float
    kept = float_channel_bytes(onnx_bundles[8])
    assert bundle_bytes(onnx_bundles[8]) - kept <= 0.30 * (bundle_bytes(onnx_bundles[32]) - head) + head
    ops = {n.op_type for n in onnx.load(str(Artifact.load(onnx_bundles[8]).model_path)).graph.node}
    assert "MatMulIntegerToFloat" in ops and "MatMul" in ops  # weights int8; activation x activation stays float


def test_int4_size_ops_and_no_nan(onnx_bundles, tiny_model, tiny_reference):
    artifact, runtime = runtime_for(onnx_bundles[4])
    ours = embed_texts(runtime, tiny_model.tokenizer, TEXTS, "document", batch_size=5)
    assert np.isfinite(ours).all()
    assert bundle_bytes(onnx_bundles[4]) - float_channel_bytes(onnx_bundles[4]) <= 0.20 * bundle_bytes(onnx_bundles[32])
    counts = artifact.manifest["quantization"]["ops"]
    assert counts["GatherBlockQuantized"] == 1 and counts["MatMulIntegerToFloat"] > 0
    drift = cosine_rows(ours, tiny_reference.encode(TEXTS, prompt_name="document"))
    print(f"int4 onnx drift on tiny (random weights): min {drift.min():.4f} mean {drift.mean():.4f}")
    assert artifact.manifest["parity"]["nonfinite"] == 0


def test_web_compatible_variant_has_no_gather_block_quantized(onnx_bundles, tiny_model):
    artifact, runtime = runtime_for(onnx_bundles["web"])
    ops = {n.op_type for n in onnx.load(str(artifact.model_path)).graph.node}
    assert "GatherBlockQuantized" not in ops and "MatMulIntegerToFloat" in ops
    assert np.isfinite(embed_texts(runtime, tiny_model.tokenizer, TEXTS[:4], "query")).all()


def test_manifest_fields(onnx_bundles):
    manifest = json.loads((onnx_bundles[8] / "manifest.json").read_text())
    for key in ("model", "target", "recipe", "opset", "inputs", "outputs", "dynamic_axes", "embedding_dim",
                "prompts", "tokenizer", "tool_versions", "parity"):
        assert key in manifest, key
    assert manifest["opset"] == 21
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask"]
    assert manifest["outputs"][0]["name"] == "sentence_embedding"
    assert manifest["prompts"]["query"] == "task: search result | query: "
    assert len(manifest["model"]["weights_sha256"]) == 64
    assert "tokenizer.model" in manifest["tokenizer"]["files"]
    for name in manifest["tokenizer"]["files"]:
        assert (onnx_bundles[8] / name).is_file()
    assert manifest["parity"]["cosine_min"] >= 0.995


def test_dynamic_batch_and_sequence(onnx_bundles):
    _, runtime = runtime_for(onnx_bundles[32])
    for batch, seq in ((1, 1), (3, 40), (2, 300)):
        ids = np.full((batch, seq), 7, dtype=np.int64)
        out = runtime.embed(ids, np.ones_like(ids))
        assert out.shape == (batch, 192) and np.isfinite(out).all()


@pytest.mark.parametrize("bits", [32, 8])
def test_every_rms_norm_fuses_in_onnxruntime(onnx_bundles, tiny_model, tmp_path, bits):
    """onnxruntime fuses x / sqrt(mean(x^2) + eps) * g into one SimplifiedLayerNormalization, but not the
    rsqrt form torch writes (Sqrt, Reciprocal, Mul: six ops per norm, ~10% of a real int8 pass). The
    exporter writes the fusable form: every norm of the graph is one kernel in the session onnxruntime
    builds, in the float file and in the quantized one."""
    import onnxruntime as ort

    from embg.model.graph import RMSNorm

    model_path = Artifact.load(onnx_bundles[bits]).model_path
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    norms = sum(isinstance(m, RMSNorm) for m in tiny_model.graph().modules())
    assert ops.count("SimplifiedLayerNormalization") == norms and "Reciprocal" not in ops and "Pow" not in ops
