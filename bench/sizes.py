"""Where a bundle's bytes go, per recipe group (embedding, attention, projections, feed_forward,
head), read from the written file itself.

ONNX keeps the torch names on initializers (see onnx_target.restore_weight_names), so the
recipe's own name patterns apply. TFLite names are stripped to ``t<index>``, so weights are
recognised by their consumer op and shape: EMBEDDING_LOOKUP is the embedding, FULLY_CONNECTED
weights by [out, in] shape, and the square q_proj / o_proj told apart by q_proj's input also
feeding the k/v projections. Per-channel scales and zero points live in each signature's
quantization tables (not in shared buffers), so they are counted once per signature.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def _fc_groups(config: dict[str, Any], head: tuple[int, ...]) -> dict[tuple[int, int], str]:
    d, ff = config["hidden_size"], config["intermediate_size"]
    q = config["num_attention_heads"] * config["head_dim"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    shapes = {(kv, d): "attention", (ff, d): "feed_forward", (d, ff): "feed_forward", (d, q): "projections"}
    width = d
    for out in head:
        shapes[(out, width)] = "head"
        width = out
    if (q, d) not in shapes:
        shapes[(q, d)] = "attention"  # q_proj, unless it is square (resolved by its input below)
    return shapes


def tflite_breakdown(path: Path, config: dict[str, Any], head: tuple[int, ...]) -> dict[str, Any]:
    from embg.quantize import tflite_flatbuffer as fb

    model = fb.read_model(path)
    kv_shape = (config["num_key_value_heads"] * config["head_dim"], config["hidden_size"])
    shapes = _fc_groups(config, head)
    groups: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    seen_buffers: set[int] = set()
    for subgraph in model.subgraphs:
        fc_inputs_with_kv = set()
        uses = []
        for op in subgraph.operators:
            name = fb.op_name(model, op)
            if name not in fb.WEIGHT_OPS:
                continue
            tensor = subgraph.tensors[int(op.inputs[fb.WEIGHT_OPS[name]])]
            if fb.raw_bytes(model, tensor) is None:
                continue
            shape = tuple(int(x) for x in tensor.shape)
            if name == "FULLY_CONNECTED" and shape == kv_shape:
                fc_inputs_with_kv.add(int(op.inputs[0]))
            uses.append((name, op, tensor, shape))
        for name, op, tensor, shape in uses:
            if name == "EMBEDDING_LOOKUP":
                group = "embedding"
            elif shape[0] == shape[1] and shapes.get(shape) in ("projections", "attention"):
                group = "attention" if int(op.inputs[0]) in fc_inputs_with_kv else "projections"
            else:
                group = shapes.get(shape, "other")
            kind = fb.type_name(tensor.type)
            if tensor.buffer not in seen_buffers:  # weights are shared by every signature
                seen_buffers.add(tensor.buffer)
                groups[group][f"weights_{kind}"] += len(model.buffers[tensor.buffer].data)
                details = tensor.quantization.details if tensor.quantization else None
                if details is not None:  # blockwise: a separate scales tensor with its own buffer
                    scales = subgraph.tensors[details.scales]
                    if scales.buffer not in seen_buffers:
                        seen_buffers.add(scales.buffer)
                        groups[group]["block_scales"] += len(model.buffers[scales.buffer].data)
            quant = tensor.quantization
            if quant is not None and quant.scale is not None:
                zero_points = np.asarray(quant.zeroPoint).size if quant.zeroPoint is not None else 0
                per_sig = np.asarray(quant.scale).size * 4 + zero_points * 8  # float32 scale, int64 zero point
                groups[group]["channel_params_all_signatures"] += per_sig
    return _finish(groups, Path(path).stat().st_size, len(model.subgraphs))


def onnx_breakdown(model_path: Path) -> dict[str, Any]:
    import onnx

    from embg.quantize.groups import group_of

    model = onnx.load(str(model_path), load_external_data=False)
    groups: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for init in model.graph.initializer:
        size = len(init.raw_data)
        for entry in init.external_data:
            if entry.key == "length":
                size = int(entry.value)
        if not size:
            size = onnx.numpy_helper.to_array(init).nbytes if not init.external_data else 0
        try:
            group = group_of(init.name) or "other"
        except ValueError:
            group = "other"
        kind = onnx.TensorProto.DataType.Name(init.data_type)
        groups[group][f"initializers_{kind}"] += size
    files = [model_path, *model_path.parent.glob(model_path.name + ".data"), *model_path.parent.glob("*.onnx.data")]
    total = sum(p.stat().st_size for p in set(files) if p.is_file())
    return _finish(groups, total, None)


def _finish(groups: dict[str, dict[str, float]], file_bytes: int, signatures: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"file_mb": round(file_bytes / 1e6, 2), "signatures": signatures, "groups": {}}
    accounted = 0.0
    for group in sorted(groups, key=lambda g: -sum(groups[g].values())):
        parts = {k: round(v / 1e6, 2) for k, v in sorted(groups[group].items())}
        total = sum(groups[group].values())
        accounted += total
        out["groups"][group] = {"mb": round(total / 1e6, 2), "share": round(total / file_bytes, 3), "parts": parts}
    out["unattributed_mb"] = round((file_bytes - accounted) / 1e6, 2)  # graph, per-signature constants, metadata
    return out


def breakdown(bundle: Path, manifest: dict[str, Any], config: dict[str, Any], head: tuple[int, ...]) -> dict[str, Any]:
    path = Path(bundle) / manifest["model_file"]
    if manifest["target"] == "tflite":
        return tflite_breakdown(path, config, head)
    return onnx_breakdown(path)
