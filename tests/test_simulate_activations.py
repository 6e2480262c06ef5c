"""The activation roundings bench/activation_sensitivity.py simulates in torch (embg/quantize/simulate.py)."""

from __future__ import annotations

import torch

from embg.quantize.simulate import (int8_rows, int8_rows_asymmetric, int8_rows_two_pass, outputs_with_activations,
                                    with_float_channels)


def _activations() -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(6, 64)
    x[:, 3] *= 200  # an outlier channel, as EmbeddingGemma's
    x[5] = 0
    return x


def test_roundings_keep_one_scale_per_row_and_zero_rows():
    x = _activations()
    for rounding in (int8_rows, int8_rows_asymmetric, int8_rows_two_pass):
        out = rounding(x)
        assert torch.all(out[5] == 0)
        for i in range(5):  # a row alone rounds the same: nothing is shared across rows
            assert torch.equal(rounding(x[i:i + 1])[0], out[i])
    steps = (int8_rows(x)[:4] / (x[:4].abs().amax(-1, keepdim=True) / 127)).round()
    assert torch.allclose(int8_rows(x)[:4] / (x[:4].abs().amax(-1, keepdim=True) / 127), steps, atol=1e-3)


def test_two_passes_and_float_channels_shrink_the_rounding_error():
    x = _activations()
    one = (int8_rows(x) - x).abs().max()
    assert (int8_rows_two_pass(x) - x).abs().max() < one / 100
    split = with_float_channels(int8_rows, [3])(x)
    assert torch.equal(split[:, 3], x[:, 3])
    assert (split - x).abs().max() < one / 20


def test_activation_hooks_apply_to_named_linears_only_and_are_removed():
    layer = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    seen = []

    def record(x):
        seen.append(x.shape)
        return x * 0

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = layer

        def forward(self, ids, mask):
            return self.body(ids.float())

    graph = Graph()
    batches = [(torch.ones(2, 4), torch.ones(2, 4))]
    zeroed = outputs_with_activations(graph, batches, {"body.1.weight": record})
    assert seen == [(2, 3)] and torch.allclose(zeroed, graph.body[1].bias.expand(2, 2))
    assert not torch.allclose(outputs_with_activations(graph, batches, {}), zeroed)  # hook gone
