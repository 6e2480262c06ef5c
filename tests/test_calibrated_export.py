"""Calibrated int4 through both targets on the tiny-outliers fixture (real-model-like activations):
``--bits 4`` resolves to it and says why, its integers and scales reach both files exactly, it beats
min-max int4, and block-64 embedding tables are looked up exactly by both runtimes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from embg.cli.export import main as export_main
from embg.bundle import Artifact
from embg.export.pipeline import ExportRequest, export_bundle
from embg.checkpoint.load import load_model
from embg.quantize.rotation import rotate_for
from embg.quantize import tflite_flatbuffer as fb
from embg.quantize.calibrate import calibrate_grids
from embg.quantize.calibration_texts import batches_for, calibration_split
from embg.quantize.int4_blocks import dequantize, is_storable
from embg.quantize.onnx_backend import read_back_weights
from embg.quantize.recipe import load_recipe, parse_recipe
from embg.runtimes import load_all, load_runtime
from embg.runtimes.reference import SentenceTransformersReference
from embg.parity.path import cosine_rows, embed_texts
from embg.textdata.builtin import parity_texts
from tests.conftest import _fixture

TEXTS = parity_texts()
BUCKETS = (64, 256)
_BUNDLES: dict[tuple, Artifact] = {}


@pytest.fixture(scope="module")
def outliers_dir(fixture_root):
    return _fixture(fixture_root, "tiny-outliers")


@pytest.fixture(scope="module")
def outliers(outliers_dir):
    return load_model(str(outliers_dir))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    _BUNDLES.clear()
    return tmp_path_factory.mktemp("calibrated")


@pytest.fixture(scope="module")
def grids(outliers):
    """The int4 preset's grids, computed directly (the exports below must reproduce them bit for bit)."""
    calibration, _ = calibration_split()
    graph, recipe = outliers.graph(), load_recipe("int4")
    rotate_for(graph, recipe)  # as the exporter does before calibrating
    grids, report = calibrate_grids(graph, recipe, batches_for(outliers.tokenizer, calibration))
    assert report["weights"] == len(grids) > 0
    return grids


def export(model_dir, target, root, recipe, **request):
    key = (target, recipe if isinstance(recipe, str) else json.dumps(recipe.to_dict()))
    if key not in _BUNDLES:
        recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
        out = root / f"b{len(_BUNDLES)}"
        _BUNDLES[key] = Artifact.load(export_bundle(ExportRequest(
            model=str(model_dir), target=target, recipe=recipe, out=out, parity=False,
            seq_lens=BUCKETS if target == "tflite" else (), **request)))
    return _BUNDLES[key]


def drift(artifact, model_dir, tokenizer):
    load_all()
    runtime = load_runtime(artifact.manifest["runtime"], artifact, threads=1)
    ours = embed_texts(runtime, tokenizer, TEXTS, "query")
    reference = SentenceTransformersReference(model_dir)
    return cosine_rows(ours, reference.encode(TEXTS, prompt_name="query", max_length=runtime.max_length or 2048))


def tflite_int4_weights(artifact) -> list[tuple[np.ndarray, np.ndarray]]:
    """(dequantized weight, raw block scales) of every INT4 tensor in the first signature."""
    model = fb.read_model(artifact.model_path)
    subgraph = model.subgraphs[0]
    found = []
    for use in fb.weight_uses(model):
        if use.subgraph == 0 and use.type == "INT4":
            tensor = subgraph.tensors[use.tensor_index]
            scales = fb.int_values(model, subgraph.tensors[tensor.quantization.details.scales]).astype(np.float32)
            found.append((fb.dequantize(model, subgraph, tensor), scales))
    return found


def test_bits4_resolves_to_calibrated_and_prints_why(outliers_dir, root, capsys):
    out = root / "cli-bits4"
    status = export_main(["--model", str(outliers_dir), "--target", "onnx", "--bits", "4", "--out", str(out),
                          "--skip-parity"])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "calibrated int4 measured better" in err and "held-out texts" in err and "using recipe int4" in err
    manifest = Artifact.load(out).manifest
    assert manifest["recipe"]["name"] == "int4" and manifest["qat_grid"] is None
    choice = manifest["calibration"]["choice"]
    assert choice["chosen"] == "int4"
    assert choice["calibrated"]["cosine_mean"] > choice["minmax"]["cosine_mean"]
    assert manifest["calibration"]["target"]["exact"] is True
    _BUNDLES[("onnx", "int4")] = Artifact.load(out)


def test_calibrated_grids_reach_onnx_exactly(outliers_dir, root, grids):
    artifact = export(outliers_dir, "onnx", root, "int4")
    model = onnx.load(str(artifact.model_path))
    weights = read_back_weights(model)
    for name, (q, scales) in grids.items():
        assert np.array_equal(weights[name], dequantize(torch.from_numpy(q), torch.from_numpy(scales)).numpy()), name
    # the embedding's integers as uint8 pairs (bits 4, zero point 8), which onnxruntime gathers 5x faster
    # than an INT4 tensor; read back above as exactly the calibrated grid
    (gather,) = [n for n in model.graph.node if n.op_type == "GatherBlockQuantized"]
    data = next(i for i in model.graph.initializer if i.name == gather.input[0])
    assert data.data_type == onnx.TensorProto.UINT8 and {a.name: a.i for a in gather.attribute}["bits"] == 4
    assert list(data.dims) == [grids["embed_tokens.weight"][0].shape[0], grids["embed_tokens.weight"][0].shape[1] // 2]
    # one stored scale tensor per calibrated grid: "{weight}_scales" (the embedding's GatherBlockQuantized) or
    # "{weight}_block_scales" (a block weight stored int4, widened to int8 at load); the weight-only head has its own
    stored = {}
    for init in model.graph.initializer:
        weight = init.name.removesuffix("_block_scales").removesuffix("_scales")
        if weight != init.name and weight in grids:
            stored[weight] = onnx.numpy_helper.to_array(init)
    assert len(stored) == len(grids) and all(is_storable(torch.from_numpy(s.copy())) for s in stored.values())
    # bf16 scales are float16 numbers: stored at half the bytes of float32 (6.3 MB less for the real table)
    assert {s.dtype for s in stored.values()} == {np.dtype(np.float16)}
    assert [n.op_type for n in model.graph.node if gather.output[0] in n.input] == ["Cast"]


def test_float16_scales_give_the_same_numbers():
    """Scales are stored float16 only when that keeps every number, and the gathered rows stay exact."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from embg.quantize.int4_blocks import quantize_rows
    from embg.quantize.onnx_backend import _embedding_gbq, _gbq_output_is_exact_in_fp16, scales_as_stored

    generator = torch.Generator().manual_seed(0)
    table = torch.randn(512, 128, generator=generator) * 0.05
    q, scales = (a.numpy() for a in quantize_rows(table, 64, "mse"))
    assert scales_as_stored(scales).dtype == np.float16  # bf16 values
    assert scales_as_stored(np.array([0.1], np.float32)).dtype == np.float32  # min-max scales: not float16
    assert _gbq_output_is_exact_in_fp16(q, scales)
    fp16_only = np.array([[1 + 2 ** -10]], np.float16)  # 11 significant bits: x 7 needs 14
    assert not _gbq_output_is_exact_in_fp16(np.array([[7]]), fp16_only)
    assert not _gbq_output_is_exact_in_fp16(np.array([[100]]), scales)  # int8 values
    assert not _gbq_output_is_exact_in_fp16(np.array([[7]]), np.array([[16384.0]], np.float32))  # x 8 overflows
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["rows"], name="embed/Gather")], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["b", "s", 128])],
                              [numpy_helper.from_array(table.numpy(), "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    _embedding_gbq(model, model.graph.node[0], q, scales, 4, 64)
    assert {i.name: i.data_type for i in model.graph.initializer}["table_scales"] == TensorProto.FLOAT16
    ids = np.random.default_rng(0).integers(0, 512, (3, 40))
    rows = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    assert rows.dtype == np.float32
    assert np.array_equal(rows, (q.astype(np.float32) * np.repeat(scales, 64, axis=1))[ids])


def test_calibrated_grids_reach_tflite_exactly(outliers_dir, root, grids):
    artifact = export(outliers_dir, "tflite", root, "int4")
    found = tflite_int4_weights(artifact)
    assert len(found) == len(grids)
    expected = [dequantize(torch.from_numpy(q), torch.from_numpy(s)).numpy() for q, s in grids.values()]
    for weight, scales in found:
        assert is_storable(torch.from_numpy(scales))  # positive, bf16: XNNPACK keeps them as written
        assert any(w.shape == weight.shape and np.array_equal(w, weight) for w in expected)
    assert artifact.manifest["calibration"]["target"]["exact"] is True


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_calibrated_beats_min_max(outliers_dir, outliers, root, target):
    calibrated = drift(export(outliers_dir, target, root, "int4"), outliers_dir, outliers.tokenizer)
    plain = drift(export(outliers_dir, target, root, "int4-minmax"), outliers_dir, outliers.tokenizer)
    print(f"\n{target} tiny-outliers int4: calibrated cos min {calibrated.min():.4f} mean {calibrated.mean():.4f}; "
          f"min-max min {plain.min():.4f} mean {plain.mean():.4f}")
    assert calibrated.mean() > plain.mean() and calibrated.min() > plain.min()


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_block64_embedding_is_looked_up_exactly(outliers_dir, outliers, root, target):
    """Only the table quantized (block 64, MSE-clipped): the runtime must equal the float graph holding
    the same dequantized table, so the runtime reads block-64 scales right."""
    rules = {g: {"bits": 32} for g in ("attention", "projections", "feed_forward", "head")}
    rules["embedding"] = {"bits": 4, "granularity": "block", "block_size": 64, "algorithm": "mse-clip"}
    recipe = parse_recipe({"name": "emb64", "rules": rules})
    artifact = export(outliers_dir, target, root, recipe)
    graph = outliers.graph()
    (q, scales), = calibrate_grids(graph, recipe, [])[0].values()
    assert scales.shape[1] * 64 == q.shape[1]
    with torch.no_grad():
        graph.embed_tokens.weight.copy_(dequantize(torch.from_numpy(q), torch.from_numpy(scales)))
    load_all()
    runtime = load_runtime(artifact.manifest["runtime"], artifact, threads=1)
    batch = outliers.tokenizer.encode(TEXTS[:8], prompt="query", max_length=64)
    ours = runtime.embed(batch.input_ids, batch.attention_mask)
    with torch.no_grad():
        expected = graph(torch.as_tensor(batch.input_ids), torch.as_tensor(batch.attention_mask)).numpy()
    assert cosine_rows(ours, expected).min() >= 0.99999


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[n][0], b[n][0]) and np.array_equal(a[n][1], b[n][1])
                                        for n in a)


def test_calibration_is_deterministic_and_cached_exactly(outliers, monkeypatch, tmp_path):
    batches = batches_for(outliers.tokenizer, calibration_split()[0])[:4]
    recipe = load_recipe("int4")
    monkeypatch.setenv("EMBG_CALIBRATION_CACHE", "off")
    first, report = calibrate_grids(outliers.graph(), recipe, batches)
    second, _ = calibrate_grids(outliers.graph(), recipe, batches)
    assert _same(first, second) and "cached" not in report
    monkeypatch.setenv("EMBG_CALIBRATION_CACHE", str(tmp_path))
    stored, _ = calibrate_grids(outliers.graph(), recipe, batches)
    loaded, report = calibrate_grids(outliers.graph(), recipe, batches)
    assert report["cached"] is True and _same(first, stored) and _same(first, loaded)
    other, report = calibrate_grids(outliers.graph(), recipe, batches[:3])  # other texts: a new entry
    assert "cached" not in report and len(list(tmp_path.iterdir())) == 2


def _calibration(model):
    return lambda: batches_for(model.tokenizer, calibration_split()[0])


@pytest.mark.parametrize("target", ["onnx", "tflite"])
@pytest.mark.heavy
def test_rotated_bundle_carries_its_rotations_in_float(outliers_dir, outliers, root, target):
    """int4-rotated's rotations (embg/quantize/rotation.py) are in the file once, as float32, the manifest
    says which, and its calibrated grids reach the file exactly (read back on the rotated weights). On
    this fixture the guard keeps every down_proj input unrotated (embg/quantize/down_guard.py), so the
    model stays whole: rotating them collapsed it to cosine mean 0.61 (test_export_warns_... below)."""
    artifact = export(outliers_dir, target, root, "int4-rotated")
    assert artifact.manifest["calibration"]["target"]["exact"] is True
    rotation = artifact.manifest["rotation"]
    assert rotation["table"] is True and rotation["block"] in (16, 32, 64, 128)
    assert rotation["down"] is False and rotation["down_layers"] == []
    assert min(rotation["down_guard"]["error_ratio"]) > 10
    graph = load_model(str(outliers_dir)).graph()
    rotate_for(graph, load_recipe("int4-rotated"), _calibration(outliers))
    hadamards = {n: v.numpy() for n, v in graph.state_dict().items() if n.endswith("rotation")}
    if target == "onnx":
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(artifact.model_path)).graph.initializer
                 if i.name.endswith("rotation")}
        assert len(inits) <= 2  # the decoder's block and the table's (one when they are equal), not one per layer
        assert all(i.dtype == np.float32 for i in inits.values())
        assert {v.tobytes() for v in inits.values()} == {v.tobytes() for v in hadamards.values()}
    else:
        from embg.export.completeness import check_float_terms_tflite

        assert check_float_terms_tflite(artifact.model_path, graph) == len(hadamards)
    cosine = drift(artifact, outliers_dir, outliers.tokenizer)
    assert cosine.min() > 0.95 and cosine.mean() > 0.98  # measured 0.970 / 0.987 on both targets


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_int8_rotated_keeps_no_float_channels_and_guards_down_proj(outliers_dir, outliers, root, target):
    """int8-rotated: q/k/v, o and gate/up inputs rotated, down_proj's where the guard measures it better
    (on the real checkpoint every layer, tests/test_real_rotated.py; on this fixture, whose down_proj
    writes into a residual channel with norm gain ~9e4, none), the Hadamard factors in the file once, as
    float32, no float channels."""
    recipe = load_recipe("int8-rotated")
    assert recipe.rotation == {"block": 128, "table": False, "down": "auto"}
    assert recipe.float_channels_on(target) == 0 and not recipe.residual_pass_on(target)
    artifact = export(outliers_dir, target, root, "int8-rotated")
    rotation = artifact.manifest["rotation"]
    assert rotation["down_layers"] == [] and rotation["table"] is False
    graph = outliers.graph()
    rotate_for(graph, recipe, _calibration(outliers))
    assert isinstance(graph.layers[0].mlp.rotate_hidden, torch.nn.Identity)
    if target == "tflite":
        from embg.export.completeness import check_float_terms_tflite

        rotations = [name for name in graph.state_dict() if name.endswith("rotation")]  # one module, many names
        # two inputs per layer, each rotation stored as its two Kronecker factors (hadamard.block_hadamard)
        assert check_float_terms_tflite(artifact.model_path, graph) == len(rotations) == 2 * 2 * len(graph.layers)
    else:
        inits = [i for i in onnx.load(str(artifact.model_path)).graph.initializer if i.name.endswith("rotation")]
        # the fixture's 64-wide blocks factor as H_8 (x) H_8: one constant for every rotation in the file
        assert len(inits) == 1 and inits[0].data_type == onnx.TensorProto.FLOAT
    cosine = drift(artifact, outliers_dir, outliers.tokenizer)
    assert cosine.min() > 0.995  # 0.9979 / 0.9981 export parity; down_proj rotated everywhere: mean 0.63


@pytest.mark.heavy
def test_export_warns_when_parity_is_under_the_validator_gate(outliers_dir, tmp_path, capsys):
    """int4-rotated with down_proj's input rotated in every layer (``"down": true``, no guard) collapses on
    the outlier fixture (down_proj writes into a channel with norm gain ~9e4): the bundle is written, and
    embg-export says at once that it will fail embg-validate."""
    from embg.validate.thresholds import parity_shortfalls

    forced = load_recipe("int4-rotated").to_dict()
    forced["rotation"]["down"] = True
    (tmp_path / "forced.json").write_text(json.dumps(forced))
    out = tmp_path / "rotated"
    assert export_main(["--model", str(outliers_dir), "--target", "onnx", "--recipe", str(tmp_path / "forced.json"),
                        "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parity"]["cosine_mean"] < 0.9
    assert parity_shortfalls(manifest) and "WARNING: parity" in capsys.readouterr().err
    good = {**manifest, "parity": {"cosine_min": 0.99, "cosine_mean": 0.995}}
    assert parity_shortfalls(good) == [] and parity_shortfalls({**manifest, "parity": None}) == []
