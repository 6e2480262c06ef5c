"""Quantization verified against the model, not against the plan.

The backends plan from what they see in the converted graph (ONNX MatMul/Gather, LiteRT
FULLY_CONNECTED/EMBEDDING_LOOKUP) and check the file against that plan. A weight the planner does
not see (a head exported as ``Gemm``, a matrix behind an op it does not know) is then neither
planned nor checked, and ships in float while the recipe said otherwise. So the set of weights
that must be quantized comes from the export graph's own state_dict and the recipe, and the
written file must hold every one of them quantized and none of them as a float copy, else the
export fails.

Float copies are found by content: the sha256 of a float32 tensor in the file equals that of a
required weight (as stored, or transposed, as exporters fold ``W.T``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from embg.bundle.digest import array_digest
from embg.errors import ExportError
from embg.quantize.groups import GROUP_OF_PART, NEVER_QUANTIZED, part_of
from embg.quantize.recipe import QuantRecipe

#: ONNX integer element types a quantized weight is stored in
ONNX_INTEGER_TYPES = ("INT8", "UINT8", "INT4", "UINT4")


def required_weights(graph: torch.nn.Module, recipe: QuantRecipe) -> dict[str, str]:
    """{parameter name: group} of every matrix the recipe quantizes, from the graph's state_dict."""
    required = {}
    for name, value in graph.state_dict().items():
        if value.ndim != 2:
            continue  # norms and scales: recipes never quantize vectors
        if NEVER_QUANTIZED.search(name):
            continue  # float terms the export adds to carry a grid exactly (block-sum corrections)
        part = part_of(name)
        if part is None:
            raise ExportError(f"weight {name} {tuple(value.shape)} belongs to no recipe group, so no recipe can say "
                              "how to store it; add it to embg/quantize/groups.py")
        if recipe.rule_for(name).is_integer:  # fp16 (bits 16) is a float store; a recipe may split a group into parts
            required[name] = GROUP_OF_PART[part]
    return required


def float_digests(graph: torch.nn.Module, names: Iterable[str]) -> dict[str, str]:
    """{digest: parameter} of each named matrix as stored and transposed."""
    state = graph.state_dict()
    digests = {}
    for name in names:
        value = state[name].detach().numpy()
        digests[array_digest(value)] = name
        digests[array_digest(value.T)] = name
    return digests


def _fail(what: str, names: list[str], required: dict[str, str], target: str) -> None:
    shown = ", ".join(f"{n} ({required[n]})" for n in sorted(names)[:4])
    more = f" and {len(names) - 4} more" if len(names) > 4 else ""
    raise ExportError(f"{target}: {len(names)} weight(s) the recipe quantizes {what}: {shown}{more}; a quantizer "
                      "skipped them silently (an op the planner does not see?)")


def check_onnx_file(path: Path, graph: torch.nn.Module, recipe: QuantRecipe) -> dict[str, int]:
    """Every required weight is stored as integers in the written .onnx (external data included), and
    no float32 initializer holds a copy of one. Returns {"weights": checked}."""
    import onnx
    from onnx import TensorProto, numpy_helper

    required = required_weights(graph, recipe)
    if not required:
        return {"weights": 0}
    digests = float_digests(graph, required)
    model = onnx.load(str(path))
    integer_types = {getattr(TensorProto, t) for t in ONNX_INTEGER_TYPES}
    in_float = set()
    quantized_names = []
    for init in model.graph.initializer:
        if init.data_type == TensorProto.FLOAT and len(init.dims) == 2:
            param = digests.get(array_digest(numpy_helper.to_array(init)))
            if param:
                in_float.add(param)
        elif init.data_type in integer_types:
            quantized_names.append(init.name)
    if in_float:
        _fail("are still float32 in the file", list(in_float), required, path.name)
    # the quantizers name a weight's integer tensor after it: <param>_quantized, _int8, _Q4, _q4 ...
    missing = [p for p in required if not any(n.startswith(p + "_") for n in quantized_names)]
    if missing:
        _fail("have no integer tensor in the file", missing, required, path.name)
    return {"weights": len(required)}


def check_tflite_file(path: Path, graph: torch.nn.Module, recipe: QuantRecipe,
                      planned: Iterable[str]) -> dict[str, int]:
    """Every required weight was planned (so the plan check saw it quantized) and no FLOAT32 constant
    tensor of the written .tflite, in any subgraph, holds a copy of one. Returns {"weights": checked}."""
    required = required_weights(graph, recipe)
    if not required:
        return {"weights": 0}
    unplanned = sorted(set(required) - set(planned))
    if unplanned:
        _fail("were never planned for quantization", unplanned, required, path.name)
    in_float = _float32_constants_of(path, float_digests(graph, required))
    if in_float:
        _fail("are still float32 in the file", list(in_float), required, path.name)
    return {"weights": len(required)}


def _float32_constants_of(path: Path, digests: dict[str, str]) -> set[str]:
    """The parameters (of ``digests``, float_digests) held by a FLOAT32 constant tensor of the .tflite, in
    any subgraph."""
    from embg.quantize import tflite_flatbuffer as fb

    model = fb.read_model(path)
    found = set()
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            raw = fb.raw_bytes(model, tensor) if fb.type_name(tensor.type) == "FLOAT32" else None
            if raw is not None and (param := digests.get(array_digest(np.frombuffer(raw, dtype=np.float32)))):
                found.add(param)
    return found


def check_float_terms_tflite(path: Path, graph: torch.nn.Module) -> int:
    """The float terms the export adds (NEVER_QUANTIZED: block-sum corrections, float-channel columns) are
    in the written .tflite as FLOAT32, unchanged: a quantizer that rounded them would undo what they carry.
    Returns how many were checked."""
    names = [name for name, value in graph.state_dict().items() if value.ndim == 2 and NEVER_QUANTIZED.search(name)]
    if not names:
        return 0
    state = graph.state_dict()
    found = _float32_constants_of(path, float_digests(graph, names))
    # equal terms (every layer's Hadamard block) are one constant in the file: match them by value
    found_values = {array_digest(state[name].detach().numpy()) for name in found}
    missing = sorted(name for name in names if array_digest(state[name].detach().numpy()) not in found_values)
    if missing:
        raise ExportError(f"{path.name}: {len(missing)} float term(s) the export added are not in the file as float32 "
                          f"(a quantizer rounded them?): {', '.join(missing[:4])}")
    return len(names)
