"""Runtime selection details: ONNX Runtime providers, LiteRT's weight cache and its fallback to tflite-runtime."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from embg.errors import EmbgError
from embg.export.artifact import Artifact
from embg.runtimes import load_all, load_runtime


@pytest.fixture(scope="module")
def bundles(tiny_bundle):
    return {t: Artifact.load(tiny_bundle(t, 32)) for t in ("onnx", "tflite")}


def test_unavailable_onnx_provider_is_named_with_alternatives(bundles):
    load_all()
    with pytest.raises(EmbgError, match="CUDAExecutionProvider is not available here; available: .*CPUExecutionProvider"):
        load_runtime("onnxruntime", bundles["onnx"], provider="CUDAExecutionProvider")


def test_litert_falls_back_to_tflite_runtime_and_says_so(bundles, monkeypatch):
    """Older Raspberry Pi images only have tflite-runtime; the runtime must use it and report it."""
    from ai_edge_litert.interpreter import Interpreter as RealInterpreter

    shim = types.ModuleType("tflite_runtime.interpreter")
    shim.Interpreter = RealInterpreter  # the same engine under the old package's import path
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", shim)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "ai_edge_litert.compiled_model", None)
    load_all()
    runtime = load_runtime("litert", bundles["tflite"], threads=1)
    ids = np.full((1, 20), 9)
    out = runtime.embed(ids, np.ones_like(ids))
    assert out.shape == (1, 192) and np.isfinite(out).all()
    assert runtime.version_info()["package"] == "tflite-runtime"
    assert runtime.last_bucket == 64


def test_no_litert_package_gives_install_hint(bundles, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.compiled_model", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    load_all()
    with pytest.raises(EmbgError, match="pip install ai-edge-litert"):
        load_runtime("litert", bundles["tflite"])


def test_litert_packs_weights_once_into_a_reused_cache_file(bundles, tmp_path, monkeypatch):
    """Without the XNNPACK weight cache every signature gets its own packed copy of the weights."""
    monkeypatch.setenv("EMBG_XNNPACK_CACHE", str(tmp_path / "xnnpack"))
    load_all()
    ids = np.full((2, 20), 9)
    first = load_runtime("litert", bundles["tflite"], threads=1)
    info = first.version_info()
    assert info["api"] == "compiled" and info["xnnpack_weight_cache"]
    cache = Path(info["xnnpack_weight_cache"])
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # built privately, renamed once packed
    built = cache.stat().st_mtime_ns
    out = first.embed(ids, np.ones_like(ids))

    again = load_runtime("litert", bundles["tflite"], threads=1)
    np.testing.assert_array_equal(again.embed(ids, np.ones_like(ids)), out)
    assert again.weight_cache == cache and cache.stat().st_mtime_ns == built  # reused, not rebuilt

    cache.write_bytes(b"not a cache")  # XNNPACK rejects a foreign header and rebuilds it
    np.testing.assert_array_equal(load_runtime("litert", bundles["tflite"], threads=1).embed(ids, np.ones_like(ids)),
                                  out)
    assert cache.stat().st_size > 100

    interpreter = load_runtime("litert", bundles["tflite"], threads=1, api="interpreter")
    np.testing.assert_allclose(interpreter.embed(ids, np.ones_like(ids)), out, atol=1e-6)
    monkeypatch.setenv("EMBG_XNNPACK_CACHE", "off")
    assert load_runtime("litert", bundles["tflite"], threads=1).version_info()["xnnpack_weight_cache"] is None
