"""The device protocol: the self-contained runner in a separate process equals the in-process runtime."""

from __future__ import annotations

import numpy as np
import pytest

from embg.devices import DeviceError, load_devices, open_device
from embg.export.artifact import Artifact
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


def test_unloadable_bundle_gives_device_error(bundles, tmp_path):
    import shutil

    load_devices()
    broken = tmp_path / "broken"
    shutil.copytree(bundles["onnx"], broken)
    artifact = Artifact.load(broken)
    artifact.model_path.write_bytes(b"not a model")
    with pytest.raises(DeviceError, match="runner"):
        open_device("local", artifact, "onnxruntime", threads=1)
