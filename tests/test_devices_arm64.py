"""Slow: the emulated ARM64 Debian (qemu-user + binfmt + chroot) and the ssh runner against its sshd.

Sets the system up with embg-device-setup's code (idempotent: a few minutes the first time,
seconds after), then checks ONNX and TFLite tiny bundles on emulated cortex-a76/a72 against the
host runtime, the ssh runner against the emulated system's own sshd on 127.0.0.1, and the fault
cases with real processes: sshd killed mid-run, a wrong host key, a target without python3 on
PATH, a bundle the target runtime cannot load. Needs root (chroot, mounts, binfmt_misc).
Run: python -m pytest -m slow tests/test_devices_arm64.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

from embg.cli.validate import main
from embg.devices import DeviceError, load_devices, open_device
from embg.bundle import Artifact
from embg.export.pipeline import ExportRequest, export_bundle
from embg.quantize.recipe import recipe_for_bits
from embg.runtimes import load_all, load_runtime
from embg.parity.path import cosine_rows

pytestmark = pytest.mark.slow

MATCH = 0.99999


def run_main(args: list) -> tuple[int, str, str]:
    return run_cli(main, args)


@pytest.fixture(scope="module")
def qemu_system():
    if os.geteuid() != 0:
        pytest.skip("the emulated ARM64 system needs root (chroot, mounts, binfmt_misc)")
    from embg.devices.qemu_setup import setup

    started = time.perf_counter()
    system = setup()
    print(f"\n[qemu setup] {time.perf_counter() - started:.1f} s")
    load_devices()
    load_all()
    return system


@pytest.fixture(scope="module")
def bundles(tiny_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arm-bundles")
    return {
        "onnx32": export_bundle(ExportRequest(model=str(tiny_dir), target="onnx", recipe=recipe_for_bits(32),
                                              out=root / "onnx32", parity=False)),
        "tflite32": export_bundle(ExportRequest(model=str(tiny_dir), target="tflite", recipe=recipe_for_bits(32),
                                                out=root / "tflite32", seq_lens=(32,), parity=False)),
    }


def _ids(tiny_model, runtime) -> tuple[np.ndarray, np.ndarray]:
    texts = ["how do I reset my password", "Борщ готовят из свёклы", "东京今天多云"]
    batch = tiny_model.tokenizer.encode(texts, prompt="query", max_length=runtime.max_length or 32)
    return batch.input_ids, batch.attention_mask


def _compare(device: str, bundle: Path, tiny_model, options: dict | None = None) -> tuple[np.ndarray, dict]:
    artifact = Artifact.load(bundle)
    engine = artifact.manifest["runtime"]
    host = load_runtime(engine, artifact, threads=1)
    remote = open_device(device, artifact, engine, threads=1, options=options)
    try:
        ids, mask = _ids(tiny_model, host)
        ours, theirs = remote.embed(ids, mask), host.embed(ids, mask)
        info = remote.version_info()
    finally:
        remote.close()
        host.close()
    return cosine_rows(ours, theirs), info


@pytest.mark.parametrize("cpu", ["cortex-a76", "cortex-a72"])
@pytest.mark.parametrize("name", ["onnx32", "tflite32"])
def test_emulated_arm64_matches_host(qemu_system, bundles, tiny_model, name, cpu):
    cos, info = _compare(f"qemu-arm64:{cpu}", bundles[name], tiny_model)
    assert cos.min() >= MATCH, cos
    device = info["device"]
    assert device["machine"] == "aarch64" and device["emulated"] is True and device["cpu"] == cpu
    assert info["engine"] in ("onnxruntime", "ai-edge-litert")


def test_validator_on_emulated_arm64_writes_device_into_report(qemu_system, bundles, tiny_dir, tmp_path):
    code, out, err = run_main([bundles["onnx32"], bundles["tflite32"], "--model", tiny_dir, "--device",
                               "qemu-arm64:cortex-a76", "--quick", "--latency-repeats", 1, "--report", tmp_path / "r"])
    assert code == 0, out + err
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    device = data["devices"][0]
    assert device["kind"] == "qemu-arm64" and device["machine"] == "aarch64" and device["emulated"] is True
    assert {e["engine"] for e in device["engines"]} == {"onnxruntime", "ai-edge-litert"}
    assert all(e["metrics"]["drift"]["cosine_min"] >= 0.9999 for e in data["bundles"])
    assert "skipped" in data["bundles"][0]["metrics"]["memory"]


# ---------------------------------------------------------------- ssh against the emulated system's sshd

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Sshd:
    port: int
    process: subprocess.Popen
    options: dict

    @property
    def device(self) -> str:
        return f"ssh:root@127.0.0.1:{self.port}"

    def stop(self) -> None:
        from tests.qemu_sshd import stop_sshd

        if self.process.returncode is None:
            stop_sshd(self.process)  # the listener and every connection: the link drops


@pytest.fixture(scope="module")
def client_key(tmp_path_factory) -> Path:
    key = tmp_path_factory.mktemp("ssh-client") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def _start_sshd(system, key: Path, tmp: Path, environment: dict | None = None) -> Sshd:
    port = _free_port()
    from tests.qemu_sshd import host_public_key, start_sshd

    process = start_sshd(system, port, key.with_suffix(".pub").read_text(), user_environment=environment)
    known = tmp / f"known_hosts_{port}"
    known.write_text(f"[127.0.0.1]:{port} {host_public_key(system)}\n")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # sshd under emulation takes a few seconds to listen
        if process.poll() is not None:
            raise AssertionError(f"sshd exited: {process.stderr.read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    options = {"identity": str(key), "known_hosts": str(known), "venv": "/opt/embg/venv", "emulated": True}
    return Sshd(port, process, options)


@pytest.fixture
def sshd(qemu_system, client_key, tmp_path):
    server = _start_sshd(qemu_system, client_key, tmp_path)
    yield server
    server.stop()


@pytest.mark.parametrize("name", ["onnx32", "tflite32"])
def test_ssh_runner_against_emulated_sshd_matches_host(sshd, bundles, tiny_model, name):
    started = time.perf_counter()
    cos, info = _compare(sshd.device, bundles[name], tiny_model, sshd.options)
    assert cos.min() >= MATCH, cos
    assert info["device"]["machine"] == "aarch64" and info["device"]["kind"] == "ssh"
    first = time.perf_counter() - started
    cos, _ = _compare(sshd.device, bundles[name], tiny_model, sshd.options)  # cached bundle: no re-copy
    assert cos.min() >= MATCH
    print(f"\n[ssh {name}] first {first:.1f} s, again {time.perf_counter() - started - first:.1f} s")


def _matrix(tmp_path: Path, bundle: Path, sshd: Sshd, tiny_dir, extra: dict | None = None,
            progress=None) -> tuple[int, dict, str]:
    options = {**sshd.options, **(extra or {})}
    rows = "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())
    toml = tmp_path / "devices.toml"
    toml.write_text(f"bundles = [{json.dumps(str(bundle))}]\nquick = true\nlatency_repeats = 1\n"
                    f"[[devices]]\ndevice = 'local'\n[[devices]]\nname = 'arm-ssh'\ndevice = '{sshd.device}'\n{rows}")
    code, out, err = run_main(["--devices", toml, "--model", tiny_dir, "--no-memory", "--report", tmp_path / "r"])
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    return code, report, out + err


def _assert_partial(code: int, report: dict, text: str, engine: str, bundle: str, reason: str) -> None:
    assert code == 1, text
    assert report["partial"] and not report["passed"]
    assert report["status"][f"local/{engine}/{bundle}"] == "ok"  # which combinations ran
    failed = report["status"][f"arm-ssh/{engine}/{bundle}"]
    assert failed.startswith("failed:") and re.search(reason, failed), failed


def test_wrong_host_key_is_refused(sshd, bundles, tiny_dir, tmp_path, client_key):
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "wrong_known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {other.with_suffix('.pub').read_text().strip()}\n")
    code, report, text = _matrix(tmp_path, bundles["onnx32"], sshd, tiny_dir, {"known_hosts": str(known)})
    _assert_partial(code, report, text, "onnxruntime", "onnx32", "host key")
    # accept-new trusts only UNKNOWN keys: a changed key still fails
    code, report, text = _matrix(tmp_path, bundles["onnx32"], sshd, tiny_dir,
                                 {"known_hosts": str(known), "insecure_host_key": True})
    _assert_partial(code, report, text, "onnxruntime", "onnx32", "host key")


def test_target_without_python(qemu_system, client_key, bundles, tiny_dir, tmp_path):
    server = _start_sshd(qemu_system, client_key, tmp_path, environment={"PATH": "/nonexistent"})
    try:
        server.options.pop("venv")
        code, report, text = _matrix(tmp_path, bundles["onnx32"], server, tiny_dir)
    finally:
        server.stop()
    _assert_partial(code, report, text, "onnxruntime", "onnx32", "no python3 on the target's PATH")


def test_sshd_stopped_mid_run(sshd, bundles, tiny_dir, tmp_path, tiny_model):
    # directly: one call works, sshd dies, the next call is a clear DeviceError
    artifact = Artifact.load(bundles["tflite32"])
    remote = open_device(sshd.device, artifact, "litert", threads=1, options=sshd.options)
    ids, mask = _ids(tiny_model, remote)
    assert remote.embed(ids, mask).shape[0] == len(ids)
    sshd.stop()
    with pytest.raises(DeviceError, match="stopped answering|connection lost|exited"):
        remote.embed(ids, mask)
    remote.close()


def test_sshd_killed_during_validation_gives_partial_report(qemu_system, client_key, bundles, tiny_dir, tmp_path):
    server = _start_sshd(qemu_system, client_key, tmp_path)
    from embg.validate.matrix import load_plan, run_matrix
    from embg.validate.report import write_reports
    from embg.validate.inputs import ValidateOptions

    toml = tmp_path / "devices.toml"
    rows = "".join(f"{k} = {json.dumps(v)}\n" for k, v in server.options.items())
    toml.write_text(f"bundles = [{json.dumps(str(bundles['tflite32']))}]\n[[devices]]\ndevice = 'local'\n"
                    f"[[devices]]\nname = 'arm-ssh'\ndevice = '{server.device}'\n{rows}")

    def progress(message: str) -> None:  # kill sshd once the ssh row has started embedding
        if message.startswith("[arm-ssh]") and "embedding" in message:
            server.stop()

    options = ValidateOptions(bundles=[], model=str(tiny_dir), quick=True, latency_repeats=1, memory=False,
                              progress=progress)
    try:
        report = run_matrix(load_plan(toml), options)
    finally:
        server.stop()
    paths = write_reports(report, tmp_path / "r")
    _assert_partial(1, report, json.dumps(report["status"]), "litert", "tflite32",
                    "closed by remote host|stopped answering|connection lost")
    assert "PARTIAL" in paths["markdown"].read_text()


def test_bundle_the_target_cannot_load(sshd, bundles, tiny_dir, tmp_path):
    from tests.conftest import with_unsupported_op

    # passes every host check (hashes resealed, valid ONNX); only the target's onnxruntime refuses it
    broken = with_unsupported_op(shutil.copytree(bundles["onnx32"], tmp_path / "corrupt"))
    code, report, text = _matrix(tmp_path, broken, sshd, tiny_dir)
    assert code == 1, text
    assert report["partial"]
    failed = report["status"]["arm-ssh/onnxruntime/corrupt"]
    assert "could not load or run corrupt" in failed and "GemmFloat8" in failed, failed


def test_ssh_installs_the_runtime_into_a_fresh_venv_once(sshd, bundles, tiny_model, qemu_system):
    # a venv that does not exist yet on the target: python3 -m venv + pip install numpy ai-edge-litert,
    # under emulation; the second open finds it and installs nothing. From the wheelhouse the setup
    # left in the emulated system (pip_args), not the index: this sandbox reaches PyPI only through a
    # TLS proxy whose CA the emulated Debian does not trust (that path ends in a clear DeviceError).
    venv = f"/root/.cache/embg/venv-test-{os.getpid()}"
    options = {**sshd.options, "venv": venv, "pip_args": ["--no-index", "--find-links", "/opt/embg/wheels"]}
    try:
        started = time.perf_counter()
        cos, _ = _compare(sshd.device, bundles["tflite32"], tiny_model, options)
        first = time.perf_counter() - started
        assert cos.min() >= MATCH
        assert (qemu_system.rootfs / venv.lstrip("/") / "bin" / "python").exists()
        started = time.perf_counter()
        cos, _ = _compare(sshd.device, bundles["tflite32"], tiny_model, options)
        again = time.perf_counter() - started
        assert cos.min() >= MATCH and again < first / 2
        print(f"\n[ssh venv install] first {first:.1f} s, again {again:.1f} s")
    finally:
        shutil.rmtree(qemu_system.rootfs / venv.lstrip("/"), ignore_errors=True)
