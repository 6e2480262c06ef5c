"""Shared fixtures: fixture checkpoints written once per test session in the real layout."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Calibrated grids are cached per session, not in the user's cache: each run exercises calibration once,
# and the folder goes when the session ends.
if "EMBG_CALIBRATION_CACHE" not in os.environ:
    os.environ["EMBG_CALIBRATION_CACHE"] = tempfile.mkdtemp(prefix="embg-calibration-")
    atexit.register(shutil.rmtree, os.environ["EMBG_CALIBRATION_CACHE"], True)


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fixtures")


def _fixture(root: Path, kind: str) -> Path:
    from embg.fixtures import write_fixture

    out = root / kind
    if not out.exists():
        write_fixture(kind, out)
    return out


@pytest.fixture(scope="session")
def tiny_dir(fixture_root) -> Path:
    return _fixture(fixture_root, "tiny")


@pytest.fixture(scope="session")
def tiny_q4_dir(fixture_root) -> Path:
    return _fixture(fixture_root, "tiny-qat-q4_0")


@pytest.fixture(scope="session")
def tiny_q8_dir(fixture_root) -> Path:
    return _fixture(fixture_root, "tiny-qat-q8_0")


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    from embg.checkpoint.load import load_model

    return load_model(str(tiny_dir))


@pytest.fixture(scope="session")
def tiny_reference(tiny_dir):
    from embg.runtimes.reference import SentenceTransformersReference

    return SentenceTransformersReference(tiny_dir)


def require_tool(available: bool, what: str, install: str) -> None:
    """Skip on a developer machine without ``what``; in CI (CI=true) a missing tool is a failure,
    so a broken set-up step can never turn a test into a silent skip."""
    if available:
        return
    message = f"{what} missing: {install} (scripts/setup.sh installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_dir, tmp_path_factory):
    """Export a tiny-fixture bundle once per session and share it: ``tiny_bundle("onnx", 8)``.

    Tests must treat the directory as read-only (copy it before corrupting anything).
    """
    from embg.export.pipeline import ExportRequest, export_bundle
    from embg.quantize.recipe import recipe_for_bits

    root = tmp_path_factory.mktemp("bundles")
    cache: dict[tuple, Path] = {}

    def make(target: str, bits: int, seq_lens: tuple[int, ...] = (64, 256), **options) -> Path:
        key = (target, bits, seq_lens if target == "tflite" else (), tuple(sorted(options.items())))
        if key not in cache:
            name = "-".join(str(part) for part in (target, bits, *key[2], *options))
            cache[key] = export_bundle(ExportRequest(model=str(tiny_dir), target=target, recipe=recipe_for_bits(bits),
                                                     seq_lens=key[2], out=root / name, options=dict(options)))
        return cache[key]

    return make


def run_cli(main, args: list) -> tuple[int, str, str]:
    """Call a CLI ``main`` in-process; returns (exit status, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def named_copy(bundle: Path, dest: Path) -> Path:
    """A copy of a shared bundle under a chosen directory name (reports name rows after directories)."""
    import shutil

    shutil.copytree(bundle, dest)
    return dest


def reseal(bundle: Path) -> Path:
    """Record the current sha256 of every file in the bundle's manifest, as if the manifest had been
    rewritten to match changed files: lets a test reach the checks that stand behind the hashes."""
    import json

    from embg.bundle import file_sha256

    path = Path(bundle) / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["file_sha256"] = {name: file_sha256(Path(bundle) / name) for name in manifest["file_sha256"]}
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Path(bundle)


def with_unsupported_op(bundle: Path) -> Path:
    """Add an op no CPU/WASM runtime implements (GemmFloat8 is CUDA-only) to an ONNX bundle and reseal it:
    a bundle that passes every host check and fails only when a runtime loads it."""
    import onnx
    from onnx import TensorProto, helper

    from embg.bundle import Artifact

    path = Artifact.load(bundle).model_path
    model = onnx.load(str(path))
    model.graph.initializer.append(helper.make_tensor("probe_a", TensorProto.FLOAT, [2, 2], [1, 0, 0, 1]))
    model.graph.node.append(helper.make_node("GemmFloat8", ["probe_a", "probe_a"], ["probe_y"],
                                             domain="com.microsoft", name="probe_node"))
    model.graph.output.append(helper.make_tensor_value_info("probe_y", TensorProto.FLOAT, [2, 2]))
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(path))
    return reseal(bundle)


def float_head_bytes(model) -> int:
    """fp32 bytes of the Dense head, which the int8 preset keeps float."""
    from embg.quantize.groups import part_of

    return 4 * sum(p.numel() for name, p in model.graph().named_parameters() if part_of(name) == "head")


# The tflite bundle the device-plumbing tests (adb, AI Hub stand-ins) push: fp32. On the random-weight
# fixture the int8 bundle's retrieval rank correlation over the 10 --quick texts hangs on near-tied
# similarities (one swap: 0.971 < the gate's 0.98), which says nothing about a device; int8 quality is
# tested on the host and on the real checkpoint.
STAND_IN_TFLITE = ("tflite", 32)
