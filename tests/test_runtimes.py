"""Runtime selection details: ONNX Runtime providers, LiteRT's weight cache and its fallback to tflite-runtime."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from embg.errors import EmbgError
from embg.bundle import Artifact
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
    # built privately, renamed once packed, sealed with a sidecar recording its size and checksum
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name, cache.name + ".json"]
    # keyed by the model file's sha256 as recorded in (and verified against) the manifest
    model_sha = bundles["tflite"].manifest["file_sha256"][bundles["tflite"].manifest["model_file"]]
    assert cache.name.startswith(model_sha[:32])
    built = cache.stat().st_mtime_ns
    out = first.embed(ids, np.ones_like(ids))

    again = load_runtime("litert", bundles["tflite"], threads=1)
    np.testing.assert_array_equal(again.embed(ids, np.ones_like(ids)), out)
    assert again.weight_cache == cache and cache.stat().st_mtime_ns == built  # reused, not rebuilt

    cache.write_bytes(b"not a cache")  # rebuilt
    np.testing.assert_array_equal(load_runtime("litert", bundles["tflite"], threads=1).embed(ids, np.ones_like(ids)),
                                  out)
    assert cache.stat().st_size > 100

    interpreter = load_runtime("litert", bundles["tflite"], threads=1, api="interpreter")
    np.testing.assert_allclose(interpreter.embed(ids, np.ones_like(ids)), out, atol=1e-6)
    monkeypatch.setenv("EMBG_XNNPACK_CACHE", "off")
    assert load_runtime("litert", bundles["tflite"], threads=1).version_info()["xnnpack_weight_cache"] is None


@pytest.fixture
def cached(bundles, tmp_path, monkeypatch):
    """A fresh cache directory holding this bundle's entry, and the uncached (Interpreter API) outputs."""
    monkeypatch.setenv("EMBG_XNNPACK_CACHE", str(tmp_path / "xnnpack"))
    load_all()
    ids = np.arange(5, 45)[None].repeat(2, 0)
    runtime = load_runtime("litert", bundles["tflite"], threads=1)
    want = load_runtime("litert", bundles["tflite"], threads=1, api="interpreter").embed(ids, np.ones_like(ids))
    np.testing.assert_allclose(runtime.embed(ids, np.ones_like(ids)), want, atol=1e-6)
    return runtime.weight_cache, ids, want


def _embed(bundles, ids):
    return load_runtime("litert", bundles["tflite"], threads=1).embed(ids, np.ones_like(ids))


def test_weight_cache_with_flipped_bytes_is_rebuilt_never_used(cached, bundles):
    # XNNPACK itself uses such a file silently (measured: cosine 0.75-0.99, or NaN, depending on where)
    cache, ids, want = cached
    sealed = cache.read_bytes()
    damaged = bytearray(sealed)
    middle = len(damaged) // 2
    damaged[middle:middle + 4096] = bytes(b ^ 0x55 for b in damaged[middle:middle + 4096])
    cache.write_bytes(bytes(damaged))
    np.testing.assert_allclose(_embed(bundles, ids), want, atol=1e-6)
    assert cache.read_bytes() == sealed  # rebuilt: the same packed weights as before the damage


def test_another_models_cache_under_this_name_is_rebuilt(cached, bundles, tiny_bundle, tmp_path):
    cache, ids, want = cached
    other = load_runtime("litert", Artifact.load(tiny_bundle("tflite", 8)), threads=1).weight_cache
    assert other != cache
    sealed = cache.read_bytes()
    cache.write_bytes(other.read_bytes())  # e.g. a cache directory copied between machines or models
    np.testing.assert_allclose(_embed(bundles, ids), want, atol=1e-6)
    assert cache.read_bytes() == sealed


def test_weight_cache_pruned_by_size_and_age_and_cleared(cached, bundles, monkeypatch):
    import os
    import time

    from embg.runtimes import weight_cache

    cache, ids, want = cached
    root = cache.parent
    old = root / f"{'0' * 32}-litert0{weight_cache.SUFFIX}"  # unused for a year
    old.write_bytes(b"x" * 1000)
    weight_cache.sidecar(old).write_text("{}")
    year_ago = time.time() - 365 * 86400
    os.utime(weight_cache.sidecar(old), (year_ago, year_ago))
    legacy = root / "tiny_tflite_fp32-02e282ddc76f4d32dd02.xnnpack_cache"  # keyed the old way: never used again
    legacy.write_bytes(b"y" * 1000)
    os.utime(legacy, (year_ago + 86400, year_ago + 86400))
    dead = root / f"{cache.name}.partial-{2**22 + 12345}"  # a build killed before its rename
    dead.write_bytes(b"z")
    removed = weight_cache.prune(root, keep=cache)
    assert set(removed) == {old, legacy, dead} and cache.exists()

    recent = root / f"{'1' * 32}-litert0{weight_cache.SUFFIX}"
    recent.write_bytes(b"r" * 3 * 2**20)
    weight_cache.sidecar(recent).write_text("{}")
    monkeypatch.setenv(weight_cache.MAX_MB_ENV, "1")  # over the cap: least recently used goes, the one in use stays
    assert weight_cache.prune(root, keep=cache) == [recent] and cache.exists()

    from embg.cli.validate import main
    from tests.conftest import run_cli

    code, _, err = run_cli(main, ["--clear-cache"])
    assert code == 0 and "removed 1 entry" in err
    assert not list(root.glob(f"*{weight_cache.SUFFIX}*"))
    np.testing.assert_allclose(_embed(bundles, ids), want, atol=1e-6)  # rebuilt on the next load


def test_one_cache_entry_per_model_file_not_per_export(bundles, tmp_path, monkeypatch):
    """Export-time parity builds the entry; a validation of the finished bundle (whose manifest then holds
    the parity block) and a copy of the same file elsewhere reuse it; only a changed model file gets a new one."""
    import json
    import shutil

    from embg.runtimes.litert_rt import weight_cache_file
    from tests.conftest import reseal

    monkeypatch.setenv("EMBG_XNNPACK_CACHE", str(tmp_path / "xnnpack"))
    source = bundles["tflite"].directory
    copy = shutil.copytree(source, tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["parity"] = None  # as during export, before the parity block is written
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert weight_cache_file(Artifact.load(copy)) == weight_cache_file(Artifact.load(source))
    model = copy / manifest["model_file"]
    model.write_bytes(model.read_bytes() + b"\0" * 16)  # another model file (hashes rewritten to match)
    reseal(copy)
    assert weight_cache_file(Artifact.load(copy)) != weight_cache_file(Artifact.load(source))
