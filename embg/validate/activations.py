"""How close a bundle's activations come to the fp16 limit, read from the bundle itself.

EmbeddingGemma's residual stream reaches ~1e5 in a few channels; a device that runs the bundle
with fp16 activations (a GPU delegate in its default precision, an fp16 conversion) overflows
past 65504 and returns NaN/inf. Where the runtime can expose intermediate tensors we run one text
and report the largest |activation|, so a report says "within 2x of fp16's limit" before a
device finds out:

* ONNX Runtime: every float intermediate tensor is added as a graph output (per layer: nodes are
  assigned to the decoder layer of the last ``layers.N.`` weight seen in topological order);
* LiteRT: ``experimental_preserve_all_tensors=True`` keeps every tensor of the signature's
  subgraph (tensor names are stripped from bundles, so only the overall max is known).

Left out of activation_max: the attention mask's finfo.min floor (a constant by design) and the
squares inside RMSNorm (``square_max``: an fp16 kernel computing the norm in fp16 overflows once
|x| > 256, which the real model passes in its first layers).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

FP16_MAX = 65504.0
FP16_WARN = FP16_MAX / 2  # 32752: "within 2x of the fp16 limit"
PROBE_TEXT = "Sentence embeddings map text to vectors so that similar meanings land close together."
LAYER = re.compile(r"layers\.(\d+)\.")
MASK_FLOOR = 1e30  # the additive attention mask's finfo.min: a deliberate constant, not an activation
SQUARE_OPS = {"Pow", "POW", "SQUARE"}  # x**2 inside RMSNorm: reported apart (fp16 would overflow it even sooner)
SQUARE_FOLLOWERS = {"ReduceMean", "ReduceSum", "Add", "MEAN", "SUM", "ADD"}  # mean(x**2) + eps: still a square


def summarize_maxima(overall: float, per_layer: dict[int, float] | None, source: str,
                     square: float | None = None) -> dict[str, Any]:
    """The report fields: activation_max, fp16_headroom (65504 / max) and a warning within 2x of it."""
    headroom = FP16_MAX / overall if overall > 0 else float("inf")
    result: dict[str, Any] = {
        "activation_max": round(float(overall), 3),
        "fp16_headroom": round(headroom, 4) if np.isfinite(headroom) else None,
        "fp16_unsafe": bool(overall > FP16_WARN),
        "source": source,
    }
    if square:
        result["square_max"] = float(f"{square:.4g}")
    if per_layer:
        result["per_layer"] = {str(k): round(float(v), 3) for k, v in sorted(per_layer.items())}
    if overall > FP16_MAX:
        result["warning"] = f"activations reach {overall:.4g} > fp16 max {FP16_MAX:g}: fp16 activations give inf/NaN"
    elif overall > FP16_WARN:
        result["warning"] = f"activations reach {overall:.4g}, within 2x of fp16's {FP16_MAX:g}: never run in fp16"
    return result


def _top(value: np.ndarray) -> float:
    """max |x| ignoring the mask floor; inf/NaN stay visible (they are the finding)."""
    value = np.abs(value.astype(np.float64))
    if not np.isfinite(value).all():
        return float("inf")
    kept = value[value < MASK_FLOOR]
    return float(kept.max()) if kept.size else 0.0


def onnx_maxima(model_path, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[float, dict[int, float], float]:
    """Max |x| over the float tensors of an ONNX model on one input: overall, per decoder layer, squares."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    inferred = onnx.shape_inference.infer_shapes(model)
    float_types = (TensorProto.FLOAT, TensorProto.FLOAT16)  # an fp16 bundle's activations are FLOAT16
    float_names = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info
                   if v.type.tensor_type.elem_type in float_types}
    existing = {o.name for o in model.graph.output}
    layer_of: dict[str, int] = {}
    squares: set[str] = set()
    integer: set[str] = set()  # int accumulators (MatMulInteger -> Cast) before their scale: not activations
    current = -1
    for node in model.graph.node:
        found = [int(m.group(1)) for text in (node.name, *node.input) for m in [LAYER.search(text)] if m]
        if found:
            current = max(found)
        if node.op_type in SQUARE_OPS or (node.op_type in SQUARE_FOLLOWERS and squares.intersection(node.input)):
            squares.update(node.output)
        if node.op_type in ("MatMulInteger", "ConvInteger") or (node.op_type == "Cast" and integer.intersection(node.input)):
            integer.update(node.output)
        for out in node.output:
            if out in float_names and out not in existing and out not in integer:
                model.graph.output.append(helper.make_tensor_value_info(out, float_names[out], None))
                layer_of[out] = current
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)})
    overall, per_layer, square = 0.0, {}, 0.0
    for name, value in zip(names, values):
        value = np.asarray(value)
        if value.dtype.kind != "f" or value.size == 0:
            continue
        top = _top(value)
        if name in squares:
            square = max(square, top)
            continue
        overall = max(overall, top)
        layer = layer_of.get(name, -1)
        if layer >= 0:
            per_layer[layer] = max(per_layer.get(layer, 0.0), top)
    return overall, per_layer, square


def litert_maxima(model_path, signature: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[float, float]:
    """Max |x| over every float tensor of one LiteRT signature (builtin kernels, all tensors preserved)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # No XNNPACK: reading tensors inside a delegated partition crashes the process.
    interpreter = Interpreter(model_path=str(model_path), num_threads=1, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    runner = interpreter.get_signature_runner(signature)
    runner(input_ids=input_ids.astype(np.int32), attention_mask=attention_mask.astype(np.int32))
    subgraph = runner._subgraph_index  # noqa: SLF001 - the public API has no other way to reach it
    outputs, squares = _litert_op_outputs(model_path, subgraph)
    overall, square = 0.0, 0.0
    for index in sorted(outputs):
        try:
            value = interpreter.get_tensor(index, subgraph)
        except ValueError:  # tensors without data (weights elsewhere, temporaries)
            continue
        if value.dtype == np.float32 and value.size:
            if index in squares:
                square = max(square, _top(value))
            else:
                overall = max(overall, _top(value))
    return overall, square


def _litert_op_outputs(model_path, subgraph: int) -> tuple[set[int], set[int]]:
    """(every op output, the x*x / mean(x*x) + eps ones) of a subgraph, from the flatbuffer.

    Read from the file because the interpreter's op API sees subgraph 0 only, and because
    get_tensor on a tensor no op wrote (unallocated) crashes the process."""
    from embg.quantize import tflite_flatbuffer as fb

    model = fb.read_model(model_path)
    squares: set[int] = set()
    outputs: set[int] = set()
    root: dict[int, int] = {}  # RESHAPE output -> the tensor it views (x * reshape(x) is still a square)
    for op in model.subgraphs[subgraph].operators:
        outputs.update(int(i) for i in op.outputs)
        name = fb.op_name(model, op)
        inputs = [root.get(int(i), int(i)) for i in op.inputs]
        if name == "RESHAPE":
            root[int(op.outputs[0])] = inputs[0]
        if (name in SQUARE_OPS or (name == "MUL" and len(inputs) == 2 and inputs[0] == inputs[1])
                or (name in SQUARE_FOLLOWERS | {"RESHAPE"} and squares.intersection(inputs))):
            squares.update(int(i) for i in op.outputs)
    return outputs, squares


def activation_report(artifact, tokenizer, text: str = PROBE_TEXT) -> dict[str, Any]:
    """Run ``text`` (document prompt) through the bundle's file and report its activation maxima."""
    from embg.bundle import choose_bucket, fit_to

    prompt = "document" if "document" in tokenizer.prompts else None
    encoded = tokenizer.encode([text], prompt=prompt)
    ids, mask = np.asarray(encoded.input_ids), np.asarray(encoded.attention_mask)
    if artifact.target == "onnx":
        overall, per_layer, square = onnx_maxima(artifact.model_path, ids, mask)
        return summarize_maxima(overall, per_layer, "onnxruntime: every float tensor as a graph output", square)
    if artifact.target == "tflite":
        buckets = {int(s["seq_len"]): s["name"] for s in artifact.manifest["signatures"]}
        bucket = choose_bucket(sorted(buckets), ids.shape[1])
        ids, mask = fit_to(ids[:, :bucket], mask[:, :bucket], bucket)
        overall, square = litert_maxima(artifact.model_path, buckets[bucket], ids, mask)
        return summarize_maxima(overall, None, "litert: experimental_preserve_all_tensors (builtin kernels)", square)
    return {"activation_max": None, "fp16_headroom": None, "source": f"no intermediate tensors for {artifact.target}"}


def report_field(artifact, tokenizer) -> dict[str, Any]:
    """activation_report for the validator: a runtime that cannot expose tensors gives a note, never a failure."""
    try:
        return activation_report(artifact, tokenizer)
    except Exception as exc:  # noqa: BLE001 - diagnostics must not turn a passing bundle into a crash
        return {"activation_max": None, "fp16_headroom": None, "error": f"{type(exc).__name__}: {exc}"}
