"""TFLite target: one .tflite with a signature per bucket, run in LiteRT, against sentence-transformers."""

from __future__ import annotations

import json
from collections import Counter
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from embg.errors import EmbgError
from embg.bundle import Artifact
from embg.export.pipeline import ExportRequest, export_bundle
from embg.quantize import tflite_flatbuffer as fb
from embg.quantize.recipe import recipe_for_bits
from embg.runtimes import load_all, load_runtime
from embg.parity.path import embed_texts
from embg.textdata.builtin import QUERIES, parity_texts
from embg.parity.path import cosine_rows
from tests.conftest import float_head_bytes

BUCKETS = (64, 256)
TEXTS = parity_texts()


@pytest.fixture(scope="module")
def tflite_bundles(tiny_bundle):
    return {bits: tiny_bundle("tflite", bits, BUCKETS) for bits in (32, 8, 4)}


def runtime_for(bundle, **options):
    load_all()
    artifact = Artifact.load(bundle)
    return artifact, load_runtime("litert", artifact, threads=1, **options)


def reference_at(reference, texts, prompt, max_len):
    return reference.encode(texts, prompt_name=prompt, max_length=max_len)  # truncation is per call


@pytest.mark.parametrize("prompt", ["query", "document"])
def test_fp32_every_bucket_matches_reference(tflite_bundles, tiny_model, tiny_reference, prompt):
    _, runtime = runtime_for(tflite_bundles[32])
    for bucket in BUCKETS:
        batch = tiny_model.tokenizer.encode(TEXTS, prompt=prompt, max_length=bucket)
        # Force this bucket for every row: short texts then carry padding far wider than the window.
        ours = np.concatenate([runtime._run_one(f"seq{bucket}", *_pad(batch, i, bucket)) for i in range(len(TEXTS))])
        ref = reference_at(tiny_reference, TEXTS, prompt, bucket)
        cos = cosine_rows(ours, ref)
        assert np.isfinite(ours).all()
        assert cos.min() >= 0.99999, (bucket, cos.min())


def _pad(batch, row, width):
    ids = np.zeros((1, width), np.int32)
    mask = np.zeros((1, width), np.int32)
    n = int(batch.attention_mask[row].sum())
    ids[0, :n] = batch.input_ids[row, :n]
    mask[0, :n] = 1
    return ids, mask


def test_runtime_picks_smallest_bucket_and_batches(tflite_bundles, tiny_model, tiny_reference):
    _, runtime = runtime_for(tflite_bundles[32])
    short = embed_texts(runtime, tiny_model.tokenizer, QUERIES, "query", batch_size=4)
    assert runtime.last_bucket == 64
    ref = reference_at(tiny_reference, QUERIES, "query", 256)
    assert cosine_rows(short, ref).min() >= 0.99999


def test_each_row_runs_in_its_own_bucket_whatever_the_batch(tflite_bundles, tiny_model):
    """A query batched with a long document, or padded wide, gives bit for bit its embedding alone:
    a wider signature rounds XNNPACK's float kernels differently, which int8 activations amplify."""
    _, runtime = runtime_for(tflite_bundles[8])
    long_doc = tiny_model.tokenizer.encode(["word " * 150], prompt="document", max_length=256)
    query = tiny_model.tokenizer.encode([QUERIES[0]], prompt="query", max_length=64)
    alone = runtime.embed(query.input_ids, query.attention_mask)
    assert runtime.last_bucket == 64
    width = long_doc.input_ids.shape[1]
    assert width > 64  # the batch's width needs the 256 bucket
    ids, mask = np.zeros((2, width), np.int64), np.zeros((2, width), np.int64)
    ids[0], mask[0] = long_doc.input_ids[0], long_doc.attention_mask[0]
    n = int(query.attention_mask[0].sum())
    ids[1, :n], mask[1, :n] = query.input_ids[0, :n], 1
    ran, run_one = [], runtime._run_one
    runtime._run_one = lambda name, *inputs: ran.append(name) or run_one(name, *inputs)
    batched = runtime.embed(ids, mask)
    assert ran == ["seq256", "seq64"]  # the document in its bucket, the query in its own
    np.testing.assert_array_equal(batched[1:], alone)
    padded_wide = runtime.embed(*_pad(query, 0, 256))
    assert ran[2:] == ["seq64"]
    np.testing.assert_array_equal(padded_wide, alone)


def test_long_text_is_truncated_with_warning_not_crash(tflite_bundles, tiny_model, caplog):
    _, runtime = runtime_for(tflite_bundles[32])
    batch = tiny_model.tokenizer.encode(["word " * 2000], prompt="document")
    with caplog.at_level(logging.WARNING):
        out = runtime.embed(batch.input_ids, batch.attention_mask)
    assert out.shape == (1, 192) and np.isfinite(out).all()
    assert "truncated" in caplog.text
    assert runtime.last_bucket == 256


def test_int8_parity_size_and_tensor_types(tflite_bundles, tiny_model, tiny_reference):
    artifact, runtime = runtime_for(tflite_bundles[8])
    ours = embed_texts(runtime, tiny_model.tokenizer, TEXTS, "query")
    cos = cosine_rows(ours, reference_at(tiny_reference, TEXTS, "query", 256))
    assert cos.min() >= 0.995
    size32 = Artifact.load(tflite_bundles[32]).model_path.stat().st_size
    head = float_head_bytes(tiny_model)  # the preset keeps the Dense head float
    split = artifact.manifest["quantization"]["activation_split"]
    # the float weight columns of the kept channels: 16 of the tiny model's 192 or 768 inputs, a far
    # larger share than the real model's 16 of 768-1152
    extra = split["float_channel_bytes"]
    assert artifact.model_path.stat().st_size <= 0.30 * (size32 - head) + head + extra
    uses = fb.weight_uses(fb.read_model(artifact.model_path))
    kinds = Counter(use.type for use in uses)
    # every weight int8 but the head's two Dense layers and the float channels' columns (7 linear
    # layers per decoder layer), in each signature; down_proj's weight read by two products
    per_signature = 2 + split["layers_with_float_channels"]
    assert set(kinds) == {"INT8", "FLOAT32"}
    assert kinds["FLOAT32"] == per_signature * len(artifact.manifest["signatures"])
    assert split["float_channels_per_activation"] == 16 and split["residual_pass"] == ["down_proj"]
    assert split["layers_with_residual_pass"] == split["layers_with_float_channels"] // 7 > 0


def test_int4_size_types_and_no_nan(tflite_bundles, tiny_model, tiny_reference):
    artifact, runtime = runtime_for(tflite_bundles[4])
    ours = embed_texts(runtime, tiny_model.tokenizer, TEXTS, "document")
    assert np.isfinite(ours).all()
    size32 = Artifact.load(tflite_bundles[32]).model_path.stat().st_size
    assert artifact.model_path.stat().st_size <= 0.18 * size32
    tensors = artifact.manifest["quantization"]["tensors"]
    assert tensors["INT4_block32"] > 0 and tensors["INT8_channel"] > 0
    # --bits 4 on LiteRT: no float channels (bytes) and no second pass (10% of its speed for no measured
    # retrieval gain): its layers are the converter's plain dynamic-range products
    assert not artifact.manifest["quantization"].get("activation_split")
    drift = cosine_rows(ours, reference_at(tiny_reference, TEXTS, "document", 256))
    print(f"int4 tflite drift on tiny (random weights): min {drift.min():.4f} mean {drift.mean():.4f}")


def test_compiled_model_api_matches_interpreter(tflite_bundles, tiny_model):
    _, interp = runtime_for(tflite_bundles[32], api="interpreter")
    _, compiled = runtime_for(tflite_bundles[32], api="compiled")
    batch = tiny_model.tokenizer.encode(QUERIES[:3], prompt="query")
    a = interp.embed(batch.input_ids, batch.attention_mask)
    b = compiled.embed(batch.input_ids, batch.attention_mask)
    assert cosine_rows(a, b).min() >= 0.999999
    assert compiled.version_info()["api"] == "compiled"


def test_manifest_lists_buckets_and_prompts(tflite_bundles):
    manifest = json.loads((tflite_bundles[4] / "manifest.json").read_text())
    assert [s["seq_len"] for s in manifest["signatures"]] == list(BUCKETS)
    assert [s["name"] for s in manifest["signatures"]] == ["seq64", "seq256"]
    assert manifest["inputs"][0] == {"name": "input_ids", "dtype": "int32", "shape": [1, "bucket"]}
    assert manifest["prompts"]["document"] == "title: none | text: "
    assert "tokenizer.model" in manifest["tokenizer"]["files"]
    assert manifest["parity"]["nonfinite"] == 0


@pytest.mark.parametrize("seq_lens, message", [
    ((64, 4096), "exceeds the model's 2048 positions"),
    ((256, 64), "strictly increasing"),
    ((64, 64), "strictly increasing"),
    ((4,), "at least 8"),
])
def test_bad_buckets_refused_before_work(tiny_dir, tmp_path, seq_lens, message):
    with pytest.raises(EmbgError, match=message):
        export_bundle(ExportRequest(model=str(tiny_dir), target="tflite", recipe=recipe_for_bits(8),
                                    seq_lens=seq_lens, out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.iterdir())


def test_repeat_kv_attention_would_be_caught(tiny_model, tiny_reference, tmp_path, monkeypatch):
    """Converting HF-style repeat_kv attention gives wrong numbers silently; our parity check sees it."""
    from embg.export.tflite_target import convert_float
    from embg.model import graph as graph_module
    from embg.runtimes.litert_rt import make_interpreter

    def repeat_kv_forward(self, x, cos, sin, mask):
        batch, seq, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(batch, seq, self.heads, self.head_dim).transpose(1, 2))
        k = self.k_norm(self.k_proj(x).view(batch, seq, self.kv_heads, self.head_dim).transpose(1, 2))
        v = self.v_proj(x).view(batch, seq, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = cos.transpose(1, 2), sin.transpose(1, 2)  # the graph's tables are [1, S, 1, D]
        q = q * cos + graph_module.rotate_half(q) * sin
        k = k * cos + graph_module.rotate_half(k) * sin
        groups = self.heads // self.kv_heads
        k = k[:, :, None].expand(batch, self.kv_heads, groups, seq, self.head_dim).reshape(batch, self.heads, seq, -1)
        v = v[:, :, None].expand(batch, self.kv_heads, groups, seq, self.head_dim).reshape(batch, self.heads, seq, -1)
        probs = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * self.scaling + mask, dim=-1)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(batch, seq, -1)
        return self.o_proj(out)

    monkeypatch.setattr(graph_module.Attention, "forward", repeat_kv_forward)
    graph = tiny_model.graph()
    graph.band_block = None  # dense [S, S] masks, as HF-style attention takes them
    path = tmp_path / "repeat_kv.tflite"
    convert_float(graph, (64,), path)
    interpreter, _ = make_interpreter(path, threads=1)
    runner = interpreter.get_signature_runner("seq64")
    batch = tiny_model.tokenizer.encode(QUERIES, prompt="query", pad_to=64)
    got = np.concatenate([runner(input_ids=batch.input_ids[i:i + 1].astype(np.int32),
                                 attention_mask=batch.attention_mask[i:i + 1].astype(np.int32))["sentence_embedding"]
                          for i in range(len(QUERIES))])
    with torch.no_grad():  # the torch graph itself is still right: only the conversion breaks
        eager = graph(torch.as_tensor(batch.input_ids), torch.as_tensor(batch.attention_mask)).numpy()
    ref = tiny_reference.encode(QUERIES, prompt_name="query")
    assert cosine_rows(eager, ref).min() >= 0.99999
    cos = cosine_rows(got, ref)
    print(f"repeat_kv conversion: cosine min {cos.min():.3f}")
    assert cos.min() < 0.999


def test_export_prints_only_the_bundle_path_and_no_native_logs(tiny_dir, tmp_path):
    """The main job in a real process: LiteRT logs ~35 native lines while the export-time parity loads the
    file (and more at exit); without --verbose none reach the terminal, and stdout is the bundle path."""
    import os
    import subprocess
    import sys

    out = tmp_path / "bundle"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "EMBG_XNNPACK_CACHE": str(tmp_path / "xnnpack")}
    done = subprocess.run([sys.executable, "-m", "embg.cli.export", "--model", str(tiny_dir), "--target", "tflite",
                           "--bits", "32", "--seq-lens", "32", "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == f"{out}\n"
    native = [line for line in done.stderr.splitlines() if line.startswith(("INFO: ", "WARNING: ", "ERROR: ", "└"))]
    assert not native, native[:5]
    assert "parity vs sentence-transformers" in done.stderr  # progress is on stderr


def test_signatures_share_one_copy_of_each_quantization_table(tflite_bundles, tmp_path):
    """Every bucket's subgraph lists the same weights; their per-channel scales and int64 zero points are
    written once (the real int8 file repeated its 262144 table rows' 12 bytes per signature), and the file
    computes exactly what the one with a copy per subgraph computes."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils

    written = Artifact.load(tflite_bundles[8]).model_path
    copies = tmp_path / "copies.tflite"
    flatbuffer_utils.write_model(fb.read_model(written), str(copies))  # the writer's default: a copy per table
    shared = tmp_path / "shared.tflite"
    fb.write_model(fb.read_model(copies), shared)
    model = fb.read_model(shared)
    per_subgraph = sum(len(t.quantization.scale) * 12 for t in model.subgraphs[0].tensors
                       if t.quantization is not None and t.quantization.scale is not None)
    assert len(model.subgraphs) == len(BUCKETS) and per_subgraph > 1000
    assert copies.stat().st_size - shared.stat().st_size >= (len(BUCKETS) - 1) * per_subgraph
    assert written.stat().st_size == shared.stat().st_size  # the exporter already writes it this way
    outputs = []
    for path in (copies, shared):
        runner = Interpreter(model_path=str(path)).get_signature_runner(f"seq{BUCKETS[0]}")
        inputs = runner.get_input_details()
        feed = {name: (np.arange(BUCKETS[0]).reshape(1, -1) % 50 + 2 if "ids" in name else
                       np.ones((1, BUCKETS[0]))).astype(detail["dtype"]) for name, detail in inputs.items()}
        outputs.append(next(iter(runner(**feed).values())))
    assert np.array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("bits", [32, 8, 4])
def test_attention_products_are_batch_matmuls_not_dynamic_weight_products(tflite_bundles, bits):
    """Every FULLY_CONNECTED in a LiteRT file has constant weights: q x k^T written as one dense product became a
    FULLY_CONNECTED with the keys as weights, which XNNPACK ran ~5x slower (the real model at 512 tokens: 242 of
    379 ms in attention). Every signature, every layer (2 products each: scores and weighted values)."""
    from embg.fixtures import FIXTURE_KINDS

    bundle = tflite_bundles[bits]
    model = fb.read_model(bundle / Artifact.load(bundle).manifest["model_file"])
    assert fb.dynamic_weight_products(model) == []
    layers = FIXTURE_KINDS["tiny"].config["num_hidden_layers"]
    for subgraph in model.subgraphs:
        assert sum(fb.op_name(model, op) == "BATCH_MATMUL" for op in subgraph.operators) >= 2 * layers


def test_split_dense_attention_is_the_dense_product():
    """The LiteRT form (query blocks against gathered keys) computes exactly what the dense form does, for key masks
    and [S, S] masks; a length the blocks do not divide keeps the dense form."""
    from embg.model.attention import dense_attention

    torch.manual_seed(0)
    for seq in (32, 64, 33):
        q, k, v = torch.randn(2, seq, 3, 64), torch.randn(2, seq, 1, 64), torch.randn(2, seq, 1, 64)
        for mask_rows in (1, seq):
            mask = torch.where(torch.rand(2, 1, mask_rows, seq) < 0.3, -1e30, 0.0)
            assert torch.equal(dense_attention(q, k, v, mask, 0.125, 2), dense_attention(q, k, v, mask, 0.125))
