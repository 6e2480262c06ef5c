"""Quantize an fp32 ONNX export according to a recipe, with onnxruntime's own tools where they are right.

* int8 per-channel MatMul with per-tensor dynamic activations (``dynamic_int8``): ``quantize_dynamic``.
* int4/int8 block MatMul (min-max): ``MatMulNBitsQuantizer`` (MatMulNBits).
* int4 block embedding (min-max): ``MatMulNBitsQuantizer`` on Gather (GatherBlockQuantized, opset 21).
* Written here, because the tools get them wrong:
  - per-row dynamic activations (``dynamic_int8_per_row``): quantize_dynamic's DynamicQuantizeLinear
    computes ONE scale over the whole [batch, sequence, hidden] tensor, so an embedding depends on its
    batch neighbours and padding. ``RowQuantizer`` gives every token its own scale (docs/onnx-int8.md).
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
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from embg.errors import ExportError
from embg.quantize import int6_storage
from embg.quantize.tflite_flatbuffer import pack_int4
from embg.quantize.groups import NEVER_QUANTIZED, part_of
from embg.quantize.int4_blocks import int8_row_steps, steps_from_scales
from embg.quantize.recipe import PER_ROW, GroupRule, QuantRecipe

log = logging.getLogger(__name__)
MS_DOMAIN = "com.microsoft"
# Nodes of the per-row activation quantizer carry this in their name (verify_per_row finds them by it).
ROW_QUANT_TAG = "RowQuantize"
PER_TENSOR_OPS = ("DynamicQuantizeLinear", "DynamicQuantizeMatMul")
BLOCK_SCALES_SUFFIX = "_block_scales"  # a block weight widened at load: its scales (read_back_weights)
WIDENED_MATMUL = "dequantized_at_load"  # a float MatMul whose weight-only blocks become float at load (the head)


@dataclass
class OnnxQuantPlan:
    """Per node: the recipe group and rule, and what the quantized graph must contain afterwards."""

    nodes: dict[str, tuple[str, GroupRule]] = field(default_factory=dict)  # node name -> (group, rule)
    expected_ops: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    carried: set[str] = field(default_factory=set)  # weights stored on their exact grid (QAT or calibrated)

    @property
    def per_row(self) -> bool:
        """Some rule asks for per-row activations: no per-tensor activation quantization may remain."""
        return any(rule.activations == PER_ROW for _, rule in self.nodes.values())


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
        if NEVER_QUANTIZED.search(weight):  # a fixed rotation or correction: float by design
            continue
        part = part_of(weight)
        if part is None:
            raise ExportError(f"ONNX weight {weight!r} (node {node_name}) belongs to no recipe group")
        group, rule = recipe.rule_key_for(weight), recipe.rule_for(weight)
        if rule.is_float:
            continue
        if op_type == "Gather" and rule.bits == 4 and web_compatible:
            rule = GroupRule(8, "channel", None, "min-max", rule.activations)
            plan.notes.append("embedding stored int8 per row instead of int4 GatherBlockQuantized (--web-compatible)")
        if op_type == "MatMul" and rule.granularity == "channel" and (rule.bits != 8 or not rule.dynamic_activations):
            raise ExportError(
                f"ONNX has no per-channel int{rule.bits} MatMul with {rule.activations} activations for group {group}; "
                f"use granularity block (MatMulNBits) or bits 8 with {PER_ROW} activations"
            )
        if op_type == "Gather" and rule.bits == 4 and rule.granularity != "block":
            raise ExportError("an int4 embedding needs granularity block on ONNX (GatherBlockQuantized)")
        plan.nodes[node_name] = (group, rule)
        if rule.carries_grid:
            plan.carried.add(weight)
        if op_type == "Gather":
            plan.expected_ops["GatherBlockQuantized" if rule.bits == 4 or rule.granularity == "block" else "Gather+Mul"] += 1
        elif _dequantized_at_load(part, rule):
            plan.expected_ops[WIDENED_MATMUL] += 1
        else:  # a residual pass is a second integer product on the same weight
            passes = 2 if part in recipe.residual_pass_on("onnx") and rule.activations == PER_ROW else 1
            plan.expected_ops[matmul_op(rule)] += passes
    return plan


def _dequantized_at_load(part: str, rule: GroupRule) -> bool:
    """Weight-only blocks of the head: float product on a weight folded to float at load (see
    _weight_dequantized_at_load)."""
    return part == "head" and rule.granularity == "block" and not rule.dynamic_activations


def matmul_op(rule: GroupRule) -> str:
    """The onnxruntime op a quantized MatMul becomes under ``rule``."""
    if rule.activations == PER_ROW:
        return "MatMulIntegerToFloat"
    return "MatMulNBits" if rule.granularity == "block" else "MatMulInteger"


def _float_view(init: onnx.TensorProto) -> np.ndarray:
    """A float32 initializer as an array, without copying its bytes when they are stored raw (the
    embedding table alone is ~0.8 GB)."""
    if init.data_type == TensorProto.FLOAT and init.raw_data:
        return np.frombuffer(init.raw_data, dtype=np.float32).reshape(tuple(init.dims))
    return numpy_helper.to_array(init)


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
    return pack_int4(values).tobytes()  # the same nibble order as TFLite's: element 2i in the low nibble


def _embedding_int8_rows(model, node, table: np.ndarray) -> None:
    """int8 table with one float scale per row: Gather(q) -> Cast -> Mul(Gather(scale))."""
    q = np.empty(table.shape, np.int8)
    scale = np.empty((table.shape[0], 1), np.float32)
    for start in range(0, table.shape[0], 16384):  # in slices: float temporaries of the whole table are ~1 GB each
        rows = table[start:start + 16384]
        absmax = np.abs(rows).max(axis=1, keepdims=True)
        scale[start:start + 16384] = np.where(absmax == 0, 1.0, absmax / 127.0)
        q[start:start + 16384] = np.clip(np.round(rows / scale[start:start + 16384]), -127, 127)
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


def uint4_pairs(q: np.ndarray) -> np.ndarray:
    """int4 integers q [R, C] (C even) as uint8 [R, C/2], two values per byte with zero point 8 (low
    nibble first): GatherBlockQuantized's ``bits`` 4 layout, which onnxruntime gathers 5x faster than
    the same integers in an INT4 tensor (bench/embedding_gather.py)."""
    unsigned = (q.astype(np.int16) + 8).astype(np.uint8)
    return np.frombuffer(_pack_int4(unsigned), np.uint8).reshape(q.shape[0], q.shape[1] // 2)


FP16_MAX = 65504.0


def scales_as_stored(scales: np.ndarray) -> np.ndarray:
    """Block scales as the file keeps them: float16 when every one is exactly a float16 (the calibrated
    grids' bf16 scales, QAT's fp16 ones), half the bytes of float32 for the same numbers; else float32."""
    as_float = scales.astype(np.float32)
    half = as_float.astype(np.float16)
    return half if np.array_equal(half.astype(np.float32), as_float) else as_float


def _gbq_output_is_exact_in_fp16(q: np.ndarray, scales: np.ndarray) -> bool:
    """True when each q x scale is exactly a float16: a storable scale (int4_blocks.is_storable: positive,
    normal, bf16) has 8 significant bits and an int4 value at most 3 (8 = 2^3), so their product has at
    most 11, float16's count, short of overflow."""
    import torch

    from embg.quantize.int4_blocks import is_storable

    return (int(np.abs(q).max(initial=0)) <= 8 and is_storable(torch.from_numpy(scales.astype(np.float32)))
            and float(scales.max(initial=0)) * 8 <= FP16_MAX)


def _embedding_gbq(model, node, q: np.ndarray, scales: np.ndarray, bits: int, block: int) -> None:
    """GatherBlockQuantized from exact integers q [V, D] and scales [V, D/block]."""
    base, ids = node.input[0], node.input[1]
    if bits == 4:
        data = numpy_helper.from_array(uint4_pairs(q), f"{base}_u4")
        extra = {"bits": 4}
    else:
        data = numpy_helper.from_array((q.astype(np.int16) + 128).astype(np.uint8), f"{base}_q8")
        extra = {"bits": 8}
    half = _gbq_output_is_exact_in_fp16(q, scales)  # float16 scales: GatherBlockQuantized answers in float16
    s_init = numpy_helper.from_array(scales.astype(np.float16 if half else np.float32), f"{base}_scales")
    gathered = f"{base}/gathered_fp16" if half else node.output[0]
    nodes = [helper.make_node("GatherBlockQuantized", [data.name, ids, s_init.name], [gathered],
                              name=f"{base}/GatherBlockQuantized", domain=MS_DOMAIN, gather_axis=0, quantize_axis=1,
                              block_size=block, **extra)]
    if half:  # every row value is exactly a float16 (above): the float32 rows are the same numbers
        nodes.append(helper.make_node("Cast", [gathered], list(node.output), name=f"{base}/Cast", to=TensorProto.FLOAT))
    _replace_node(model, node, nodes, [data, s_init], base)


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
    # MatMulNBits accuracy_level 4 quantizes activations per row and per block of block_size (never
    # per tensor) and computes in int8; 0 keeps float activations.
    return 4 if rule.dynamic_activations else 0


class RowQuantizer:
    """Dynamic int8 activations with one scale per row (token), shared by the MatMuls reading one tensor.

    x -> m = max|x| over the hidden axis -> q = QuantizeLinear(x * 127/m, 1, 128) (uint8, zero point 128)
    y = MatMulIntegerToFloat(q, W int8, 1, column scales, 128) * m/127

    onnxruntime's DynamicQuantizeLinear has one scale per tensor, and its MatMulIntegerToFloat /
    DynamicQuantizeMatMul take only a scalar A scale, so the row scale is applied by a Mul after the
    integer product (which runs on MLAS's u8s8 GEMM, VNNI where the CPU has it). No onnxruntime
    fusion matches this pattern (tests/test_onnx_batching.py checks the optimized graph).

    With the recipe's ``float_channels`` n, an activation's n channels with the largest calibrated peaks
    (embg/quantize/channel_peaks.py) leave the int8 rows: m is taken over the other channels, and
    y adds x[..., kept] @ W[kept, :] in float. A token's outliers then no longer set the step of its
    other channels. (An asymmetric row grid, as XNNPACK's, measured better without the split but
    costs ten more ops per activation and two per product; with the split the symmetric grid meets the
    floors: docs/onnx-int8.md.)
    """

    def __init__(self, model: onnx.ModelProto, channel_peaks: dict[str, np.ndarray] | None = None,
                 float_channels: int = 0, row_dtype: str = "float32") -> None:
        self.model = model
        self.done: dict[str, tuple[str, str]] = {}  # activation -> (uint8 rows, row scale)
        self.peaks = channel_peaks or {}
        self.float_channels = float_channels
        self.row_dtype = row_dtype  # the stored float-channel rows of weights that are not grids
        self.split: dict[str, tuple[np.ndarray, str, str]] = {}  # activation -> (kept channels, float part, the rest)
        self.pending: list[onnx.NodeProto] = []  # split nodes not yet placed in the graph
        consts = {"axes": np.array([-1], np.int64), "tiny": np.array(1e-30, np.float32),
                  "c127": np.array(127.0, np.float32), "one": np.array(1.0, np.float32),
                  "zero_point": np.array(128, np.uint8)}
        self.const = {key: f"{ROW_QUANT_TAG}_{key}" for key in consts}
        model.graph.initializer.extend(numpy_helper.from_array(v, self.const[k]) for k, v in consts.items())

    def channels_kept_float(self, x: str, weight: str) -> np.ndarray | None:
        """The input channels of activation ``x`` kept float (decided by its first reader's calibrated
        peaks; the readers of one activation share them), or None when nothing is split."""
        if x in self.split:
            return self.split[x][0]
        if not self.float_channels or weight not in self.peaks or x in self.done:
            return None
        from embg.quantize.channel_peaks import largest_channels

        kept = largest_channels(self.peaks[weight], self.float_channels)
        base = _float_channels_base(x)
        mask = np.ones(self.peaks[weight].size, np.float32)
        mask[kept] = 0.0
        inits = [numpy_helper.from_array(kept, f"{base}/index"), numpy_helper.from_array(mask, f"{base}/mask")]
        self.model.graph.initializer.extend(inits)
        self.pending = [
            helper.make_node("Gather", [x, inits[0].name], [f"{base}/float"], name=f"{base}/float", axis=-1),
            helper.make_node("Mul", [x, inits[1].name], [f"{base}/rest"], name=f"{base}/rest"),
        ]
        self.split[x] = (kept, f"{base}/float", f"{base}/rest")
        return kept

    def quantize(self, x: str) -> tuple[list[onnx.NodeProto], str, str]:
        """(nodes to insert before the first reader, uint8 rows, row scales) for activation ``x``; when
        ``x`` is split, the rows hold its channels that are not kept float."""
        if x in self.done:
            return [], *self.done[x]
        prologue, self.pending = self.pending if x in self.split else [], []
        source = self.split[x][2] if x in self.split else x
        c, base = self.const, f"{x}/{ROW_QUANT_TAG}"
        node = lambda op, ins, out, **kw: helper.make_node(op, ins, [f"{base}/{out}"], name=f"{base}/{out}", **kw)  # noqa: E731
        nodes = prologue + [
            node("Abs", [source], "abs"),
            node("ReduceMax", [f"{base}/abs", c["axes"]], "absmax", keepdims=1),
            node("Max", [f"{base}/absmax", c["tiny"]], "max"),  # an all-zero row stays zero, not NaN
            node("Div", [f"{base}/max", c["c127"]], "row_scale"),
            node("Div", [c["c127"], f"{base}/max"], "inverse"),
            node("Mul", [source, f"{base}/inverse"], "scaled"),
            node("QuantizeLinear", [f"{base}/scaled", c["one"], c["zero_point"]], "uint8"),
        ]
        self.done[x] = (f"{base}/uint8", f"{base}/row_scale")
        return nodes, *self.done[x]

    def residual(self, x: str) -> tuple[list[onnx.NodeProto], str, str]:
        """(nodes, uint8 rows, row scales) of the rounding residual of ``x``'s int8 rows: what the first
        pass lost (at most half a step per channel), quantized per row in turn, once per activation (the
        products reading ``x`` share it, like its rows). Call after ``quantize``."""
        rows, row_scale = self.done[x]
        source = self.split[x][2] if x in self.split else x
        c, base = self.const, f"{x}/{ROW_QUANT_TAG}/residual"
        if base in self.done:
            return [], *self.done[base]
        nodes = [
            helper.make_node("DequantizeLinear", [rows, c["one"], c["zero_point"]], [f"{base}/steps"],
                             name=f"{base}/steps"),
            helper.make_node("Mul", [f"{base}/steps", row_scale], [f"{base}/rounded"], name=f"{base}/rounded"),
            helper.make_node("Sub", [source, f"{base}/rounded"], [base], name=base),
        ]
        more, residual_rows, residual_scale = self.quantize(base)
        return nodes + more, residual_rows, residual_scale

    def _product(self, rows: str, row_scale: str, weight: "Int8Weight", out: str) -> list[onnx.NodeProto]:
        """out = (rows - 128) @ weight.int8 * column scales * row scales."""
        return [
            helper.make_node("MatMulIntegerToFloat", [rows, weight.int8, self.const["one"], weight.scale,
                                                      self.const["zero_point"]], [f"{out}/product"],
                             name=f"{out}/product", domain=MS_DOMAIN),
            helper.make_node("Mul", [f"{out}/product", row_scale], [out], name=f"{out}/rescale"),
        ]

    def matmul(self, node: onnx.NodeProto, weight: "Int8Weight", float_rows: np.ndarray | None = None,
               residual_pass: bool = False) -> None:
        """Replace MatMul ``node`` by the per-row integer product with ``weight`` (int8 [K, N], column scales).
        When its input is split (``channels_kept_float``), the weight rows of the float channels [kept, N]
        give a float product added to the integer one (the int8 rows there meet zeros): ``float_rows``, or
        for a grid weight its own rows (``_float_rows``). With ``residual_pass`` the rounding residual of
        the int8 rows is quantized too and its product added."""
        x = node.input[0]
        prologue, rows, row_scale = self.quantize(x)
        base = f"{weight.name}/{ROW_QUANT_TAG}"
        split = x in self.split
        integer_out = f"{base}/integer" if split else node.output[0]
        first_out = f"{base}/first" if residual_pass else integer_out
        nodes = prologue + weight.nodes + self._product(rows, row_scale, weight, first_out)
        if residual_pass:
            more, residual_rows, residual_scale = self.residual(x)
            nodes += more + self._product(residual_rows, residual_scale, weight, f"{base}/second") + [
                helper.make_node("Add", [first_out, f"{base}/second"], [integer_out], name=f"{base}/passes")]
        inits = list(weight.inits)
        if split:
            more_inits, more_nodes, rows = self._float_rows(x, weight, float_rows)
            inits += more_inits
            nodes += more_nodes + [
                helper.make_node("MatMul", [self.split[x][1], rows], [f"{base}/float_product"],
                                 name=f"{base}/float_product"),
                helper.make_node("Add", [integer_out, f"{base}/float_product"], list(node.output), name=f"{base}/sum"),
            ]
        _replace_node(self.model, node, nodes, inits, weight.name)

    def _float_rows(self, x: str, weight: "Int8Weight", float_rows: np.ndarray | None
                    ) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto], str]:
        """(initializers, nodes, tensor) of the float channels' weight rows [kept, N], computed at load and
        folded by onnxruntime like the widened blocks. A grid weight's rows are gathered from its own float
        matrix: the very numbers, no bytes (they were 6.3 of the real int4 file's 191 MB as float32 copies).
        Other weights store their float rows, as float32 or (the recipe's float_channel_rows) as float16
        widened at load: half the bytes, a relative rounding of 2^-11 per weight."""
        name = f"{weight.name}_float_rows"
        if weight.matrix is not None:
            index = f"{_float_channels_base(x)}/index"  # channels_kept_float's initializer
            return [], [helper.make_node("Gather", [weight.matrix, index], [name], name=name, axis=0)], name
        if float_rows is None:
            raise ExportError(f"{weight.name}: its input keeps float channels, and no float rows were given")
        if self.row_dtype == "float32":
            return [numpy_helper.from_array(float_rows.astype(np.float32), name)], [], name
        stored = numpy_helper.from_array(float_rows.astype(np.float16), f"{name}_fp16")
        return [stored], [helper.make_node("Cast", [stored.name], [name], name=name, to=TensorProto.FLOAT)], name


def _float_channels_base(x: str) -> str:
    """The name prefix of activation ``x``'s float-channel split (its index, mask and two halves)."""
    return f"{x}/{ROW_QUANT_TAG}/float_channels"


@dataclass
class Int8Weight:
    """An int8 [K, N] MatMul weight with one scale per column, as initializers or computed from them."""

    name: str  # the float weight it replaces
    int8: str  # tensor holding the int8 weight
    scale: str  # tensor holding the column scales [N]
    inits: list[onnx.TensorProto]
    nodes: list[onnx.NodeProto] = field(default_factory=list)  # constant expressions onnxruntime folds at load
    matrix: str | None = None  # a grid weight's float [K, N] (integers x block scales) the int8 is computed from


def int8_channel_weight(name: str, weight: np.ndarray) -> Int8Weight:
    """Symmetric per-column int8 of a float [K, N] weight."""
    absmax = np.abs(weight).max(axis=0)
    scale = np.where(absmax == 0, 1.0, absmax / 127.0).astype(np.float32)
    q = np.clip(np.round(weight / scale), -127, 127).astype(np.int8)
    q_init = numpy_helper.from_array(q, f"{name}_int8")
    s_init = numpy_helper.from_array(scale, f"{name}_col_scale")
    return Int8Weight(name, q_init.name, s_init.name, [q_init, s_init])


def block_symmetric(weight: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Min-max symmetric blocks along K of a [K, N] weight, as onnxruntime's MatMulNBitsQuantizer makes them
    (scale = the block's largest-magnitude value / -2^(bits-1)): (integers [K, N], scales [K/block, N])."""
    k, n = weight.shape
    if k % block:
        raise ExportError(f"input size {k} is not a multiple of the block size {block}")
    blocks = weight.reshape(k // block, block, n).astype(np.float32)
    peak = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=1)[:, None, :], axis=1)[:, 0, :]
    scales = (peak / -(2 ** (bits - 1))).astype(np.float32)
    safe = np.where(scales == 0, 1.0, scales)[:, None, :]
    q = np.clip(np.round(blocks / safe), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return q.reshape(k, n).astype(np.int8), scales


def dequantize_blocks(q: np.ndarray, scales: np.ndarray, block: int) -> np.ndarray:
    """integers [K, N] x block scales [K/block, N] -> float [K, N]."""
    k, n = q.shape
    return (q.reshape(k // block, block, n).astype(np.float32) * scales[:, None, :].astype(np.float32)).reshape(k, n)


def _widened_blocks(name: str, q: np.ndarray, scales: np.ndarray, bits: int, block: int, tag: str
                    ) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto], str, str]:
    """A block-quantized weight (integers q [K, N], scales [K/block, N]) stored at its own width (int4 packed
    two per byte) and turned into the float matrix integers x scales by constant expressions that
    onnxruntime folds when the session loads: (initializers, nodes, float [K, N] output, node name base)."""
    k, n = q.shape
    blocks = q.reshape(k // block, block, n)
    base = f"{name}/{tag}"
    stored = scales_as_stored(scales[:, None, :])
    inits = [numpy_helper.from_array(stored, f"{name}{BLOCK_SCALES_SUFFIX}"),
             numpy_helper.from_array(np.array([k, n], np.int64), f"{name}_shape")]
    if bits == 6:  # 6 bits per weight in the file (embg/quantize/int6_storage.py)
        stored_ints, nodes, integers = int6_storage.int6_as_float(name, blocks, base)
        inits += stored_ints
    else:
        if bits == 4:
            data = helper.make_tensor(f"{name}_q4", TensorProto.INT4, list(blocks.shape), _pack_int4(blocks), raw=True)
        else:
            data = numpy_helper.from_array(blocks.astype(np.int8), f"{name}_q{bits}")
        inits.append(data)
        integers = f"{base}/float"
        nodes = [helper.make_node("Cast", [data.name], [integers], name=integers, to=TensorProto.FLOAT)]
    scale = inits[0].name
    if stored.dtype == np.float16:  # widened to float32 at load like the integers: the same numbers
        scale = f"{base}/scales"
        nodes.append(helper.make_node("Cast", [inits[0].name], [scale], name=scale, to=TensorProto.FLOAT))
    nodes += [
        helper.make_node("Mul", [integers, scale], [f"{base}/dense"], name=f"{base}/dense"),
        helper.make_node("Reshape", [f"{base}/dense", inits[1].name], [f"{base}/matrix"], name=f"{base}/matrix"),
    ]
    return inits, nodes, f"{base}/matrix", base


def block_weight_as_int8(name: str, q: np.ndarray, scales: np.ndarray, bits: int, block: int) -> Int8Weight:
    """A block-quantized weight widened to int8 per column at load (_widened_blocks, then a per-column
    int8 rounding, all folded by onnxruntime): the file keeps the int4 size; the product runs on the int8
    GEMM (docs/onnx-int8.md). The per-column int8 step adds a rounding of at most half an int8 column step
    to each weight."""
    k, n = q.shape
    if steps_from_scales(bits):  # the very step GPTQ rounds to, from the scales alone ([K/block, N] -> [N])
        col_scale = int8_row_steps(torch.from_numpy(np.ascontiguousarray(scales.T, np.float32)), bits).numpy()
    else:
        dense = q.reshape(k // block, block, n).astype(np.float32) * scales[:, None, :].astype(np.float32)
        col_scale = np.abs(dense).reshape(k, n).max(axis=0) / np.float32(127.0)  # exactly what the graph computes
    col_scale = np.where(col_scale == 0, 1.0, col_scale).astype(np.float32)
    inits, nodes, matrix, base = _widened_blocks(name, q, scales, bits, block, f"{ROW_QUANT_TAG}/widen")
    inits += [numpy_helper.from_array((1.0 / col_scale).astype(np.float32), f"{name}_col_inverse"),
              numpy_helper.from_array(col_scale, f"{name}_col_scale")]
    inverse, col_scale_name = inits[-2].name, inits[-1].name
    nodes += [
        helper.make_node("Mul", [matrix, inverse], [f"{base}/columns"], name=f"{base}/columns"),
        helper.make_node("Round", [f"{base}/columns"], [f"{base}/round"], name=f"{base}/round"),
        helper.make_node("Cast", [f"{base}/round"], [f"{base}/int8"], name=f"{base}/int8", to=TensorProto.INT8),
    ]
    return Int8Weight(name, f"{base}/int8", col_scale_name, inits, nodes, matrix)


def _weight_dequantized_at_load(model, node, q: np.ndarray, scales: np.ndarray, bits: int, block: int) -> None:
    """The head's weight-only blocks (q [K, N], scales [K/block, N]) stored at their width and turned into
    float at load, for a float MatMul. The head runs on one pooled row per text, where MatMulNBits' 8-bit
    float path dequantized the whole weight on every call (8.3 of 262 ms per 256-token text in a profile of
    the real checkpoint, docs/onnx-int8.md); folded once at load it is a plain float product. Same numbers,
    same file size."""
    weight = node.input[1]
    inits, nodes, matrix, _ = _widened_blocks(weight, q, scales, bits, block, WIDENED_MATMUL)
    product = helper.make_node("MatMul", [node.input[0], matrix], list(node.output), name=f"{weight}/{WIDENED_MATMUL}")
    _replace_node(model, node, nodes + [product], inits, weight)


def quantize_onnx_model(model: onnx.ModelProto, recipe: QuantRecipe, grids: dict[str, Any] | None = None,
                        web_compatible: bool = False, channel_peaks: dict[str, np.ndarray] | None = None
                        ) -> tuple[onnx.ModelProto, OnnxQuantPlan]:
    """Return the quantized model and its plan. ``grids`` maps weight name -> (q, scales) for qat-grid rules;
    ``channel_peaks`` weight name -> calibrated max |input| per channel, for the recipe's float_channels."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    plan = plan_quantization(model, recipe, web_compatible)
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))  # contrib ops written by hand below
    by_name = {node.name: node for node in model.graph.node}
    inits = _initializer_map(model)
    nodes = weight_nodes(model)

    # 1. Written here: int8 per-row embeddings, exact-grid weights and the head's weight-only blocks.
    for node_name, (group, rule) in plan.nodes.items():
        weight, op_type = nodes[node_name]
        node = by_name[node_name]
        if rule.carries_grid and (not grids or weight not in grids):
            raise ExportError(f"no exact grid (QAT or calibrated) for {weight}; the pipeline computes them first")
        if op_type == "MatMul" and _dequantized_at_load(part_of(weight), rule):
            if rule.carries_grid:
                q, scales = (np.ascontiguousarray(a.T) for a in grids[weight])  # torch [out, in] -> [K, N]
            else:
                q, scales = block_symmetric(_float_view(inits[weight]), rule.bits, rule.block_size)
            _weight_dequantized_at_load(model, node, q.astype(np.int8), scales.astype(np.float32), rule.bits,
                                        rule.block_size)
        elif rule.carries_grid:
            q, scales = grids[weight]  # torch layout: [out, in] and [out, in/32]
            if op_type == "Gather":
                _embedding_gbq(model, node, q, scales, rule.bits, rule.block_size)
            elif rule.activations == PER_ROW:
                continue  # step 3: stored on its grid, run on the int8 GEMM
            else:
                _matmul_nbits(model, node, q.T, scales.T, rule.bits, rule.block_size, _accuracy_level(rule))
        elif op_type == "Gather" and rule.bits == 8:
            _embedding_int8_rows(model, node, _float_view(inits[weight]))

    # 2. MatMulNBitsQuantizer, one pass per (bits, block, accuracy level) so each node gets its own rule.
    passes: dict[tuple, list[str]] = {}
    for node_name, (group, rule) in plan.nodes.items():
        weight, op_type = nodes[node_name]
        if op_type == "MatMul" and (rule.activations == PER_ROW or _dequantized_at_load(part_of(weight), rule)):
            continue  # step 3, or written in step 1
        if rule.algorithm == "min-max" and (rule.granularity == "block" or rule.bits == 4):
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

    # 3. min-max MatMuls with per-row dynamic activations, in graph order (the row quantizer goes in
    # front of the first MatMul reading each activation).
    per_row = [n for n in model.graph.node if n.name in plan.nodes and n.op_type == "MatMul"
               and plan.nodes[n.name][1].activations == PER_ROW]
    if per_row:
        rows = RowQuantizer(model, channel_peaks, recipe.float_channels_on("onnx"), recipe.float_channel_rows)
        inits = _initializer_map(model)
        for node in per_row:
            rule, weight = plan.nodes[node.name][1], node.input[1]
            kept = rows.channels_kept_float(node.input[0], weight)
            second = part_of(weight) in recipe.residual_pass_on("onnx")
            if rule.carries_grid:  # calibrated or QAT integers, kept exactly in the file (read back afterwards)
                q, scales = (np.ascontiguousarray(a.T) for a in grids[weight])  # torch [out, in] -> [K, N]
                stored = block_weight_as_int8(weight, q.astype(np.int8), scales.astype(np.float32), rule.bits,
                                              rule.block_size)
                rows.matmul(node, stored, None, second)  # the float channels' int8 rows meet zeros: no effect
                continue
            dense = _float_view(inits[weight])
            float_rows = None
            if kept is not None:  # those rows go into the float product; the int8 weight gets zeros there
                float_rows, dense = dense[kept], dense.copy()
                dense[kept] = 0.0
            if rule.granularity == "channel":
                rows.matmul(node, int8_channel_weight(weight, dense), float_rows, second)
            else:
                q, scales = block_symmetric(dense, rule.bits, rule.block_size)
                widened = block_weight_as_int8(weight, q, scales, rule.bits, rule.block_size)
                # its matrix has zeros in the kept rows: their float rows are stored instead
                rows.matmul(node, replace(widened, matrix=None), float_rows, second)

    # 4. quantize_dynamic (per-tensor activations) where a recipe asks dynamic_int8 for per-channel int8.
    dynamic = [name for name, (group, rule) in plan.nodes.items()
               if rule.granularity == "channel" and nodes[name][1] == "MatMul" and rule.activations == "dynamic_int8"]
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
        "MatMulIntegerToFloat": ops["MatMulIntegerToFloat"],
        "GatherBlockQuantized": ops["GatherBlockQuantized"],
        "Gather+Mul": sum(1 for n in model.graph.node if n.op_type == "Gather" and n.name.endswith("/GatherInt8")),
        WIDENED_MATMUL: sum(1 for n in model.graph.node if n.op_type == "MatMul" and n.name.endswith(WIDENED_MATMUL)),
    }
    for op, want in plan.expected_ops.items():
        if found.get(op, 0) != want:
            raise ExportError(f"quantization planned {want} {op} node(s) but the model has {found.get(op, 0)}; "
                              "a quantizer skipped weights silently")
    if plan.per_row:
        verify_per_row(model)
    return {k: v for k, v in found.items() if v}


def verify_per_row(model: onnx.ModelProto) -> None:
    """No per-tensor activation quantization, and every integer product reads per-row quantized rows."""
    ops = op_counts(model)
    per_tensor = {op: ops[op] for op in PER_TENSOR_OPS if ops[op]}
    if per_tensor:
        raise ExportError(f"the recipe asks {PER_ROW} activations but the model quantizes activations per tensor "
                          f"({per_tensor}): embeddings would depend on their batch neighbours")
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.op_type in ("MatMulInteger", "MatMulIntegerToFloat"):
            source = producers.get(node.input[0])
            if source is None or source.op_type != "QuantizeLinear" or ROW_QUANT_TAG not in source.name:
                raise ExportError(f"{node.name} reads activations that were not quantized per row")


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
            elif attrs.get("bits", 4) == 4:  # uint8 holding two values, zero point 8
                shape[1] *= 2
                q = _unpack_uint4(numpy_helper.to_array(data).tobytes(), int(np.prod(shape))).astype(np.float32) - 8
            else:
                q = numpy_helper.to_array(data).astype(np.float32).reshape(-1) - 128
            weights[node.name.rsplit("/", 1)[0]] = q.reshape(shape) * np.repeat(scales, block, axis=1)[:, : shape[1]]
    for name, init in inits.items():  # block weights stored at their width and widened to int8 at load
        if not name.endswith(BLOCK_SCALES_SUFFIX):
            continue
        weight = name[: -len(BLOCK_SCALES_SUFFIX)]
        data = inits.get(f"{weight}_q4", inits.get(f"{weight}_q8", inits.get(f"{weight}{int6_storage.LOW_SUFFIX}")))
        if data is None:
            continue
        blocks, scales = list(data.dims), numpy_helper.to_array(init)  # [K/b, b, N], [K/b, 1, N]
        if data.name.endswith(int6_storage.LOW_SUFFIX):
            low = _unpack_uint4(data.raw_data, int(np.prod(blocks)))
            high = numpy_helper.to_array(inits[f"{weight}{int6_storage.HIGH_SUFFIX}"]).reshape(-1)
            q = int6_storage.unpack_int6(low, high, tuple(blocks)).astype(np.float32)
        elif data.data_type == TensorProto.INT4:
            u = _unpack_uint4(data.raw_data, int(np.prod(blocks))).astype(np.int16)
            q = np.where(u >= 8, u - 16, u).astype(np.float32).reshape(blocks)
        else:
            q = numpy_helper.to_array(data).astype(np.float32)
        weights[weight] = (q * scales).reshape(blocks[0] * blocks[1], blocks[2]).T
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
