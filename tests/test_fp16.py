"""The fp16-safe graph (issue 17) on the tiny-outliers fixture, whose residual passes fp16's 65504:

* the plain graph in fp16 gives NaN/inf; the fp16-safe graph in fp16 matches sentence-transformers,
  alone and in padded batches, and its float32 function is the plain graph's;
* no intermediate of the rewritten graph (the squares inside RMSNorm included) reaches 65504 / 4;
* ``--bits 16``: ONNX computes in fp16 (value types checked) and matches; TFLite stores fp16 weights;
* fp16 precision is accepted only for bundles marked fp16-safe; everything else stays refused.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from embg.errors import EmbgError
from embg.bundle import Artifact
from embg.export.pipeline import ExportRequest, export_bundle
from embg.model.fp16_safe import FP16_LIMIT, make_fp16_safe, to_half
from embg.quantize.recipe import GROUPS, load_recipe, parse_recipe, recipe_for_bits
from embg.textdata.builtin import parity_texts
from embg.parity.path import cosine_rows
from tests.conftest import _fixture, run_cli

SCALE = load_recipe("fp16").fp16_safe["residual_scale"]
BUCKETS = (64, 256)


@pytest.fixture(scope="module")
def outliers(fixture_root):
    from embg.checkpoint.load import load_model

    return load_model(str(_fixture(fixture_root, "tiny-outliers")))


@pytest.fixture(scope="module")
def reference(outliers):
    from embg.runtimes.reference import SentenceTransformersReference

    return SentenceTransformersReference(outliers.spec.directory)


@pytest.fixture(scope="module")
def alone(outliers):
    """Each parity text alone (query prompt): (ids, mask) rows."""
    rows = []
    for text in parity_texts():
        encoded = outliers.tokenizer.encode([text], prompt="query", max_length=256)
        rows.append((encoded.input_ids, encoded.attention_mask))
    return rows


@pytest.fixture(scope="module")
def padded(outliers):
    """Every parity text in one batch padded to the longest (256 tokens): padding wider than the window."""
    encoded = outliers.tokenizer.encode(parity_texts(), prompt="query", max_length=256)
    assert encoded.attention_mask.sum(1).min() < encoded.input_ids.shape[1] - outliers.spec.config["sliding_window"]
    return encoded.input_ids, encoded.attention_mask


def run(graph, ids, mask) -> np.ndarray:
    with torch.no_grad():
        return graph(torch.as_tensor(ids), torch.as_tensor(mask)).numpy()


def safe_graph(model):
    graph = model.graph()
    make_fp16_safe(graph, SCALE)
    return graph


# ------------------------------------------------------------------ the rewritten graph in torch

def test_fp16_safe_keeps_fp32_function(outliers, padded):
    plain, safe = run(outliers.graph(), *padded), run(safe_graph(outliers), *padded)
    cos = cosine_rows(safe, plain)
    print(f"fp32 fp16-safe vs plain: cosine min {cos.min():.9f}, max |diff| {np.abs(safe - plain).max():.2g}")
    assert cos.min() >= 0.999999 and np.abs(safe - plain).max() < 1e-5


def test_plain_fp16_overflows_where_fp16_safe_matches_reference(outliers, reference, alone, padded):
    from embg.model.intermediates import measure

    ref = np.concatenate([reference.embed(ids, mask) for ids, mask in alone])
    plain_half = to_half(outliers.graph(), require_safe=False)
    outputs: list[torch.Tensor] = []
    overflow = measure(plain_half, [(torch.as_tensor(i), torch.as_tensor(m)) for i, m in alone], outputs=outputs)
    plain = torch.cat(outputs).numpy()
    broken = ~np.isfinite(plain).all(-1) | (np.nan_to_num(cosine_rows(plain, ref)) < 0.999)
    safe_half = to_half(safe_graph(outliers))
    assert next(safe_half.parameters()).dtype == torch.float16
    ours_alone = np.concatenate([run(safe_half, ids, mask) for ids, mask in alone])
    ours_padded = run(safe_half, *padded)
    cos_alone, cos_padded = cosine_rows(ours_alone, ref), cosine_rows(ours_padded, ref)
    print(f"torch fp16: plain graph inf in {sum(v == float('inf') for v in overflow.per_layer())} layers, "
          f"{int(broken.sum())}/{len(plain)} embeddings NaN/inf or off; fp16-safe cosine min alone "
          f"{cos_alone.min():.6f}, padded batch {cos_padded.min():.6f}")
    # fp16 squares in the plain RMSNorm overflow to inf from the first layer (x^2 of a 1e4 residual)
    assert overflow.per_layer("norm_squares")[0] == float("inf") and broken.any()
    assert np.isfinite(ours_alone).all() and np.isfinite(ours_padded).all()
    assert cos_alone.min() >= 0.999 and cos_padded.min() >= 0.999


def test_to_half_refuses_the_plain_graph(outliers):
    with pytest.raises(ValueError, match="fp16-safe"):
        to_half(outliers.graph())


def test_no_intermediate_reaches_the_margin(outliers, padded):
    from embg.model.intermediates import measure

    ids, mask = (torch.as_tensor(a) for a in padded)
    plain = measure(outliers.graph(), [(ids, mask)])
    safe = measure(safe_graph(outliers), [(ids, mask)])
    print("largest intermediate per layer, plain:", " ".join(f"{v:.3g}" for v in plain.per_layer()))
    print("largest intermediate per layer, fp16-safe:", " ".join(f"{v:.3g}" for v in safe.per_layer()), safe.outer)
    assert plain.overall > 65504  # the fixture does overflow, so the check below means something
    assert safe.overall < FP16_LIMIT and max(safe.per_layer()) < FP16_LIMIT
    assert max(safe.per_layer("norm_squares")) <= 1.0  # squares of x / max|x|


def test_restated_rmsnorm_keeps_squares_in_range():
    """Every op inside one norm, observed in fp16 on a row holding 3e4 (x^2 = 9e8): the restated norm
    equals the float32 norm, its squares and mean stay <= 1 and nothing exceeds its input; the plain
    norm's squares overflow."""
    from torch.overrides import TorchFunctionMode

    from embg.model.graph import RMSNorm

    class Largest(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.top: dict[str, float] = {}

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if torch.is_tensor(out) and out.is_floating_point():
                with torch._C.DisableTorchFunction():
                    name = getattr(func, "__name__", str(func))
                    self.top[name] = max(self.top.get(name, 0.0), float(out.float().abs().max()))
            return out

    x = torch.randn(4, 256) * 3
    x[:, 7] = 3.0e4
    norm = RMSNorm(256, 1e-6).requires_grad_(False)
    torch.nn.init.normal_(norm.weight, std=0.3)
    expected = norm(x)
    norm.weight.copy_(norm.gain())
    norm.unit_offset, norm.row_scaled = 0.0, True
    assert torch.allclose(norm(x), expected, rtol=1e-6, atol=1e-6)
    with Largest() as seen:
        out = copy.deepcopy(norm).half()(x.half())
    print("restated, fp16:", seen.top)
    assert max(seen.top.values()) <= 3.0e4 and seen.top["pow"] <= 1.0 and seen.top["mean"] <= 1.0
    assert torch.allclose(out.float(), expected, rtol=2e-3, atol=2e-3)
    with Largest() as seen_plain:
        RMSNorm(256, 1e-6).requires_grad_(False).half()(x.half())
    print("plain, fp16:", seen_plain.top)
    assert seen_plain.top["pow"] > 65504  # 3e4 squared: inf in fp16


# ------------------------------------------------------------------ recipes

def test_bits_16_resolves_to_the_fp16_safe_preset():
    recipe = recipe_for_bits(16)
    assert recipe.name == "fp16" and recipe.is_fp16 and recipe.fp16_safe == {"residual_scale": SCALE}
    assert "fp16_safe" in recipe.summary()


@pytest.mark.parametrize("change, message", [
    ({"fp16_safe": None}, "refused without \"fp16_safe\""),
    ({"fp16_safe": {"residual_scale": 0.1}}, "power of two"),
    ({"fp16_safe": {"residual_scale": 2.0}}, "power of two"),
    ({"fp16_safe": {"residual_scale": 0.0625, "margin": 4}}, "unknown field"),
    ({"fp16_safe": 0.0625}, "object"),
    ({"rules": {"feed_forward": {"bits": 8, "granularity": "channel"}}}, "every group"),
    ({"rules": {"head": {"bits": 16, "granularity": "channel"}}}, "conflict"),
    ({"activations": "fp16"}, "overflow"),
])
def test_fp16_recipe_mistakes_refused(change, message):
    data = load_recipe("fp16").to_dict()
    for key, value in change.items():
        if key == "rules":
            data["rules"].update(value)
        elif value is None:
            data.pop(key)
        else:
            data[key] = value
    with pytest.raises(EmbgError, match=message):
        parse_recipe(data)


def test_fp16_safe_composes_with_integer_recipes():
    for name in ("int8", "int4", "int4-qat", "fp32"):
        data = {**load_recipe(name).to_dict(), "fp16_safe": {"residual_scale": SCALE}}
        assert parse_recipe(data).fp16_safe == {"residual_scale": SCALE}
    with pytest.raises(EmbgError, match="smoothing conflicts"):
        parse_recipe({**load_recipe("fp16").to_dict(), "smoothing": {"alpha": 0.5}})


# ------------------------------------------------------------------ bundles

@pytest.fixture(scope="module")
def bundles(outliers, tmp_path_factory, tiny_bundle):
    root = tmp_path_factory.mktemp("fp16")
    made = {("tflite", "fp32"): tiny_bundle("tflite", 32, BUCKETS)}  # tiny: same architecture, plain graph
    # smoothing (no longer in the int8 preset) asked for explicitly: the two rewrites must compose
    int8_safe = parse_recipe({**load_recipe("int8").to_dict(), "name": "int8-fp16safe",
                              "smoothing": {"alpha": 0.8}, "fp16_safe": {"residual_scale": SCALE}})
    for target, name, recipe in (("onnx", "fp16", recipe_for_bits(16)), ("tflite", "fp16", recipe_for_bits(16)),
                                 ("onnx", "int8-safe", int8_safe)):
        made[target, name] = export_bundle(ExportRequest(
            model=str(outliers.spec.directory), target=target, recipe=recipe,
            seq_lens=BUCKETS if target == "tflite" else (), out=root / f"{target}-{name}"))
    return made


def manifest(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


@pytest.mark.heavy
def test_onnx_bits_16_computes_in_fp16_and_matches(bundles, outliers, reference, padded):
    import onnx
    from onnx import TensorProto

    from embg.export.onnx_fp16 import value_types
    from embg.runtimes.onnxruntime_rt import OnnxRuntime

    bundle = bundles["onnx", "fp16"]
    found = manifest(bundle)
    assert found["activation_precision"]["required"] == "fp16-safe"
    assert found["activation_precision"]["file_activations"] == "fp16"
    assert found["activation_precision"]["max_intermediate"] < FP16_LIMIT
    assert found["parity"]["nonfinite"] == 0 and found["parity"]["cosine_min"] >= 0.999, found["parity"]
    model = onnx.load(str(bundle / found["model_file"]))
    types = value_types(model)
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert matmuls and all(types[n.output[0]] == TensorProto.FLOAT16 for n in matmuls)
    assert all(types[n.input[0]] == TensorProto.FLOAT16 for n in model.graph.node if n.op_type == "Softmax")
    assert {types[i.name] for i in model.graph.input} == {TensorProto.INT64}
    assert [types[o.name] for o in model.graph.output] == [TensorProto.FLOAT]
    runtime = OnnxRuntime(Artifact.load(bundle), threads=1)
    ours = runtime.embed(*padded)
    ref = reference.embed(*padded)
    cos = cosine_rows(ours, ref)
    print(f"onnxruntime fp16, one padded batch: cosine min {cos.min():.6f}")
    assert ours.dtype == np.float32 and np.isfinite(ours).all() and cos.min() >= 0.999


@pytest.mark.heavy
def test_tflite_bits_16_stores_fp16_weights(bundles):
    fp16, fp32 = manifest(bundles["tflite", "fp16"]), manifest(bundles["tflite", "fp32"])
    tensors = fp16["quantization"]["tensors"]
    print("tflite fp16:", tensors, fp16["size_bytes"], "bytes vs fp32", fp32["size_bytes"])
    assert set(tensors) == {"FLOAT16"} and tensors["FLOAT16"] > 0
    assert fp16["size_bytes"] < 0.6 * fp32["size_bytes"]
    assert fp16["activation_precision"]["required"] == "fp16-safe"
    assert fp16["activation_precision"]["file_activations"] == "fp32"  # LiteRT's CPU: fp16 only on a GPU
    assert fp32["activation_precision"]["required"] == "fp32"
    assert fp16["parity"]["nonfinite"] == 0 and fp16["parity"]["cosine_min"] >= 0.999


@pytest.mark.heavy
def test_integer_recipe_with_fp16_safe_is_marked(bundles):
    found = manifest(bundles["onnx", "int8-safe"])
    assert found["activation_precision"]["required"] == "fp16-safe"
    assert found["smoothing"] and found["parity"]["cosine_min"] >= 0.995


@pytest.mark.heavy
def test_cli_bits_16_exports(outliers, tmp_path):
    from embg.cli.export import main

    code, out, err = run_cli(main, ["--model", outliers.spec.directory, "--target", "onnx", "--bits", "16",
                                    "--out", tmp_path / "b", "--skip-parity"])
    assert code == 0, err
    assert "fp16_safe" in err and manifest(tmp_path / "b")["recipe"]["name"] == "fp16"


# ------------------------------------------------------------------ runtimes: fp16 only where safe

@pytest.mark.heavy
def test_litert_fp16_precision_only_for_fp16_safe_bundles(bundles, monkeypatch):
    from embg.runtimes import litert_rt
    from embg.runtimes.litert_rt import LiteRtRuntime

    plain = Artifact.load(bundles["tflite", "fp32"])
    for kwargs in ({"accelerator": "gpu"}, {"accelerator": "gpu", "precision": "fp16"}):
        with pytest.raises(EmbgError, match="refused"):
            LiteRtRuntime(plain, threads=1, api="compiled", **kwargs)
    loads = []
    monkeypatch.setattr(LiteRtRuntime, "_load_compiled",
                        staticmethod(lambda path, threads, accelerator="cpu", cache=None, model_sha256="",
                                            enforce_f32=True:
                                     loads.append((accelerator, enforce_f32))))
    safe = Artifact.load(bundles["tflite", "fp16"])
    assert litert_rt.fp16_safe_bundle(safe) and not litert_rt.fp16_safe_bundle(plain)
    LiteRtRuntime(safe, threads=1, api="compiled", accelerator="gpu", precision="fp16")
    LiteRtRuntime(safe, threads=1, api="compiled", accelerator="gpu")
    LiteRtRuntime(safe, threads=1, api="compiled", accelerator="gpu", precision="fp32")
    assert loads == [("gpu", False), ("gpu", False), ("gpu", True)]
    with pytest.raises(EmbgError, match="accelerator=gpu"):
        LiteRtRuntime(safe, threads=1, api="compiled", accelerator="cpu", precision="fp16")


@pytest.mark.heavy
def test_validator_sees_fp16_headroom_in_an_fp16_bundle(bundles, outliers):
    from embg.validate.activations import FP16_MAX, activation_report

    found = activation_report(Artifact.load(bundles["onnx", "fp16"]), outliers.tokenizer)
    print({k: v for k, v in found.items() if k != "per_layer"})
    assert not found["fp16_unsafe"] and found["fp16_headroom"] > 4
    assert 0 < found["activation_max"] < FP16_MAX / 4 and len(found["per_layer"]) == outliers.spec.config["num_hidden_layers"]
