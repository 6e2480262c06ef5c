"""The largest |value| of every intermediate tensor of the export graph, per decoder layer.

Module hooks only see module inputs and outputs; fp16 overflows inside them (the squares in
RMSNorm, attention scores, the MLP's gate * up). So every torch op the graph runs is observed
through a ``TorchFunctionMode`` and attributed to the innermost module running it:

* per layer: ``residual`` (entering the layer, after attention, leaving it), ``norm_inputs``,
  ``norm_squares`` (x^2 and its mean inside every RMSNorm), ``qk_normed`` (q_norm / k_norm
  outputs), ``scores`` (the softmax input), ``gate_up`` (gelu(gate) * up) and ``layer_max``
  (every op inside the layer). Masked attention entries sit at the mask floor (a constant by
  design, below half of it) and are left out of attention's ops;
* outside the layers: ``before_layers`` (positions, rope, masks), ``after_layers`` (final norm,
  pooling with its sum before the division) and ``head`` (Dense layers, L2 normalisation).

Values >= 1e30 are the float32 mask floor (a constant by design, not an activation) and are left
out; any NaN/inf makes the entry inf, which is the finding.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch.overrides import TorchFunctionMode

LAYER = re.compile(r"^layers\.(\d+)(?:\.|$)")
FLOAT32_MASK = 1e30
LAYER_COLUMNS = ("residual", "norm_inputs", "norm_squares", "qk_normed", "scores", "gate_up", "layer_max")
OUTER_ROWS = ("before_layers", "after_layers", "head")
SQUARE_OPS = {"pow", "mean"}  # x^2 and its mean inside a norm
PRODUCT_OPS = {"mul", "__mul__"}
SUM_OPS = {"add", "__add__"}


def _max_abs(value: torch.Tensor, above: float | None = None) -> float:
    """max |x| (inf when any NaN/inf); entries <= ``above`` (masked scores) and >= 1e30 left out."""
    with torch._C.DisableTorchFunction():
        x = value.detach()
        top = float(x.abs().max())
        if not math.isfinite(top):
            return float("inf")
        low = float(x.min())
        if top < FLOAT32_MASK and (above is None or low > above):
            return top  # the common case: one pass, no copy
        keep = (x.abs() < FLOAT32_MASK) & (x > above if above is not None else True)
        return float(torch.where(keep, x.abs(), torch.zeros((), dtype=x.dtype)).max())


@dataclass
class Intermediates:
    """max |x| per (layer, column) and per outer row, over every input measured."""

    layers: dict[int, dict[str, float]] = field(default_factory=dict)
    outer: dict[str, float] = field(default_factory=lambda: dict.fromkeys(OUTER_ROWS, 0.0))

    def update(self, layer: int | None, column: str, value: float) -> None:
        if layer is None:
            self.outer[column] = max(self.outer.get(column, 0.0), value)
            return
        row = self.layers.setdefault(layer, dict.fromkeys(LAYER_COLUMNS, 0.0))
        row[column] = max(row[column], value)
        row["layer_max"] = max(row["layer_max"], value)

    @property
    def overall(self) -> float:
        values = [v for row in self.layers.values() for v in row.values()] + list(self.outer.values())
        return max(values, default=0.0)

    def per_layer(self, column: str = "layer_max") -> list[float]:
        return [self.layers[i][column] for i in sorted(self.layers)]

    def to_dict(self) -> dict:
        return {"overall": self.overall, "outer": dict(self.outer),
                "layers": {str(i): dict(self.layers[i]) for i in sorted(self.layers)}}


class _Recorder(TorchFunctionMode):
    """Attributes each op to the innermost running module (hooks keep a stack of module names)."""

    def __init__(self, graph: torch.nn.Module, found: Intermediates) -> None:
        super().__init__()
        self.found = found
        self.floor = float(getattr(graph, "mask_floor", -3.0e38)) / 2
        self.stack: list[str] = [""]
        self.phase = "before_layers"  # then "after_layers" once a layer ran, "head" once a head layer ran
        self.handles = []
        for name, module in graph.named_modules():
            if module is not graph:
                self.handles.append(module.register_forward_pre_hook(self._enter(name)))
                self.handles.append(module.register_forward_hook(self._leave(name)))

    def _enter(self, name: str):
        def hook(_module, inputs) -> None:
            self.stack.append(name)
            x = inputs[0] if inputs and torch.is_tensor(inputs[0]) else None
            if x is None:
                return
            if name.endswith("norm"):
                self._record(name, "norm_inputs", _max_abs(x))
            if LAYER.match(name) and name.count(".") == 1:  # the residual entering the layer
                self._record(name, "residual", _max_abs(x))
        return hook

    def _leave(self, name: str):
        def hook(_module, _inputs, output) -> None:
            self.stack.pop()
            if LAYER.match(name):
                self.phase = "after_layers"
            elif name.startswith("head"):
                self.phase = "head"
            if not torch.is_tensor(output):
                return
            if LAYER.match(name) and name.count(".") == 1:
                self._record(name, "residual", _max_abs(output))
            elif name.endswith(("q_norm", "k_norm")):
                self._record(name, "qk_normed", _max_abs(output))
        return hook

    def _record(self, module: str, column: str, value: float) -> None:
        match = LAYER.match(module)
        if match:
            self.found.update(int(match.group(1)), column, value)
        else:
            self.found.update(None, self.phase, value)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        module = self.stack[-1]
        in_layer = LAYER.match(module) is not None
        if name == "softmax" and in_layer and torch.is_tensor(args[0]):
            self._record(module, "scores", _max_abs(args[0], above=self.floor))
        out = func(*args, **(kwargs or {}))
        if torch.is_tensor(out) and out.is_floating_point() and out.numel():
            # in attention, masked scores (at the mask floor) are left out of every op, not just softmax's input
            value = _max_abs(out, above=self.floor if module.endswith("self_attn") else None)
            if module.endswith("norm") and name in SQUARE_OPS:
                self._record(module, "norm_squares", value)
            elif module.endswith("mlp") and name in PRODUCT_OPS:
                self._record(module, "gate_up", value)
            elif in_layer and module.count(".") == 1 and name in SUM_OPS:  # residual after attention
                self._record(module, "residual", value)
            else:
                self._record(module, "layer_max", value)
        return out

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def measure(graph: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
            found: Intermediates | None = None, outputs: list[torch.Tensor] | None = None) -> Intermediates:
    """Run ``graph`` on each (input_ids, attention_mask) batch and record its intermediates
    (and its outputs into ``outputs`` when given)."""
    found = found or Intermediates()
    for ids, mask in batches:
        recorder = _Recorder(graph, found)
        try:
            with torch.no_grad(), recorder:
                out = graph(ids, mask)
        finally:
            recorder.close()
        if outputs is not None:
            outputs.append(out)
    return found
