"""Proof that an fp16 ONNX export really computes in fp16.

torch's exporter upcasts some half-precision ops to float32 on its own (``abs``, ``amax``, ``sum``
on CPU), which would leave float32 islands inside a model sold as fp16. After exporting the fp16
graph, every op that carries the model's work or its range (matmuls, norms' row max, squares and
means, softmax, GELU) must write float16, and every weight must be stored in float16. Only the
graph's small float32 islands remain: positions and rope angles (position x frequency needs
more than fp16's 11 bits), the pooling shares taken from the mask, and the output's final cast.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from embg.errors import ExportError

FP16_OPS = ("MatMul", "Gemm", "Pow", "ReduceMean", "ReduceMax", "Softmax", "Gelu", "Sqrt", "Reciprocal")
SMALL_CONSTANT = 1024  # elements: float32 constants below this (rope frequencies) are not weights


def value_types(model) -> dict[str, int]:
    """elem_type of every named value (inputs, outputs, initializers, inferred intermediates)."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    types.update({init.name: init.data_type for init in graph.initializer})
    return types


def check_fp16_compute(model) -> dict[str, Any]:
    """What runs in which precision; ExportError when a compute op or a weight is float32."""
    from onnx import TensorProto

    types = value_types(model)
    in_fp32 = [node for node in model.graph.node if any(types.get(o) == TensorProto.FLOAT for o in node.output)]
    heavy = [node.name or node.op_type for node in in_fp32 if node.op_type in FP16_OPS]
    fp32_weights = [init.name for init in model.graph.initializer
                    if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= SMALL_CONSTANT]
    if heavy or fp32_weights:
        raise ExportError(f"the fp16 ONNX export still computes or stores float32: ops {heavy[:4]}, "
                          f"weights {fp32_weights[:4]}")
    return {
        "fp16_values": sum(1 for t in types.values() if t == TensorProto.FLOAT16),
        "fp32_values": sum(1 for t in types.values() if t == TensorProto.FLOAT),
        "fp32_ops": dict(sorted(Counter(node.op_type for node in in_fp32).items())),
    }
