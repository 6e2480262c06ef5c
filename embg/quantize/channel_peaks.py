"""Which input channels of each int8 activation to keep in float (the recipe's ``float_channels``).

EmbeddingGemma's activations carry a few huge channels (~1e2-1e5 on some tokens). With one int8 scale
per token, those few channels set the step for all the token's others, which then round coarsely. The
channels are the same ones from text to text, so they are found once, on the built-in calibration
texts (not the validator's): per linear layer, the largest |input| of each channel over real tokens.
Both targets keep the largest ``float_channels`` of them in a small float product (ONNX:
embg/quantize/onnx_backend.py, LiteRT: embg/quantize/litert_split.py) and quantize the rest per row.
"""

from __future__ import annotations

import numpy as np

from embg.model.graph import EmbeddingGemmaGraph
from embg.quantize.smoothing import input_maxima

# The recorded layer input -> the weights that read that same input.
READERS = {"q_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
           "o_proj": ("self_attn.o_proj",),
           "gate_proj": ("mlp.gate_proj", "mlp.up_proj"),
           "down_proj": ("mlp.down_proj",)}


def linear_input_peaks(graph: EmbeddingGemmaGraph, batches: list) -> dict[str, np.ndarray]:
    """weight name (as in the graph and the ONNX file) -> max |input| per input channel, over the batches."""
    maxima = input_maxima(graph, batches)
    peaks = {}
    for key, value in maxima.items():
        layer, recorded = key.split(".", 1)
        for reader in READERS[recorded]:
            peaks[f"layers.{layer}.{reader}.weight"] = value.float().numpy()
    return peaks


def float_channel_peaks(job, count: int) -> dict[str, np.ndarray] | None:
    """``linear_input_peaks`` of an export job on the built-in calibration texts (not the validator's),
    when its target keeps ``count`` > 0 channels float; else None."""
    if not count:
        return None
    from embg.quantize.calibration_texts import batches_for, calibration_split

    calibration, _ = calibration_split()
    job.progress(f"finding each int8 activation's {count} largest channels (kept float) on "
                 f"{len(calibration)} built-in calibration texts")
    return linear_input_peaks(job.graph, batches_for(job.model.tokenizer, calibration))


def largest_channels(peaks: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest peaks, ascending (a deterministic order for the graph)."""
    count = min(count, peaks.size)
    return np.sort(np.argsort(-peaks, kind="stable")[:count]).astype(np.int64)
