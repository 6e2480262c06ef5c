"""QAT checkpoints: exact Q4_0/Q8_0 grids carried into both targets, and measured against naive min-max."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from embg.cli.export import main as export_main
from embg.errors import ExportError
from embg.bundle import Artifact
from embg.export.pipeline import ExportRequest, export_bundle
from embg.checkpoint.load import load_model
from embg.quantize import tflite_flatbuffer as fb
from embg.quantize.grids import GRIDS
from embg.quantize.onnx_backend import read_back_weights
from embg.quantize.recipe import load_recipe, recipe_for_bits
from embg.runtimes import load_all, load_runtime
from embg.runtimes.reference import SentenceTransformersReference
from embg.parity.path import embed_texts
from embg.textdata.builtin import parity_texts
from embg.parity.path import cosine_rows

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
    graph = onnx.load(str(artifact.model_path))
    assert not any("block_sum_correction" in t.name for t in graph.graph.initializer)  # ONNX keeps negative scales
    weights = read_back_weights(graph)
    checked = 0
    for name, value in q4_state.items():
        if value.ndim == 2 and not name.startswith("head."):
            scale = np.repeat(np.abs(GRIDS["q4_0"].scales(value).numpy()), 32, axis=1)
            assert (np.abs(weights[name] - value.numpy()) / scale).max() <= 1e-6, name
            checked += 1
    assert checked == 43
    cos = drift(artifact, tiny_q4_dir)
    assert cos.min() >= 0.9999, cos.min()


@pytest.mark.heavy
def test_exact_grid_beats_naive_min_max_on_both_targets(tiny_q4_dir, export_root):
    for target in ("onnx", "tflite"):
        exact = drift(export(tiny_q4_dir, target, export_root, "int4", auto=True), tiny_q4_dir)
        naive = drift(export(tiny_q4_dir, target, export_root, "int4-minmax"), tiny_q4_dir)
        print(f"{target}: exact-grid cos mean {exact.mean():.6f} min {exact.min():.6f}; "
              f"naive int4 cos mean {naive.mean():.6f} min {naive.min():.6f}")
        assert exact.mean() > naive.mean() and exact.min() > naive.min()


def test_tflite_carries_the_q4_0_grid_exactly(tiny_q4_dir, q4_state, export_root):
    """Every Q4_0 weight read back from the .tflite equals the checkpoint's: the embedding as stored
    (EMBEDDING_LOOKUP takes negative scales), each linear weight as its positive-scale int4 tensor
    plus its float block-sum correction (XNNPACK's FULLY_CONNECTED refuses negative scales)."""
    artifact = export(tiny_q4_dir, "tflite", export_root, "int4", auto=True)
    carried = artifact.manifest["qat_grid"]["target"]
    assert carried["exact"] is True and carried["negative_scale_blocks"] > 0
    model = fb.read_model(artifact.model_path)
    subgraph = model.subgraphs[0]
    int4, corrections = [], []
    for use in fb.weight_uses(model):
        if use.subgraph == 0 and use.type in ("INT4", "FLOAT32"):
            values = fb.dequantize(model, subgraph, subgraph.tensors[use.tensor_index])
            (int4 if use.type == "INT4" else corrections).append((use.op, values))
    grid_weights = {n: v.numpy() for n, v in q4_state.items() if v.ndim == 2 and not n.startswith("head.")}
    matched: set[str] = set()
    for op, got in int4:
        readings = [got] + [got + np.repeat(c, 32, axis=1) for _, c in corrections
                            if op == "FULLY_CONNECTED" and c.shape == (got.shape[0], got.shape[1] // 32)]
        hits = {n for n, w in grid_weights.items() if any(r.shape == w.shape and np.array_equal(r, w) for r in readings)}
        assert hits, f"an int4 {op} weight {got.shape} equals no checkpoint weight, with or without a correction"
        matched |= hits
    assert matched == set(grid_weights)
    negative = [n for n, w in grid_weights.items() if "embed" not in n and (GRIDS["q4_0"].scales(torch.from_numpy(w)) < 0).any()]
    assert negative and carried["block_sum_corrections"]["weights"] == len(negative)


def test_litert_int4_qat_is_the_exact_grid_plus_litert_activation_quantization(tiny_q4_dir, q4_state, export_root):
    """What separates LiteRT int4-qat from the checkpoint, simulated in torch on the same grids.

    The grid itself is carried exactly; XNNPACK's bf16 block scales alone keep the embedding above
    0.9999. What LiteRT adds is its per-row dynamic int8 activations on every quantized
    FULLY_CONNECTED (it has no weight-only int4) and a per-channel int8 head (no blockwise int8):
    with those simulated, the torch figure predicts the measured one.
    """
    from embg.quantize.qat import recover_grids

    model = loaded(tiny_q4_dir)
    grids, _ = recover_grids(q4_state, load_recipe("int4-qat"))
    batch = model.tokenizer.encode(TEXTS, prompt="query", max_length=BUCKETS[-1])
    ids, mask = torch.as_tensor(batch.input_ids), torch.as_tensor(batch.attention_mask)
    with torch.no_grad():
        exact = model.graph()(ids, mask).numpy()
        grid_only = litert_simulation(model, grids, activations=False)(ids, mask).numpy()
        float_head = litert_simulation(model, grids, activations=True, head=False)(ids, mask).numpy()
        with_litert = litert_simulation(model, grids, activations=True)(ids, mask).numpy()
    grid_only, float_head, with_litert = (cosine_rows(e, exact) for e in (grid_only, float_head, with_litert))
    measured = drift(export(tiny_q4_dir, "tflite", export_root, "int4", auto=True), tiny_q4_dir)
    print(f"\nLiteRT int4-qat: measured cos min {measured.min():.6f} mean {measured.mean():.6f}; torch simulation: "
          f"grid + bf16 scales {grid_only.min():.6f}, + dynamic int8 activations {float_head.min():.6f}, "
          f"+ int8 head {with_litert.min():.6f}")
    assert grid_only.min() >= 0.9999
    assert abs(measured.min() - with_litert.min()) <= 0.25 * (1 - with_litert.min())
    assert measured.min() >= 0.9995


@pytest.mark.heavy
def test_int4_qat_exact_reaches_the_grid_on_litert(tiny_q4_dir, export_root):
    """``int4-qat-exact``: every linear input in two dynamic int8 passes (the second its rounding
    residual, around XNNPACK's own rows) and a float head take LiteRT to what ONNX's float activations
    give (int4-qat: 0.99966, the torch simulation of this recipe 0.99998); the grids stay exact."""
    tflite = export(tiny_q4_dir, "tflite", export_root, "int4-qat-exact")
    split = tflite.manifest["quantization"]["activation_split"]
    assert split["layers_with_residual_pass"] == 7 * loaded(tiny_q4_dir).spec.config["num_hidden_layers"]
    assert tflite.manifest["qat_grid"]["target"]["exact"] is True
    litert = drift(tflite, tiny_q4_dir)
    onnx_artifact = export(tiny_q4_dir, "onnx", export_root, "int4-qat-exact")
    onnx_drift = drift(onnx_artifact, tiny_q4_dir)
    print(f"\nint4-qat-exact: LiteRT cos min {litert.min():.6f} mean {litert.mean():.6f}; "
          f"ONNX {onnx_drift.min():.6f} / {onnx_drift.mean():.6f}")
    assert litert.min() >= 0.9999 and onnx_drift.min() >= 0.9999


def xnnpack_dynamic_int8(x: torch.Tensor) -> torch.Tensor:
    """XNNPACK's qd8 activations: per row, asymmetric int8 over [min(0, x), max(0, x)]."""
    low, high = x.amin(-1, keepdim=True).clamp(max=0), x.amax(-1, keepdim=True).clamp(min=0)
    scale = ((high - low) / 255).clamp(min=1e-30)
    zero = torch.round(-128 - low / scale).clamp(-128, 127)
    return (torch.clamp(torch.round(x / scale) + zero, -128, 127) - zero) * scale


def litert_simulation(model, grids, activations: bool, head: bool | None = None) -> torch.nn.Module:
    """The export graph as LiteRT runs int4-qat: folded grids with bf16 block scales (XNNPACK's qb4w) and,
    with ``activations``, dynamic int8 inputs to every int4 layer and (unless ``head`` is False) a
    per-channel int8 head."""
    from embg.quantize.negative_scales import BlockSumCorrectedLinear, block_sums, fold_block, fold_negative_scales

    graph = model.graph()
    fold_negative_scales(graph, grids)
    round_inputs = xnnpack_dynamic_int8 if activations else (lambda x: x)
    for name, (q, d) in grids.items():
        layer = graph.get_submodule(name.rpartition(".")[0])
        if not isinstance(layer, BlockSumCorrectedLinear):
            continue  # the embedding table: carried as it is
        q_pos, scales, _ = fold_block(q, d)
        scales = torch.from_numpy(scales).to(torch.bfloat16).to(torch.float32)
        layer.weight.data = (torch.from_numpy(q_pos).float().unflatten(1, (-1, 32)) * scales[..., None]).flatten(1)
        layer.forward = lambda x, layer=layer: (torch.nn.functional.linear(round_inputs(x), layer.weight)
                                                + torch.nn.functional.linear(block_sums(x), layer.block_sum_correction))
    for projection in graph.head if (activations if head is None else head) else ():
        weight = projection.weight.data
        step = weight.abs().amax(dim=1, keepdim=True) / 127
        projection.weight.data = torch.round(weight / step) * step
        projection.register_forward_pre_hook(lambda _, args: (xnnpack_dynamic_int8(args[0]),))
    return graph


def test_negative_scale_blocks_fold_exactly_onto_positive_scales():
    """q' = -q - 1 with |d| plus |d| per block sum is d * q exactly, including the q = -8 weight that
    no int4 sign flip can hold and all-zero blocks (d = 0, also refused by XNNPACK)."""
    from embg.quantize.negative_scales import BlockSumCorrectedLinear, fold_block

    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, size=(6, 128)).astype(np.int8)
    d = rng.normal(scale=0.01, size=(6, 4)).astype(np.float16).astype(np.float32)
    d[0, 0], q[0, :32] = 0.0, 0
    d[1, 1], q[1, 40] = -abs(d[1, 1]), -8
    q_pos, scales, correction = fold_block(q, d)
    assert q_pos.min() >= -8 and q_pos.max() <= 7 and (scales > 0).all()
    want = (q.reshape(6, 4, 32) * d[..., None]).reshape(6, 128)
    assert np.array_equal((q_pos.reshape(6, 4, 32) * scales[..., None] + correction[..., None]).reshape(6, 128), want)
    layer = BlockSumCorrectedLinear(torch.from_numpy((q_pos.reshape(6, 4, 32) * scales[..., None]).reshape(6, 128)),
                                    torch.from_numpy(correction))
    x = torch.randn(2, 5, 128)
    torch.testing.assert_close(layer(x), x @ torch.from_numpy(want).T, rtol=1e-5, atol=1e-6)


def test_block_sum_correction_converts_to_a_float_litert_product(tmp_path):
    """litert-torch turns the corrected layer into FULLY_CONNECTED + SUM + a float FULLY_CONNECTED that
    computes what torch computes (no silent rewrite), and the plan never quantizes the correction."""
    from embg.export.tflite_target import convert_float
    from embg.quantize.negative_scales import BlockSumCorrectedLinear
    from embg.quantize.tflite_backend import plan_quantization
    from embg.runtimes.litert_rt import make_interpreter

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_tokens = torch.nn.Embedding(64, 128)
            self.up_proj = BlockSumCorrectedLinear(torch.randn(48, 128), torch.rand(48, 4))

        def forward(self, input_ids, attention_mask):
            return self.up_proj(self.embed_tokens(input_ids) * attention_mask[..., None].to(torch.float32))

    torch.manual_seed(0)
    graph = Tiny().eval().requires_grad_(False)
    path = tmp_path / "corrected.tflite"
    convert_float(graph, (16,), path)
    ids = torch.arange(16, dtype=torch.int32)[None] * 3 % 64
    mask = torch.ones((1, 16), dtype=torch.int32)
    runner = make_interpreter(path, threads=1)[0].get_signature_runner("seq16")
    got = runner(input_ids=ids.numpy(), attention_mask=mask.numpy())["sentence_embedding"]
    np.testing.assert_allclose(got, graph(ids, mask).numpy(), rtol=1e-5, atol=1e-5)
    model = fb.read_model(path)
    ops = [fb.op_name(model, op) for op in model.subgraphs[0].operators]
    assert ops.count("FULLY_CONNECTED") == 2 and "SUM" in ops
    plan = plan_quantization(model, graph, load_recipe("int4-qat"))
    assert sorted(param for param, _, _ in plan.expected.values()) == ["embed_tokens.weight", "up_proj.weight"]


@pytest.mark.heavy
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


@pytest.mark.parametrize("target", ["onnx", "tflite"])
@pytest.mark.heavy
def test_matryoshka_dim_after_exact_grid(tiny_q4_dir, export_root, target):
    artifact = export(tiny_q4_dir, target, export_root, "int4-qat", dim=64)
    assert artifact.embedding_dim == 64
    cos = drift(artifact, tiny_q4_dir, texts=TEXTS[:8], dim=64)
    assert cos.min() >= (0.9999 if target == "onnx" else 0.9995)


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
    assert {"fp32.json", "int8.json", "int4.json", "int4-minmax.json", "int4-qat.json", "int4-qat-exact.json",
            "int8-qat.json"} <= names


def test_grid_recovery_refuses_unknown_state(tiny_dir):
    from embg.quantize.qat import recover_grids

    with pytest.raises(ExportError, match="off the Q4_0 grid"):
        recover_grids(loaded(tiny_dir).state_dict, load_recipe("int4-qat"))
