"""6-bit integers stored in 6 bits in an ONNX file, widened by constant expressions at load.

ONNX has no 6-bit tensor type and onnxruntime no 6-bit kernel, but the ONNX calibrated weights run
on the int8 GEMM anyway (widened at load, see onnx_backend.block_weight_as_int8): only the file
needs the narrow form. A value q in -32..31 is stored as u = q + 32 split in two:

* its low 4 bits as a UINT4 tensor (two per byte, ONNX's own packing);
* its high 2 bits four to a uint8 byte: byte = h0 + 4 h1 + 16 h2 + 64 h3.

The graph rebuilds q = lo + 16 hi - 32 with Cast, Div, Floor, Mod, Mul and Add on constants, which
onnxruntime folds into one initializer when the session loads (the products then read it like any
other int8 weight). 0.75 byte per weight against int8's 1.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from embg.quantize.tflite_flatbuffer import pack_int4

LOW_SUFFIX = "_q6lo"  # the UINT4 low bits of a 6-bit weight (read_back_weights finds it by name)
HIGH_SUFFIX = "_q6hi"  # the uint8 high bits, four values per byte
OFFSET = 32  # q in -32..31 -> u in 0..63


def pack_int6(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """integers in -32..31 (any shape, size divisible by 4) -> (low 4 bits unpacked uint8 of q's shape,
    high 2 bits packed four per byte, flat)."""
    if q.size % 4:
        raise ValueError(f"6-bit storage packs four values per byte; {q.size} values is not a multiple of 4")
    if q.min(initial=0) < -OFFSET or q.max(initial=0) >= OFFSET:
        raise ValueError(f"6-bit storage holds -32..31; got {q.min()}..{q.max()}")
    u = (q.astype(np.int16) + OFFSET).astype(np.uint8)
    high = (u >> 4).reshape(-1, 4)
    packed = (high[:, 0] | (high[:, 1] << 2) | (high[:, 2] << 4) | (high[:, 3] << 6)).astype(np.uint8)
    return u & 0x0F, packed


def unpack_int6(low: np.ndarray, high: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of pack_int6: (low 4 bits of every value, packed high bytes) -> int8 integers."""
    high_bits = np.stack([(high >> shift) & 0x03 for shift in (0, 2, 4, 6)], axis=1).reshape(-1)
    u = low.reshape(-1).astype(np.int16) + 16 * high_bits.astype(np.int16)
    return (u - OFFSET).astype(np.int8).reshape(shape)


def int6_as_float(name: str, q: np.ndarray, base: str
                  ) -> tuple[list[TensorProto], list[helper.NodeProto], str]:
    """Initializers and nodes turning 6-bit storage of ``q`` back into float integers of q's shape:
    (initializers, nodes, float output name)."""
    low, high = pack_int6(q)
    nibbles = pack_int4(low).tobytes()  # element 2i in the low nibble: ONNX's 4-bit packing too
    inits = [helper.make_tensor(f"{name}{LOW_SUFFIX}", TensorProto.UINT4, list(q.shape), nibbles, raw=True),
             numpy_helper.from_array(high.reshape(-1, 1), f"{name}{HIGH_SUFFIX}"),
             numpy_helper.from_array(np.array([1, 4, 16, 64], np.float32), f"{name}_q6_divisors"),
             numpy_helper.from_array(np.array(4.0, np.float32), f"{name}_q6_four"),
             numpy_helper.from_array(np.array(16.0, np.float32), f"{name}_q6_sixteen"),
             numpy_helper.from_array(np.array(-float(OFFSET), np.float32), f"{name}_q6_offset"),
             numpy_helper.from_array(np.array(q.shape, np.int64), f"{name}_q6_shape")]
    low_name, high_name, divisors, four, sixteen, offset, shape = (init.name for init in inits)
    p = f"{base}/q6"
    nodes = [
        helper.make_node("Cast", [low_name], [f"{p}/low"], name=f"{p}/low", to=TensorProto.FLOAT),
        helper.make_node("Cast", [high_name], [f"{p}/bytes"], name=f"{p}/bytes", to=TensorProto.FLOAT),
        helper.make_node("Div", [f"{p}/bytes", divisors], [f"{p}/shifted"], name=f"{p}/shifted"),
        helper.make_node("Floor", [f"{p}/shifted"], [f"{p}/floor"], name=f"{p}/floor"),
        helper.make_node("Mod", [f"{p}/floor", four], [f"{p}/high"], name=f"{p}/high", fmod=1),
        helper.make_node("Reshape", [f"{p}/high", shape], [f"{p}/high_shaped"], name=f"{p}/high_shaped"),
        helper.make_node("Mul", [f"{p}/high_shaped", sixteen], [f"{p}/high_value"], name=f"{p}/high_value"),
        helper.make_node("Add", [f"{p}/low", f"{p}/high_value"], [f"{p}/unsigned"], name=f"{p}/unsigned"),
        helper.make_node("Add", [f"{p}/unsigned", offset], [f"{p}/float"], name=f"{p}/float"),
    ]
    return inits, nodes, f"{p}/float"
