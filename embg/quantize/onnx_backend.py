"""Quantize an fp32 ONNX export according to a recipe, with onnxruntime's own tools where they are right.

* int8 per-channel MatMul with dynamic int8 activations: ``quantize_dynamic`` (MatMulInteger).
* int4/int8 block MatMul (min-max): ``MatMulNBitsQuantizer`` (MatMulNBits).
* int4 block embedding (min-max): ``MatMulNBitsQuantizer`` on Gather (GatherBlockQuantized, opset 21).
* Written here, because the tools get them wrong:
  - int8 embedding: quantize_dynamic turns Gather into ONE per-tensor uint8 scale for the whole
    262144-row table; we store int8 rows with one scale per row (Gather -> Cast -> Mul).
  - exact QAT grids: the tools re-derive scales (signed absmax / -8) and do not reproduce the
    checkpoint's integers; we write MatMulNBits / GatherBlockQuantized initializers from the
    recovered (integers, scales) directly.
  - ``web_compatible``: onnxruntime-web lacks GatherBlockQuantized, so an int4 embedding
    becomes the int8 per-row form.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from embg.errors import ExportError
from embg.quantize.groups import part_of
from embg.quantize.recipe import GroupRule, QuantRecipe

log = logging.getLogger(__name__)
MS_DOMAIN = "com.microsoft"


@dataclass
class OnnxQuantPlan:
    """Per node: the recipe group and rule, and what the quantized graph must contain afterwards."""

    nodes: dict[str, tuple[str, GroupRule]] = field(default_factory=dict)  # node name -> (group, rule)
    expected_ops: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


def _initializer_map(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def weight_nodes(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """node name -> (weight initializer name, op type) for every MatMul/Gather with a named weight."""
    inits = _initializer_map(model)
    found = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            found[node.name] = (node.input[1], "MatMul")
        elif node.op_type == "Gather" and node.input[0] in inits and len(inits[node.input[0]].dims) == 2:
            found[node.name] = (node.input[0], "Gather")
    return found


def plan_quantization(model: onnx.ModelProto, recipe: QuantRecipe, web_compatible: bool) -> OnnxQuantPlan:
    plan = OnnxQuantPlan()
    for node_name, (weight, op_type) in weight_nodes(model).items():
        part = part_of(weight)
        if part is None:
            raise ExportError(f"ONNX weight {weight!r} (node {node_name}) belongs to no recipe group")
        group, rule = recipe.rule_key(part), recipe.rule(part)
        if rule.is_float:
            continue
        if op_type == "Gather" and rule.bits == 4 and web_compatible:
            rule = GroupRule(8, "channel", None, "min-max", rule.activations)
            plan.notes.append("embedding stored int8 per row instead of int4 GatherBlockQuantized (--web-compatible)")
        if op_type == "MatMul" and rule.granularity == "channel" and (rule.bits != 8 or rule.activations != "dynamic_int8"):
            raise ExportError(
                f"ONNX has no per-channel int{rule.bits} MatMul with {rule.activations} activations for group {group}; "
                "use granularity block (MatMulNBits) or bits 8 with dynamic_int8 activations"
            )
        if op_type == "Gather" and rule.bits == 4 and rule.granularity != "block":
            raise ExportError("an int4 embedding needs granularity block on ONNX (GatherBlockQuantized)")
        plan.nodes[node_name] = (group, rule)
        if op_type == "Gather":
            plan.expected_ops["GatherBlockQuantized" if rule.bits == 4 or rule.granularity == "block" else "Gather+Mul"] += 1
        elif rule.granularity == "block":
            plan.expected_ops["MatMulNBits"] += 1
        else:
            plan.expected_ops["MatMulInteger"] += 1
    return plan


def _replace_node(model: onnx.ModelProto, old: onnx.NodeProto, new_nodes: list[onnx.NodeProto],
                  new_inits: list[onnx.TensorProto], drop_init: str) -> None:
    graph = model.graph
    index = list(graph.node).index(old)
    graph.node.remove(old)
    for offset, node in enumerate(new_nodes):
        graph.node.insert(index + offset, node)
    still_used = any(drop_init in n.input for n in graph.node)
    if not still_used:
        for init in list(graph.initializer):
            if init.name == drop_init:
                graph.initializer.remove(init)
    graph.initializer.extend(new_inits)


def _pack_int4(values: np.ndarray) -> bytes:
    u = (values.astype(np.int16) & 0x0F).astype(np.uint8).reshape(-1)
    if u.size % 2:
        u = np.append(u, np.uint8(0))
    return ((u[0::2] & 0x0F) | ((u[1::2] & 0x0F) << 4)).astype(np.uint8).tobytes()


def _embedding_int8_rows(model, node, table: np.ndarray) -> None:
    """int8 table with one float scale per row: Gather(q) -> Cast -> Mul(Gather(scale))."""
    absmax = np.abs(table).max(axis=1, keepdims=True)
    scale = np.where(absmax == 0, 1.0, absmax / 127.0).astype(np.float32)
    q = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
    base, ids = node.input[0], node.input[1]
    q_init = numpy_helper.from_array(q, f"{base}_int8")
    s_init = numpy_helper.from_array(scale, f"{base}_row_scale")
    nodes = [
        helper.make_node("Gather", [q_init.name, ids], [f"{base}_q_rows"], name=f"{base}/GatherInt8", axis=0),
        helper.make_node("Cast", [f"{base}_q_rows"], [f"{base}_f_rows"], name=f"{base}/Cast", to=TensorProto.FLOAT),
        helper.make_node("Gather", [s_init.name, ids], [f"{base}_scale_rows"], name=f"{base}/GatherScale", axis=0),
        helper.make_node("Mul", [f"{base}_f_rows", f"{base}_scale_rows"], list(node.output), name=f"{base}/Dequant"),
    ]
    _replace_node(model, node, nodes, [q_init, s_init], base)


def _embedding_gbq(model, node, q: np.ndarray, scales: np.ndarray, bits: int, block: int) -> None:
    """GatherBlockQuantized from exact integers q [V, D] and scales [V, D/block]."""
    base, ids = node.input[0], node.input[1]
    if bits == 4:
        data = helper.make_tensor(f"{base}_q4", TensorProto.INT4, list(q.shape), _pack_int4(q), raw=True)
        extra = {}
    else:
        data = numpy_helper.from_array((q.astype(np.int16) + 128).astype(np.uint8), f"{base}_q8")
        extra = {"bits": 8}
    s_init = numpy_helper.from_array(scales.astype(np.float32), f"{base}_scales")
    new = helper.make_node("GatherBlockQuantized", [data.name, ids, s_init.name], list(node.output),
                           name=f"{base}/GatherBlockQuantized", domain=MS_DOMAIN, gather_axis=0, quantize_axis=1,
                           block_size=block, **extra)
    _replace_node(model, node, [new], [data, s_init], base)


def _matmul_nbits(model, node, q: np.ndarray, scales: np.ndarray, bits: int, block: int, accuracy_level: int) -> None:
    """MatMulNBits from exact integers q [K, N] and per-block scales [K/block, N] (W = q * s)."""
    weight = node.input[1]
    k, n = q.shape
    # Unsigned storage with the symmetric default zero point 2^(bits-1); B is [N, K/block, block*bits/8].
    u = (q.T.reshape(n, k // block, block).astype(np.int16) + 2 ** (bits - 1)).astype(np.uint8)
    packed = ((u[..., 0::2] & 0x0F) | ((u[..., 1::2] & 0x0F) << 4)).astype(np.uint8) if bits == 4 else u
    b_init = numpy_helper.from_array(packed, f"{weight}_Q{bits}")
    s_init = numpy_helper.from_array(np.ascontiguousarray(scales.T.astype(np.float32)), f"{weight}_scales")
    new = helper.make_node("MatMulNBits", [node.input[0], b_init.name, s_init.name], list(node.output),
                           name=f"{weight}/MatMulNBits", domain=MS_DOMAIN, K=k, N=n, bits=bits, block_size=block,
                           accuracy_level=accuracy_level)
    _replace_node(model, node, [new], [b_init, s_init], weight)


def _accuracy_level(rule: GroupRule) -> int:
    # MatMulNBits accuracy_level 4 computes with int8 activations; 0 keeps float activations.
    return 4 if rule.activations == "dynamic_int8" else 0


def quantize_onnx_model(model: onnx.ModelProto, recipe: QuantRecipe, grids: dict[str, Any] | None = None,
                        web_compatible: bool = False) -> tuple[onnx.ModelProto, OnnxQuantPlan]:
    """Return the quantized model and its plan. ``grids`` maps weight name -> (q, scales) for qat-grid rules."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    plan = plan_quantization(model, recipe, web_compatible)
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))  # contrib ops written by hand below
    by_name = {node.name: node for node in model.graph.node}
    inits = _initializer_map(model)
    nodes = weight_nodes(model)

    # 1. Written here: int8 per-row embeddings and exact-grid weights.
    for node_name, (group, rule) in plan.nodes.items():
        weight, op_type = nodes[node_name]
        node = by_name[node_name]
        if rule.carries_grid:
            if not grids or weight not in grids:
                raise ExportError(f"no exact grid (QAT or calibrated) for {weight}; the pipeline computes them first")
            q, scales = grids[weight]  # torch layout: [out, in] and [out, in/32]
            if op_type == "Gather":
                _embedding_gbq(model, node, q, scales, rule.bits, rule.block_size)
            else:
                _matmul_nbits(model, node, q.T, scales.T, rule.bits, rule.block_size, _accuracy_level(rule))
        elif op_type == "Gather" and rule.bits == 8:
            _embedding_int8_rows(model, node, numpy_helper.to_array(inits[weight]))

    # 2. MatMulNBitsQuantizer, one pass per (bits, block, accuracy level) so each node gets its own rule.
    passes: dict[tuple, list[str]] = {}
    for node_name, (group, rule) in plan.nodes.items():
        if rule.algorithm == "min-max" and (rule.granularity == "block" or rule.bits == 4):
            op_type = nodes[node_name][1]
            if op_type == "Gather" and rule.bits != 4:
                raise ExportError("min-max block int8 embeddings are not supported on ONNX; use granularity channel")
            passes.setdefault((rule.bits, rule.block_size or 32, _accuracy_level(rule)), []).append(node_name)
    for (bits, block, level), names in passes.items():
        selected = set(names)
        exclude = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gather") and n.name not in selected]
        config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=level or None,
                                              bits=bits, op_types_to_quantize=("MatMul", "Gather"),
                                              quant_axes=(("MatMul", 0), ("Gather", 1)))
        quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=True,
                                         accuracy_level=level or None, nodes_to_exclude=exclude, algo_config=config)
        quantizer.process()
        model = quantizer.model.model

    # 3. quantize_dynamic for per-channel int8 MatMuls with dynamic activations.
    dynamic = [name for name, (group, rule) in plan.nodes.items()
               if rule.algorithm == "min-max" and rule.granularity == "channel" and rule.bits == 8
               and nodes[name][1] == "MatMul"]
    if dynamic:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "dynamic.onnx"
            quantize_dynamic(model, out, op_types_to_quantize=["MatMul"], per_channel=True,
                             weight_type=QuantType.QInt8, nodes_to_quantize=dynamic, use_external_data_format=True)
            model = onnx.load(str(out))
    return model, plan


def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


def verify_quantized(model: onnx.ModelProto, plan: OnnxQuantPlan) -> dict[str, int]:
    """Every planned quantization must show up as an op; otherwise a tool skipped it silently."""
    ops = op_counts(model)
    found = {
        "MatMulNBits": ops["MatMulNBits"],
        "MatMulInteger": ops["MatMulInteger"],
        "GatherBlockQuantized": ops["GatherBlockQuantized"],
        "Gather+Mul": sum(1 for n in model.graph.node if n.op_type == "Gather" and n.name.endswith("/GatherInt8")),
    }
    for op, want in plan.expected_ops.items():
        if found.get(op, 0) != want:
            raise ExportError(f"quantization planned {want} {op} node(s) but the model has {found.get(op, 0)}; "
                              "a quantizer skipped weights silently")
    return {k: v for k, v in found.items() if v}


def _unpack_uint4(raw: bytes, count: int) -> np.ndarray:
    b = np.frombuffer(raw, dtype=np.uint8)
    out = np.empty(b.size * 2, np.uint8)
    out[0::2], out[1::2] = b & 0x0F, b >> 4
    return out[:count]


def read_back_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Dequantized MatMulNBits / GatherBlockQuantized weights in torch layout [rows, cols], by parameter name."""
    inits = _initializer_map(model)
    weights: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MatMulNBits":
            k, n, bits, block = attrs["K"], attrs["N"], attrs.get("bits", 4), attrs["block_size"]
            packed = numpy_helper.to_array(inits[node.input[1]])
            scales = numpy_helper.to_array(inits[node.input[2]]).reshape(n, -1)
            u = _unpack_uint4(packed.tobytes(), packed.size * 2) if bits == 4 else packed.reshape(-1)
            q = u.reshape(n, -1, block).astype(np.float32) - 2 ** (bits - 1)
            weights[node.name.rsplit("/", 1)[0]] = (q * scales[..., None]).reshape(n, -1)[:, :k]
        elif node.op_type == "GatherBlockQuantized":
            data, block = inits[node.input[0]], attrs["block_size"]
            shape = list(data.dims)
            scales = numpy_helper.to_array(inits[node.input[2]])
            if data.data_type == TensorProto.INT4:
                u = _unpack_uint4(data.raw_data, int(np.prod(shape))).astype(np.int16)
                q = np.where(u >= 8, u - 16, u).astype(np.float32)
            else:
                q = numpy_helper.to_array(data).astype(np.float32).reshape(-1) - 128
            weights[node.name.rsplit("/", 1)[0]] = q.reshape(shape) * np.repeat(scales, block, axis=1)[:, : shape[1]]
    return weights


def verify_grids(model: onnx.ModelProto, grids: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """The exact-grid weights read back from the model must equal integers x scales of the checkpoint."""
    found = read_back_weights(model)
    worst = 0.0
    for name, (q, scales) in grids.items():
        if name not in found:
            raise ExportError(f"{name} should carry its exact grid but is not a block-quantized op in the model")
        block = q.shape[1] // scales.shape[1]
        expected = q.astype(np.float32) * np.repeat(scales, block, axis=1)
        relative = np.abs(found[name] - expected) / np.repeat(np.abs(scales), block, axis=1).clip(min=1e-30)
        worst = max(worst, float(relative.max()))
    if worst > 1e-6:
        raise ExportError(f"the exact grid did not survive in the ONNX file (max error {worst:g} of a block scale)")
    return {"exact": True, "tensors": len(grids), "max_error_in_scales": worst}
