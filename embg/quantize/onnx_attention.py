"""int8 attention products on ONNX Runtime: scores (q x k^T) and weighted values (p x v) in int8.

The two products of every layer multiply two activations, so the weight quantizers leave them in
float; at 2048 tokens they are about as much work as all the weight matmuls together. Here each
becomes MLAS's u8 x s8 integer GEMM with scales per token, so nothing depends on other texts in
the batch or on padding:

    scores:  q rows -> uint8 (zero point 128), k^T columns (one per key) -> int8
             s = MatMulIntegerToFloat(q_q, k_q) * q_scale * k_scale
    values:  v rows (one per key) -> int8 with scale v_scale; v_scale folded into the softmax
             rows (p' = p * v_scale^T, exact), p' rows -> uint8 (zero point 0, all 255 steps)
             o = MatMulIntegerToFloat(p'_q, v_q) * p'_scale

A masked key has p = 0, so its values never reach any scale. onnxruntime's DynamicQuantizeLinear
has one scale per tensor and MatMulIntegerToFloat takes scalar scales only, hence explicit Muls.
LiteRT has no dynamic int8 product of two activations: there the recipe field is noted, not applied.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"
# Node-name tag of per-row quantization helpers (the same as the weight quantizer's): their outputs
# (127 / max, not-yet-rescaled products) are not model activations for the fp16-headroom scan.
ROW_QUANT_TAG = "RowQuantize"
PASS_THROUGH = ("Reshape", "Transpose")  # between Softmax and the value product in the export graph


def _constants(model: onnx.ModelProto) -> dict[str, str]:
    values = {"last": np.array([-1], np.int64), "rows": np.array([-2], np.int64), "tiny": np.array(1e-30, np.float32),
              "c127": np.array(127.0, np.float32), "c255": np.array(255.0, np.float32),
              "one": np.array(1.0, np.float32), "u8_mid": np.array(128, np.uint8), "u8_zero": np.array(0, np.uint8),
              "s8_zero": np.array(0, np.int8)}
    names = {key: f"attention_products/{ROW_QUANT_TAG}/{key}" for key in values}
    present = {init.name for init in model.graph.initializer}
    model.graph.initializer.extend(numpy_helper.from_array(v, names[k]) for k, v in values.items() if names[k] not in present)
    return names


def _quantize(x: str, base: str, axis: str, kind: str, c: dict[str, str]) -> tuple[list[onnx.NodeProto], str, str]:
    """Nodes quantizing ``x`` with one scale per slice along ``axis`` ("last": rows, "rows": columns).

    kind: "u8" symmetric around 128, "s8" symmetric, "u8+" non-negative (0..255).
    Returns (nodes, quantized tensor, scale tensor).
    """
    def node(op: str, inputs: list[str], out: str, **attrs) -> onnx.NodeProto:
        return helper.make_node(op, inputs, [f"{base}/{out}"], name=f"{base}/{out}", **attrs)

    levels = c["c255"] if kind == "u8+" else c["c127"]
    zero_point = {"u8": c["u8_mid"], "s8": c["s8_zero"], "u8+": c["u8_zero"]}[kind]
    nodes = [] if kind == "u8+" else [node("Abs", [x], "abs")]
    nodes += [
        node("ReduceMax", [x if kind == "u8+" else f"{base}/abs", c[axis]], "absmax", keepdims=1),
        node("Max", [f"{base}/absmax", c["tiny"]], "max"),  # an all-zero slice stays zero, not NaN
        node("Div", [f"{base}/max", levels], "scale"),
        node("Div", [levels, f"{base}/max"], "inverse"),
        node("Mul", [x, f"{base}/inverse"], "scaled"),
        node("QuantizeLinear", [f"{base}/scaled", c["one"], zero_point], "q"),
    ]
    return nodes, f"{base}/q", f"{base}/scale"


def quantize_attention_products(model: onnx.ModelProto) -> Counter:
    """Rewrite every MatMul of two activations in place; returns {"scores": n, "values": n}."""
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}

    def after_softmax(name: str) -> bool:
        node = producer.get(name)
        while node is not None and node.op_type in PASS_THROUGH:
            node = producer.get(node.input[0])
        return node is not None and node.op_type == "Softmax"

    c = _constants(model)
    rewritten: list[onnx.NodeProto] = []
    counts: Counter = Counter()
    for node in graph.node:
        if node.op_type != "MatMul" or any(name in weights for name in node.input):
            rewritten.append(node)
            continue
        values = after_softmax(node.input[0])
        base = f"{node.name or node.output[0]}/{ROW_QUANT_TAG}"
        product = f"{base}/product"
        if values:
            b_nodes, b_q, b_scale = _quantize(node.input[1], f"{base}/b", "last", "s8", c)  # one scale per key
            key_scale = f"{base}/b/scale_per_key"
            weighted = f"{base}/a/weighted"
            b_nodes += [helper.make_node("Squeeze", [b_scale, c["last"]], [f"{key_scale}_flat"], name=f"{key_scale}_flat"),
                        helper.make_node("Unsqueeze", [f"{key_scale}_flat", c["rows"]], [key_scale], name=key_scale),
                        helper.make_node("Mul", [node.input[0], key_scale], [weighted], name=weighted)]
            a_nodes, a_q, a_scale = _quantize(weighted, f"{base}/a", "last", "u8+", c)
            rewritten += b_nodes + a_nodes + [
                helper.make_node("MatMulIntegerToFloat", [a_q, b_q, c["one"], c["one"], c["u8_zero"]], [product],
                                 name=product, domain=MS_DOMAIN),
                helper.make_node("Mul", [product, a_scale], list(node.output), name=f"{product}/rows"),
            ]
        else:
            a_nodes, a_q, a_scale = _quantize(node.input[0], f"{base}/a", "last", "u8", c)  # one scale per query
            b_nodes, b_q, b_scale = _quantize(node.input[1], f"{base}/b", "rows", "s8", c)  # one per key (column)
            rewritten += a_nodes + b_nodes + [
                helper.make_node("MatMulIntegerToFloat", [a_q, b_q, c["one"], c["one"], c["u8_mid"]], [product],
                                 name=product, domain=MS_DOMAIN),
                helper.make_node("Mul", [product, a_scale], [f"{product}/rows"], name=f"{product}/rows"),
                helper.make_node("Mul", [f"{product}/rows", b_scale], list(node.output), name=f"{product}/columns"),
            ]
        counts["values" if values else "scores"] += 1
    del graph.node[:]
    graph.node.extend(rewritten)
    if not any(opset.domain == MS_DOMAIN for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return counts
