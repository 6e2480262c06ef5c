"""Float channels and residual passes on LiteRT (embg/quantize/litert_split.py).

The export graph computes XNNPACK's row grid itself; these tests run the converted, quantized layer
in LiteRT and check that XNNPACK rounds exactly as the graph assumed, and that the split layers
get close to the int8 weights with float activations while the float function stays the layer's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embg.errors import EmbgError
from embg.quantize.groups import NEVER_QUANTIZED, part_of
from embg.quantize.litert_split import SplitActivationLinear, split_activations, xnnpack_int8_rows
from embg.quantize.recipe import load_recipe, parse_recipe
from embg.quantize.simulate import int8_channel, int8_rows

IN, OUT, TOKENS = 384, 256, 24
KEPT = np.array([3, 100, 250, 301])


def _layer_input() -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(1, TOKENS, IN)
    x[..., KEPT] *= 200  # outlier channels, as EmbeddingGemma's
    x[0, 5] = 0  # an all-zero row
    x[0, 6] = x[0, 6].abs()  # a row with no negative value (zero point at the grid's end)
    return x


def _weight() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(OUT, IN) * 0.02


def _quantized_file(module: torch.nn.Module, x: torch.Tensor, tmp_path, smallest: int = IN * OUT // 2):
    """module converted by litert-torch, its FULLY_CONNECTED weights of at least ``smallest`` elements int8
    per channel with dynamic-range activations (by default the small float columns stay float)."""
    import litert_torch
    from ai_edge_quantizer import quantizer

    float_path, path = tmp_path / "float.tflite", tmp_path / "int8.tflite"
    litert_torch.convert(module.eval(), (x,)).export(str(float_path))
    recipe = [{"regex": ".*", "operation": "FULLY_CONNECTED", "algorithm_key": "min_max_uniform_quantize",
               "op_config": {"weight_tensor_config": {"num_bits": 8, "symmetric": True, "granularity": "CHANNELWISE",
                                                      "dtype": "INT"},
                             "compute_precision": "INTEGER", "explicit_dequantize": False, "skip_checks": False,
                             "min_weight_elements": smallest}}]
    path.write_bytes(bytes(quantizer.Quantizer(str(float_path), recipe).quantize().quantized_model))
    return path


def _run_in_litert(module: torch.nn.Module, x: torch.Tensor, tmp_path) -> np.ndarray:
    """_quantized_file run with XNNPACK."""
    from embg.runtimes.litert_rt import make_interpreter

    path = _quantized_file(module, x, tmp_path)
    interpreter, _ = make_interpreter(path, threads=1)
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details()
    return next(iter(runner(**{name: x.numpy()}).values()))


def test_xnnpack_rounds_the_way_the_graph_computes_it(tmp_path):
    """A plain int8 layer in LiteRT equals the int8 weights times xnnpack_int8_rows(x): the residual pass
    rests on this (a symmetric grid, or XNNPACK's formula changed, would fail here)."""
    x, weight = _layer_input(), _weight()
    out = _run_in_litert(SplitActivationLinear(weight, None, residual_pass=False), x, tmp_path)
    expected = F.linear(xnnpack_int8_rows(x), int8_channel(weight)).numpy()
    assert np.abs(out - expected).max() <= 1e-5 * np.abs(expected).max()
    symmetric = F.linear(int8_rows(x), int8_channel(weight)).numpy()  # the ONNX presets' grid
    assert np.abs(out - symmetric).max() > 100 * np.abs(out - expected).max()


@pytest.mark.parametrize("kept, residual", [(KEPT, False), (None, True), (KEPT, True)])
def test_split_layers_keep_the_float_function(kept, residual):
    x, weight = _layer_input(), _weight()
    layer = SplitActivationLinear(weight, kept, residual_pass=residual)
    plain = F.linear(x, weight)
    assert torch.allclose(layer(x), plain, rtol=1e-5, atol=1e-5 * plain.abs().max().item())
    if kept is not None:  # the int8 product never sees the kept columns; the float one holds them
        assert torch.all(layer.weight[:, KEPT] == 0)
        assert torch.equal(layer.float_channel_weight, weight[:, KEPT])
        assert torch.equal(SplitActivationLinear(weight, kept, residual, keep_columns=True).weight, weight)


def test_split_layers_in_litert_approach_float_activations(tmp_path):
    """Error against int8 weights with float activations: each split cuts it, both together by far the most."""
    x, weight = _layer_input(), _weight()
    masked = weight.clone()
    masked[:, KEPT] = 0
    target = F.linear(x, int8_channel(masked)) + F.linear(x[..., KEPT], weight[:, KEPT])
    errors = {}
    for kept, residual in ((None, False), (KEPT, False), (None, True), (KEPT, True)):
        out = _run_in_litert(SplitActivationLinear(weight, kept, residual), x, tmp_path)
        reference = target if kept is not None else F.linear(x, int8_channel(weight))
        errors[(kept is not None, residual)] = float(np.linalg.norm(out - reference.numpy())
                                                    / np.linalg.norm(reference.numpy()))
    single = errors[(False, False)]
    assert errors[(True, False)] < single / 10
    assert errors[(False, True)] < single / 10
    assert errors[(True, True)] < single / 1000, errors


class _Decoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Module()])
        mlp = torch.nn.Module()
        mlp.up_proj = torch.nn.Linear(8, 12, bias=False)
        mlp.down_proj = torch.nn.Linear(12, 8, bias=False)
        self.layers[0].mlp = mlp
        self.head = torch.nn.Linear(8, 4, bias=False)

    def forward(self, x):
        return self.head(self.layers[0].mlp.down_proj(self.layers[0].mlp.up_proj(x)))


def test_split_activations_replaces_only_quantized_decoder_layers():
    graph = _Decoder()
    x = torch.randn(3, 8)
    before = graph(x)
    peaks = {"layers.0.mlp.up_proj.weight": np.arange(8.0), "layers.0.mlp.down_proj.weight": np.arange(12.0)}
    summary = split_activations(graph, peaks, 2, ("down_proj",),
                                lambda name: part_of(name) in {"up_proj", "down_proj", "head"})
    assert summary["layers_with_float_channels"] == 2 and summary["layers_with_residual_pass"] == 1
    assert summary["float_channel_bytes"] == (12 * 2 + 8 * 2) * 4
    assert isinstance(graph.layers[0].mlp.down_proj, SplitActivationLinear)
    assert graph.layers[0].mlp.down_proj.residual_pass and not graph.layers[0].mlp.up_proj.residual_pass
    assert list(graph.layers[0].mlp.up_proj.float_index) == [6, 7]  # the largest peaks
    assert isinstance(graph.head, torch.nn.Linear)  # the head reads the pooled vector once: never split
    assert torch.allclose(graph(x), before, atol=1e-5)
    # the float columns are never a recipe's to quantize: the completeness check does not require them
    from embg.export.completeness import required_weights

    floats = {name for name in graph.state_dict() if name.endswith("float_channel_weight")}
    assert len(floats) == 2 and all(NEVER_QUANTIZED.search(name) for name in floats)
    assert set(required_weights(graph, load_recipe("int8"))) == {"layers.0.mlp.up_proj.weight",
                                                                  "layers.0.mlp.down_proj.weight"}
    # a part the recipe keeps float is left alone
    fresh = _Decoder()
    assert split_activations(fresh, peaks, 2, (), lambda name: part_of(name) == "up_proj")["layers_with_float_channels"] == 1
    assert isinstance(fresh.layers[0].mlp.down_proj, torch.nn.Linear)


def test_float_channels_per_target():
    data = load_recipe("int8").to_dict()
    both = parse_recipe({**data, "float_channels": 16})
    assert both.float_channels_on("onnx") == both.float_channels_on("tflite") == 16
    assert both.to_dict()["float_channels"] == 16
    onnx_only = parse_recipe({**data, "float_channels": {"onnx": 16}})
    assert (onnx_only.float_channels_on("onnx"), onnx_only.float_channels_on("tflite")) == (16, 0)
    assert parse_recipe(onnx_only.to_dict()).float_channels == onnx_only.float_channels
    assert load_recipe("int4").float_channels_on("tflite") == 0  # its LiteRT file stays within 185 MB
    assert load_recipe("int4").residual_pass_on("tflite") == ()  # nor its LiteRT speed under int8's
    assert load_recipe("int4").residual_pass_on("onnx") == ("down_proj",)
    for bad in ({"coreml": 4}, {"onnx": -1}, {"tflite": "16"}):
        with pytest.raises(EmbgError, match="float_channels"):
            parse_recipe({**data, "float_channels": bad})


def test_export_refuses_a_file_whose_float_columns_were_quantized(tmp_path):
    """check_float_terms_tflite (run on every LiteRT export): the kept channels' columns must be in the file
    as float32; a quantizer that rounded them to int8 would silently undo the split."""
    from embg.export.completeness import check_float_terms_tflite

    x, weight = _layer_input(), _weight()
    graph = torch.nn.Module()
    graph.layer = SplitActivationLinear(weight, KEPT, residual_pass=True)
    graph.forward = graph.layer.forward
    assert check_float_terms_tflite(_quantized_file(graph.layer, x, tmp_path / "kept"), graph) == 1
    with pytest.raises(EmbgError, match="float_channel_weight"):
        check_float_terms_tflite(_quantized_file(graph.layer, x, tmp_path / "all", smallest=0), graph)
