"""Read a .tflite flatbuffer: weight tensors, their types and quantization, dequantized values.

Used to verify that the quantizer really did what the recipe planned (it skips unsupported
combinations silently) and to read weights back for exact-grid checks.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WEIGHT_OPS = {"FULLY_CONNECTED": 1, "EMBEDDING_LOOKUP": 1}  # op name -> index of its weight input
NP_TYPES = {"INT8": np.int8, "FLOAT32": np.float32, "INT32": np.int32, "FLOAT16": np.float16, "INT16": np.int16,
            "INT64": np.int64, "UINT8": np.uint8}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def read_model(path: Path):
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    for buffer in model.buffers:
        # Buffers stored after the flatbuffer (ai-edge-quantizer's output) come back as bytes, which
        # write_model packs one Python call per byte: ~100 s for the full int4 file, 1 s as arrays.
        if buffer.data is not None and not isinstance(buffer.data, np.ndarray):
            buffer.data = np.frombuffer(bytes(buffer.data), dtype=np.uint8)
    return model


def write_model(model, path: Path) -> None:
    """Write ``model`` with identical quantization parameters stored once.

    Every signature (bucket) is a subgraph with its own tensor table, and each table repeats a weight's
    per-channel scales and int64 zero points: 12 bytes per channel or table row, seven times over. A
    flatbuffer may point many tensors at one table, and the runtime copies them per tensor when it loads.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    with shared_quantization_tables():
        flatbuffer_utils.write_model(model, str(path))


@contextmanager
def shared_quantization_tables():
    """While packing (one model, one builder), QuantizationParameters with the same contents get one table."""
    schema = _schema()
    original = schema.QuantizationParametersT.Pack
    packed: dict[tuple, int] = {}

    def pack_once(params, builder) -> int:
        if params.details is not None:  # custom details: not compared, packed as before
            return original(params, builder)
        key = (params.detailsType, params.quantizedDimension,
               *(None if v is None else np.asarray(v, dtype=t).tobytes()
                 for v, t in ((params.min, np.float32), (params.max, np.float32), (params.scale, np.float32),
                              (params.zeroPoint, np.int64))))
        if key not in packed:
            packed[key] = original(params, builder)
        return packed[key]

    schema.QuantizationParametersT.Pack = pack_once
    try:
        yield
    finally:
        schema.QuantizationParametersT.Pack = original


def type_name(code: int) -> str:
    schema = _schema()
    return {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}[code]


def op_name(model, op) -> str:
    from ai_edge_litert.tools import flatbuffer_utils

    schema = _schema()
    code = flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}[code]


def raw_bytes(model, tensor) -> bytes | None:
    data = model.buffers[tensor.buffer].data
    return None if data is None or len(data) == 0 else np.asarray(data, dtype=np.uint8).tobytes()


def unpack_int4(raw: bytes, count: int) -> np.ndarray:
    """Two signed values per byte, element 2i in the low nibble."""
    b = np.frombuffer(raw, dtype=np.uint8)
    lo = (b & 0x0F).astype(np.int8)
    hi = (b >> 4).astype(np.int8)
    lo[lo > 7] -= 16
    hi[hi > 7] -= 16
    out = np.empty(b.size * 2, np.int8)
    out[0::2], out[1::2] = lo, hi
    return out[:count]


def pack_int4(values: np.ndarray) -> np.ndarray:
    u = (values.astype(np.int16).reshape(-1) & 0x0F).astype(np.uint8)
    if u.size % 2:
        u = np.append(u, np.uint8(0))
    return (u[0::2] | (u[1::2] << 4)).astype(np.uint8)


def int_values(model, tensor) -> np.ndarray:
    raw = raw_bytes(model, tensor)
    shape = tuple(int(d) for d in tensor.shape)
    kind = type_name(tensor.type)
    if kind == "INT4":
        return unpack_int4(raw, int(np.prod(shape))).reshape(shape)
    return np.frombuffer(raw, dtype=NP_TYPES[kind]).reshape(shape)


def dequantize(model, subgraph, tensor) -> np.ndarray:
    """Float values of a constant (float, per-channel int8/int4, or blockwise)."""
    values = int_values(model, tensor).astype(np.float32)
    quant = tensor.quantization
    if type_name(tensor.type) in ("FLOAT32", "FLOAT16") or quant is None:
        return values
    if quant.details is not None:  # blockwise: a separate fp16 scales tensor [N, K/block]
        scales = int_values(model, subgraph.tensors[quant.details.scales]).astype(np.float32)
        return values * np.repeat(scales, quant.details.blockSize, axis=1)[:, : values.shape[1]]
    scale = np.asarray(quant.scale, np.float32)
    zero = np.asarray(quant.zeroPoint if quant.zeroPoint is not None else [0], np.float32)
    shape = [1] * values.ndim
    shape[quant.quantizedDimension] = -1
    return (values - zero.reshape(shape if zero.size > 1 else [1] * values.ndim)) * scale.reshape(
        shape if scale.size > 1 else [1] * values.ndim)


@dataclass
class WeightUse:
    """One weight-carrying op in one signature subgraph."""

    subgraph: int
    op_index: int
    op: str
    scope: str  # what ai-edge-quantizer matches recipe regexes against (its get_op_scope)
    tensor_index: int
    tensor_name: str
    type: str
    digest: str | None  # sha1 of float32 data (None once quantized)


def weight_uses(model) -> list[WeightUse]:
    from ai_edge_quantizer.utils.tfl_flatbuffer_utils import get_op_scope

    uses = []
    for sg_index, subgraph in enumerate(model.subgraphs):
        for op_index, op in enumerate(subgraph.operators):
            name = op_name(model, op)
            if name not in WEIGHT_OPS:
                continue
            tensor_index = int(op.inputs[WEIGHT_OPS[name]])
            tensor = subgraph.tensors[tensor_index]
            raw = raw_bytes(model, tensor)
            if raw is None:
                continue  # not a constant (activation x activation)
            kind = type_name(tensor.type)
            digest = hashlib.sha1(raw).hexdigest() if kind == "FLOAT32" else None
            uses.append(WeightUse(sg_index, op_index, name, get_op_scope(op, subgraph.tensors),
                                  tensor_index, tensor.name.decode(), kind, digest))
    return uses


def dynamic_weight_products(model) -> list[tuple[int, int]]:
    """(subgraph, op) of every FULLY_CONNECTED whose weights are an activation, not a constant: XNNPACK runs
    those several times slower than a BATCH_MATMUL of the same size (embg/model/attention.py)."""
    found = []
    for sg_index, subgraph in enumerate(model.subgraphs):
        for op_index, op in enumerate(subgraph.operators):
            if op_name(model, op) == "FULLY_CONNECTED":
                weights = subgraph.tensors[int(op.inputs[WEIGHT_OPS["FULLY_CONNECTED"]])]
                if raw_bytes(model, weights) is None:
                    found.append((sg_index, op_index))
    return found


def strip_tensor_names(path: Path) -> int:
    """Shorten internal tensor names to ``t<index>``; returns bytes saved.

    Names are debug strings (the converter writes module paths, ~100 bytes each, per signature);
    apps address signatures and their I/O by the SignatureDef's own names, which stay.
    """
    before = Path(path).stat().st_size
    model = read_model(path)
    for subgraph in model.subgraphs:
        for index, tensor in enumerate(subgraph.tensors):
            tensor.name = f"t{index}".encode()
    write_model(model, path)
    return before - Path(path).stat().st_size
