"""QAT checkpoints: exact Q4_0/Q8_0 grids carried into both targets, and measured against naive min-max."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from embg.cli.export import main as export_main
from embg.errors import ExportError
from embg.export.artifact import Artifact
from embg.export.pipeline import ExportRequest, export_bundle
from embg.model.load import load_model
from embg.quantize import tflite_flatbuffer as fb
from embg.quantize.grids import GRIDS
from embg.quantize.onnx_backend import read_back_weights
from embg.quantize.recipe import load_recipe, recipe_for_bits
from embg.runtimes import load_all, load_runtime
from embg.runtimes.reference import SentenceTransformersReference
from embg.validate.parity import embed_texts
from embg.validate.texts import parity_texts
from tests.conftest import cosine_rows

TEXTS = parity_texts()
BUCKETS = (64, 256)


_EXPORTS: dict[tuple, Artifact] = {}
_REFERENCES: dict[str, SentenceTransformersReference] = {}
_MODELS: dict[str, object] = {}


@pytest.fixture(scope="module")
def export_root(tmp_path_factory):
    _EXPORTS.clear()
    return tmp_path_factory.mktemp("qat")


def export(model_dir, target, root, recipe_name, auto=False, dim=None, **options):
    """Export once per (checkpoint, target, recipe, auto, dim) in this module; tests share bundles."""
    key = (str(model_dir), target, recipe_name, auto, dim, tuple(sorted(options.items())))
    if key not in _EXPORTS:
        recipe = recipe_for_bits(int(recipe_name[3:])) if auto else load_recipe(recipe_name)
        request = ExportRequest(model=str(model_dir), target=target, out=root / f"b{len(_EXPORTS)}",
                                seq_lens=BUCKETS if target == "tflite" else (), parity=False, recipe=recipe, dim=dim,
                                options={"auto_qat": auto, **options})
        _EXPORTS[key] = Artifact.load(export_bundle(request))
    return _EXPORTS[key]


def loaded(model_dir):
    if str(model_dir) not in _MODELS:
        _MODELS[str(model_dir)] = load_model(str(model_dir))
    return _MODELS[str(model_dir)]


def reference_for(model_dir) -> SentenceTransformersReference:
    if str(model_dir) not in _REFERENCES:
        _REFERENCES[str(model_dir)] = SentenceTransformersReference(model_dir)
    return _REFERENCES[str(model_dir)]


def drift(artifact, model_dir, prompt="query", texts=TEXTS, dim=None):
    load_all()
    runtime = load_runtime(artifact.manifest["runtime"], artifact, threads=1)
    ours = embed_texts(runtime, loaded(model_dir).tokenizer, texts, prompt)
    ref = reference_for(model_dir).encode(texts, prompt_name=prompt, dim=dim, max_length=runtime.max_length or 2048)
    assert ours.shape == ref.shape
    return cosine_rows(ours, ref)


@pytest.fixture(scope="module")
def q4_state(tiny_q4_dir):
    return loaded(tiny_q4_dir).state_dict


def test_bits4_on_q4_checkpoint_selects_exact_grid_and_onnx_is_lossless(tiny_q4_dir, q4_state, export_root):
    artifact = export(tiny_q4_dir, "onnx", export_root, "int4", auto=True)
    assert artifact.manifest["recipe"]["name"] == "int4-qat"
    assert artifact.manifest["qat_grid"]["off_grid_fraction"] == 0.0
    weights = read_back_weights(onnx.load(str(artifact.model_path)))
    checked = 0
    for name, value in q4_state.items():
        if value.ndim == 2 and not name.startswith("head."):
            scale = np.repeat(np.abs(GRIDS["q4_0"].scales(value).numpy()), 32, axis=1)
            assert (np.abs(weights[name] - value.numpy()) / scale).max() <= 1e-6, name
            checked += 1
    assert checked == 43
    cos = drift(artifact, tiny_q4_dir)
    assert cos.min() >= 0.9999, cos.min()


def test_exact_grid_beats_naive_min_max_on_both_targets(tiny_q4_dir, export_root):
    for target in ("onnx", "tflite"):
        exact = drift(export(tiny_q4_dir, target, export_root, "int4", auto=True), tiny_q4_dir)
        naive = drift(export(tiny_q4_dir, target, export_root, "int4"), tiny_q4_dir)
        print(f"{target}: exact-grid cos mean {exact.mean():.6f} min {exact.min():.6f}; "
              f"naive int4 cos mean {naive.mean():.6f} min {naive.min():.6f}")
        assert exact.mean() > naive.mean() and exact.min() > naive.min()


def test_tflite_carries_grid_except_where_xnnpack_forbids_it(tiny_q4_dir, q4_state, export_root):
    """XNNPACK rejects negative block scales, so Q4_0 blocks with d < 0 lose one step on their extreme
    weight; everything else must be exact, and the manifest must say so."""
    artifact = export(tiny_q4_dir, "tflite", export_root, "int4", auto=True)
    carried = artifact.manifest["qat_grid"]["target"]
    assert carried["exact"] is False and "negative block scales" in carried["note"]
    model = fb.read_model(artifact.model_path)
    subgraph = model.subgraphs[0]
    targets = [n for n, v in q4_state.items() if v.ndim == 2 and not n.startswith("head.")]
    exact_blocks = clipped_blocks = clipped_weights = 0
    for use in fb.weight_uses(model):
        if use.subgraph or use.type != "INT4":
            continue
        got = fb.dequantize(model, subgraph, subgraph.tensors[use.tensor_index])
        candidates = [w for n, w in ((n, v.numpy()) for n, v in q4_state.items())
                      if w.shape == got.shape and not n.startswith("head.")]
        want = min(candidates, key=lambda w: np.abs(w - got).max())
        scale = np.abs(GRIDS["q4_0"].scales(torch.from_numpy(want)).numpy())
        error = (np.abs(got - want) / np.repeat(scale, 32, axis=1)).reshape(want.shape[0], -1, 32)
        wrong = error > 1e-3
        assert np.abs(error[wrong] - 1.0).max(initial=0) <= 1e-3  # a differing weight is off by exactly one step
        exact_blocks += int((~wrong.any(axis=-1)).sum())
        clipped_blocks += int(wrong.any(axis=-1).sum())
        clipped_weights += int(wrong.sum())
    assert targets and exact_blocks > 0
    # The manifest counts every Q4_0 block; subgraph 0 holds each weight once.
    assert clipped_blocks == carried["blocks_with_clipped_weight"]
    assert clipped_weights == carried["clipped_weights"]
    assert 0.3 < clipped_blocks / (exact_blocks + clipped_blocks) < 0.7


def test_litert_floor_is_the_negative_scale_clipping_not_bf16_scales(tiny_q4_dir, q4_state):
    """Why LiteRT int4-qat misses 0.9999: simulated in torch on the same grids.

    XNNPACK stores block scales as bf16 and refuses negative ones. bf16 scales alone keep the
    embedding above the floor; folding the sign of d < 0 blocks into the integers (clipping the
    -q = 8 weight to 7, which every such block has: d = m / -8) drops it well below.
    """
    from embg.model.load import LoadedModel
    from embg.quantize.qat import positive_scale_form, recover_grids

    model = loaded(tiny_q4_dir)
    grids, _ = recover_grids(q4_state, load_recipe("int4-qat"))
    batch = model.tokenizer.encode(TEXTS, prompt="query", max_length=256)
    ids, mask = torch.as_tensor(batch.input_ids), torch.as_tensor(batch.attention_mask)

    def embed(state):
        with torch.no_grad():
            return LoadedModel(model.spec, state, model.tokenizer).graph()(ids, mask).numpy()

    def with_grids(clip: bool) -> np.ndarray:
        state = dict(q4_state)
        for name, (q, d) in grids.items():
            if clip:
                q, d, _, _ = positive_scale_form(q, d)
            d = torch.as_tensor(d).to(torch.bfloat16).to(torch.float32).numpy()  # XNNPACK's qb4w scales
            rows, cols = q.shape
            w = q.reshape(rows, cols // 32, 32).astype(np.float32) * d[..., None]
            state[name] = torch.as_tensor(w.reshape(rows, cols), dtype=q4_state[name].dtype)
        return embed(state)

    exact = embed(q4_state)
    bf16_only, clipped = cosine_rows(with_grids(False), exact), cosine_rows(with_grids(True), exact)
    print(f"\nLiteRT int4-qat floor (torch simulation): bf16 scales only {bf16_only.min():.6f}, "
          f"+ negative-scale clipping {clipped.min():.6f}")
    assert bf16_only.min() >= 0.9999 > clipped.min()


def test_q8_checkpoint_bits8_onnx_is_exact_and_tflite_says_it_is_not(tiny_q8_dir, export_root):
    onnx_artifact = export(tiny_q8_dir, "onnx", export_root, "int8", auto=True)
    assert onnx_artifact.manifest["recipe"]["name"] == "int8-qat"
    assert onnx_artifact.manifest["qat_grid"]["target"]["exact"] is True
    assert drift(onnx_artifact, tiny_q8_dir).min() >= 0.99999
    lite = export(tiny_q8_dir, "tflite", export_root, "int8", auto=True)
    notes = lite.manifest["quantization"]["notes"]
    assert "no blockwise int8" in notes["feed_forward"]
    cos = drift(lite, tiny_q8_dir)
    print(f"tflite int8 on the Q8_0 fixture (per-channel requantized): cos min {cos.min():.6f}")
    assert cos.min() >= 0.995


def test_non_qat_checkpoint_refused_then_forced_with_warning(tiny_dir, tmp_path, export_root, capsys, caplog):
    status = export_main(["--model", str(tiny_dir), "--target", "onnx", "--recipe", "int4-qat",
                          "--out", str(tmp_path / "refused"), "--skip-parity"])
    err = capsys.readouterr().err
    assert status == 2 and "off the Q4_0 grid" in err and "%" in err
    assert not (tmp_path / "refused").exists()
    with caplog.at_level("WARNING"):
        artifact = export(tiny_dir, "onnx", export_root, "int4-qat", force_grid=True)
    assert "off the Q4_0 grid" in caplog.text and "--force-grid" in caplog.text
    report = artifact.manifest["qat_grid"]
    assert report["forced"] is True and report["off_grid_fraction"] > 0.9


def test_bits4_on_plain_checkpoint_keeps_min_max(tiny_dir, export_root):
    artifact = export(tiny_dir, "onnx", export_root, "int4", auto=True)
    assert artifact.manifest["recipe"]["name"] == "int4"
    assert artifact.manifest["qat_grid"] is None


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_matryoshka_dim_after_exact_grid(tiny_q4_dir, export_root, target):
    artifact = export(tiny_q4_dir, target, export_root, "int4-qat", dim=64)
    assert artifact.embedding_dim == 64
    cos = drift(artifact, tiny_q4_dir, texts=TEXTS[:8], dim=64)
    assert cos.min() >= (0.9999 if target == "onnx" else 0.97)


def test_user_recipe_file_is_used(tiny_dir, tmp_path, export_root):
    recipe = json.loads(json.dumps(load_recipe("int8").to_dict()))
    recipe["name"] = "int8-no-head"
    recipe["rules"]["head"] = {"bits": 32}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(recipe))
    artifact = export(tiny_dir, "onnx", export_root, str(path))
    assert artifact.manifest["recipe"]["name"] == "int8-no-head"
    ops = [n for n in onnx.load(str(artifact.model_path)).graph.node if n.name.startswith("head.")]
    assert ops and all(n.op_type == "MatMul" for n in ops)


def test_presets_are_recipe_files():
    from importlib import resources

    names = {p.name for p in resources.files("embg.quantize.presets").iterdir() if p.name.endswith(".json")}
    assert {"fp32.json", "int8.json", "int4.json", "int4-qat.json", "int8-qat.json"} <= names


def test_grid_recovery_refuses_unknown_state(tiny_dir):
    from embg.quantize.qat import recover_grids

    with pytest.raises(ExportError, match="off the Q4_0 grid"):
        recover_grids(loaded(tiny_dir).state_dict, load_recipe("int4-qat"))
