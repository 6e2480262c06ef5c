"""onnxruntime's GatherBlockQuantized on an int4 embedding table of the real model's shape (262144 x 768,
blocks of 64), stored two ways with the same integers: an INT4 tensor, or uint8 pairs with ``bits`` 4 and
the default zero point 8 (what the `int4` preset writes, embg/quantize/onnx_backend.py). 256 random token
ids, 1 thread, interleaved runs; checks both give the same floats.

    python -m bench.embedding_gather [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from embg.quantize.onnx_backend import _pack_int4, uint4_pairs

VOCAB, HIDDEN, BLOCK, TOKENS = 262144, 768, 64, 256


def _session(data: TensorProto, scales: np.ndarray, attributes: dict) -> ort.InferenceSession:
    node = helper.make_node("GatherBlockQuantized", ["data", "ids", "scales"], ["y"], domain="com.microsoft",
                            gather_axis=0, quantize_axis=1, block_size=BLOCK, **attributes)
    graph = helper.make_graph([node], "gather", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, TOKENS])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, TOKENS, HIDDEN])],
                              [data, numpy_helper.from_array(scales, "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 1, 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.embedding_gather", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, size=(VOCAB, HIDDEN)).astype(np.int8)
    scales = (rng.random((VOCAB, HIDDEN // BLOCK)) * 0.01 + 0.001).astype(np.float32)
    sessions = {
        "INT4 tensor": _session(helper.make_tensor("data", TensorProto.INT4, [VOCAB, HIDDEN], _pack_int4(q), raw=True),
                                scales, {}),
        "uint8 pairs (bits 4)": _session(numpy_helper.from_array(uint4_pairs(q), "data"), scales, {"bits": 4}),
    }
    ids = {"ids": rng.integers(0, VOCAB, size=(1, TOKENS)).astype(np.int64)}
    first, second = (session.run(None, ids)[0] for session in sessions.values())
    if not np.array_equal(first, second):
        raise SystemExit("the two layouts gather different numbers")
    times: dict[str, list[float]] = {label: [] for label in sessions}
    for _ in range(args.repeats):
        for label, session in sessions.items():
            start = time.perf_counter()
            session.run(None, ids)
            times[label].append(time.perf_counter() - start)
    for label, values in times.items():
        print(f"{label}: median {statistics.median(values) * 1e3:.3f} ms per {TOKENS} tokens (same numbers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
