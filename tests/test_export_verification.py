"""An export fails, and leaves nothing behind, whenever the written file is not what the recipe and the
model say: a weight the planner did not see (a Gemm head), a weight a quantizer skipped, NaN output,
a file that did not shrink, any failure while the bundle directory is being written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from embg.errors import ExportError
from embg.export.pipeline import ExportRequest, export_bundle
from embg.quantize.recipe import QuantRecipe, load_recipe, parse_recipe, recipe_for_bits


def _export(tiny_dir: Path, out: Path, target: str = "onnx", bits: int = 8, parity: bool = False,
            recipe: QuantRecipe | None = None) -> Path:
    return export_bundle(ExportRequest(model=str(tiny_dir), target=target, recipe=recipe or recipe_for_bits(bits),
                                       out=out, seq_lens=(32,) if target == "tflite" else (), parity=parity))


def _nothing_written(out: Path) -> None:
    assert not out.exists(), f"{out} was created by a failed export"
    assert not list(out.parent.glob(f".{out.name}.*")), "a temporary directory was left behind"


def _tree_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.mark.heavy
def test_a_gemm_head_left_in_float_fails_the_export(tiny_dir, tmp_path, monkeypatch):
    """nn.Linear on the pooled 2-D tensor exports as Gemm, which the ONNX planner never sees: the plan
    check passed such a file with the head in float32; the check against the model refuses it."""
    import onnx

    from embg.model import graph

    monkeypatch.setattr(graph.MatMulHead, "forward", lambda self, x: torch.nn.functional.linear(x, self.weight))
    fp32 = _export(tiny_dir, tmp_path / "fp32", bits=32)  # control: the head really is a Gemm now
    assert "Gemm" in {node.op_type for node in onnx.load(str(next(fp32.glob("*.onnx")))).graph.node}
    out = tmp_path / "int8"
    # the int8 preset keeps the head float on purpose; this recipe asks for it in int8
    data = load_recipe("int8").to_dict()
    data["rules"]["head"] = {"bits": 8, "granularity": "channel"}
    head_int8 = parse_recipe({**data, "name": "int8-head"})
    with pytest.raises(ExportError, match=r"still float32 in the file: head\.0\.weight \(head\), head\.1\.weight"):
        _export(tiny_dir, out, recipe=head_int8)
    _nothing_written(out)


def test_a_weight_the_onnx_quantizer_skipped_fails_the_export(tiny_dir, tmp_path, monkeypatch):
    from embg.quantize import onnx_backend

    seen = onnx_backend.weight_nodes

    def blind(model):  # a planner that does not see one feed-forward matrix
        return {n: v for n, v in seen(model).items() if v[0] != "layers.0.mlp.down_proj.weight"}

    monkeypatch.setattr(onnx_backend, "weight_nodes", blind)
    out = tmp_path / "int4"
    with pytest.raises(ExportError, match=r"layers\.0\.mlp\.down_proj\.weight \(feed_forward\)"):
        _export(tiny_dir, out, bits=4)
    _nothing_written(out)


def test_a_weight_the_litert_planner_does_not_see_fails_the_export(tiny_dir, tmp_path, monkeypatch):
    """EMBEDDING_LOOKUP hidden from the planner: the table stays float32 and used to pass its plan check."""
    from embg.quantize import tflite_flatbuffer

    seen = tflite_flatbuffer.weight_uses
    monkeypatch.setattr(tflite_flatbuffer, "weight_uses",
                        lambda model: [u for u in seen(model) if u.op != "EMBEDDING_LOOKUP"])
    out = tmp_path / "tflite-int8"
    with pytest.raises(ExportError, match=r"never planned for quantization: embed_tokens\.weight \(embedding\)"):
        _export(tiny_dir, out, target="tflite")
    _nothing_written(out)


def test_nan_output_fails_the_export(tiny_dir, tmp_path, monkeypatch):
    from embg.checkpoint.load import LoadedModel

    build = LoadedModel.graph

    def poisoned(self, output_dim=None):
        graph = build(self, output_dim)
        graph.norm.weight.data[0] = float("nan")  # one channel of the final norm: every embedding is NaN
        return graph

    monkeypatch.setattr(LoadedModel, "graph", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(ExportError, match=r"NaN/inf"):
        _export(tiny_dir, out, bits=32, parity=True)
    _nothing_written(out)


def test_a_quantized_file_that_did_not_shrink_fails_the_export(tiny_dir, tmp_path, monkeypatch):
    from onnx import numpy_helper

    from embg.export.onnx_target import model_nbytes
    from embg.quantize import onnx_backend

    quantize = onnx_backend.quantize_onnx_model

    def bloated(model, *args, **kwargs):  # quantizes, then carries as many float bytes as before
        before = model_nbytes(model)
        model, plan = quantize(model, *args, **kwargs)
        model.graph.initializer.append(numpy_helper.from_array(np.zeros(before // 4, np.float32), "padding"))
        return model, plan

    monkeypatch.setattr(onnx_backend, "quantize_onnx_model", bloated)
    out = tmp_path / "bloated"
    with pytest.raises(ExportError, match="not smaller than fp32"):
        _export(tiny_dir, out)
    _nothing_written(out)


@pytest.mark.heavy
def test_a_failure_inside_the_bundle_directory_leaves_the_earlier_bundle(tiny_dir, tmp_path, monkeypatch):
    from embg.export import pipeline

    out = _export(tiny_dir, tmp_path / "bundle", bits=32)
    before = _tree_digest(out)

    def full_disk(source, bundle):  # after the model file is written into the temporary directory
        assert any(Path(bundle).glob("*.onnx"))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "copy_tokenizer", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _export(tiny_dir, out, bits=32)
    assert _tree_digest(out) == before
    assert not list(tmp_path.glob(".bundle.*")), "a temporary directory was left behind"
