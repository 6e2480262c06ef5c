"""The device protocol: the self-contained runner in a separate process equals the in-process runtime."""

from __future__ import annotations

import numpy as np
import pytest

from embg.devices import DeviceError, load_devices, open_device
from embg.bundle import Artifact
from embg.runtimes import load_all, load_runtime


@pytest.fixture(scope="module")
def bundles(tiny_bundle):
    return {target: tiny_bundle(target, 8) for target in ("onnx", "tflite")}


@pytest.mark.parametrize("target, engine", [("onnx", "onnxruntime"), ("tflite", "litert")])
def test_local_device_is_bit_identical_to_in_process(bundles, target, engine):
    load_all()
    load_devices()
    artifact = Artifact.load(bundles[target])
    ids = np.random.default_rng(0).integers(4, 8000, (3, 90))
    mask = np.ones_like(ids)
    ids[1, 30:], mask[1, 30:] = 0, 0
    remote = open_device("local", artifact, engine, threads=1)
    try:
        got = remote.embed(ids, mask)
        info = remote.version_info()
    finally:
        remote.close()
    want = load_runtime(engine, artifact, threads=1).embed(ids, mask)
    assert got.shape == want.shape
    assert np.array_equal(got, want)
    assert info["device"]["kind"] == "local" and info["engine"]


def test_damaged_bundle_is_refused_before_the_device_starts(bundles, tmp_path, monkeypatch):
    import shutil

    from embg.devices import base
    from embg.errors import EmbgError

    load_devices()
    broken = tmp_path / "broken"
    shutil.copytree(bundles["onnx"], broken)
    artifact = Artifact.load(broken)
    artifact.model_path.write_bytes(b"not a model")
    started = []
    monkeypatch.setattr(base.Session, "__init__", lambda *a, **k: started.append(a))
    with pytest.raises(EmbgError, match=f"{artifact.model_path.name}: sha256 .* differs from the manifest"):
        open_device("local", artifact, "onnxruntime", threads=1)
    assert not started  # refused on the host: no runner process was started


def test_bundle_the_runtime_cannot_load_gives_device_error(bundles, tmp_path):
    import shutil

    from tests.conftest import with_unsupported_op

    load_devices()
    broken = with_unsupported_op(shutil.copytree(bundles["onnx"], tmp_path / "unsupported-op"))
    with pytest.raises(DeviceError, match="runner.*GemmFloat8"):
        open_device("local", Artifact.load(broken), "onnxruntime", threads=1)
