"""The adb device: a phone or Android emulator running android_demo's parity entry point.

``--device adb`` (adb's only device) or ``--device adb:SERIAL`` (``adb devices`` lists serials).
The bundle is pushed once; every embed call is one ``am instrument`` run of the app's
ParityInstrumentation over the call's rows (tokenization and bucket choice stay on the host; the
app picks the same smallest bucket from the row length). Because each run starts the app and loads
the model, latency comes from the app's own per-row timings, not from the host's clock.

A stand-in adb (tests/fakes/adb) or an app that flags itself as one turns every description of
the device into "NO DEVICE USED": a device result is only ever claimed when a device produced it.

Options (devices.toml keys, or environment variables for one-off --device runs):
  accelerator  EMBG_ADB_ACCELERATOR  cpu | gpu | npu (the app falls back to CPU and says so)
  repeats      EMBG_ADB_REPEATS      timed runs per row inside the app (median reported; default 3)
  adb          EMBG_ADB              the adb executable (default: adb on PATH)
  remote_dir   EMBG_ADB_REMOTE_DIR   where bundles and inputs go (default /data/local/tmp/embg)
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from embg.devices.base import DEVICES, DeviceError, DeviceRunner, RemoteRuntime
from embg.errors import EmbgError
from embg.bundle import Artifact
from embg.devices.adb.client import AdbRunner
from embg.devices.adb.protocol import ACCELERATORS, REMOTE_DIR, AdbError, DeviceInfo

ENV_OPTIONS = {"accelerator": "EMBG_ADB_ACCELERATOR", "repeats": "EMBG_ADB_REPEATS", "adb": "EMBG_ADB",
               "remote_dir": "EMBG_ADB_REMOTE_DIR"}
NO_DEVICE = "NO DEVICE USED: a stand-in adb answered; embeddings and timings come from this host"


class AdbSession:
    """Speaks the device protocol of embg.devices.base.Session, one ``am instrument`` per embed."""

    def __init__(self, runner: AdbRunner, artifact: Artifact, accelerator: str, repeats: int) -> None:
        self.runner = runner
        self.accelerator = accelerator
        self.repeats = repeats
        try:
            self.device: DeviceInfo = runner.device_info()
            self.remote_bundle = runner.push_bundle(artifact.directory)
        except AdbError as exc:
            raise DeviceError(f"adb: {exc}") from exc
        self.used_accelerator: dict[str, Any] = {}
        self.hello = {"engine": "android_demo (LiteRT CompiledModel)", "version": None}

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        if message.get("op") != "embed":
            return {"ok": True}
        shape = message["shape"]
        ids = np.frombuffer(base64.b64decode(message["ids"]), dtype=np.int32).reshape(shape)
        mask = np.frombuffer(base64.b64decode(message["mask"]), dtype=np.int32).reshape(shape)
        # The app takes unpadded ids and chooses the bucket itself, as an app embedding a query would.
        items = [{"name": f"r{i}", "ids": [int(x) for x in ids[i][mask[i] > 0]]} for i in range(len(ids))]
        try:
            result = self.runner.run_items(self.remote_bundle, items, self.device, self.accelerator, self.repeats)
        except AdbError as exc:
            raise DeviceError(f"adb: {exc}") from exc
        self.device = result.device  # the app may flag itself as a stand-in
        self.used_accelerator = result.accelerator
        seconds = sum(float(np.median(t)) for t in result.timings_ms if t) / 1000.0
        embeddings = np.ascontiguousarray(result.embeddings, dtype=np.float32)
        return {"ok": True, "shape": list(embeddings.shape), "seconds": seconds,
                "embeddings": base64.b64encode(embeddings.tobytes()).decode("ascii")}

    def close(self) -> None:
        """Nothing runs between calls: each embed was a complete app run."""


class AdbRemoteRuntime(RemoteRuntime):
    """Device-side latency, and a device description that follows what the app reported."""

    def last_call_ms(self) -> float:
        return self.remote_seconds[-1] * 1000.0

    def version_info(self) -> dict[str, Any]:
        info = super().version_info()
        info["device"] = describe_device(self.device, self.session.device, self.session.used_accelerator)
        return info


def describe_device(base: dict[str, Any], device: DeviceInfo, accelerator: dict[str, Any]) -> dict[str, Any]:
    described = {**base, "machine": device.abi, "model": f"{device.manufacturer} {device.model}".strip(),
                 "android_sdk": device.sdk, "serial": device.serial, "emulated": None,
                 "real_device": not device.stand_in, "stand_in": device.stand_in,
                 "accelerator": accelerator, "latency_source": "the app's own per-row timings (median)"}
    if device.stand_in:
        described["machine"] = f"{NO_DEVICE} ({device.abi})"
        described["note"] = NO_DEVICE
    return described


@DEVICES.register("adb")
class AdbDevice(DeviceRunner):
    kind = "adb"
    env_options = ENV_OPTIONS

    def __init__(self, spec: str = "") -> None:
        super().__init__(spec)
        if spec and (spec.startswith("-") or any(c.isspace() for c in spec)):
            raise EmbgError(f"--device adb:{spec}: expected adb:SERIAL as listed by `adb devices`")

    def _accelerator(self) -> str:
        accelerator = str(self.options.get("accelerator", "cpu")).lower()
        if accelerator not in ACCELERATORS:
            raise EmbgError(f"adb accelerator {accelerator!r}: choose one of {', '.join(ACCELERATORS)}")
        return accelerator

    def open(self, artifact: Artifact, engine: str, threads: int | None = None) -> RemoteRuntime:
        artifact.verify()  # refuse a damaged bundle before it is copied anywhere
        if engine != "litert":
            raise EmbgError(f"adb runs TFLite bundles in android_demo (LiteRT); {artifact.directory.name} is "
                            f"a {artifact.target} bundle for {engine}")
        try:
            runner = AdbRunner(self.spec or None, adb=str(self.options.get("adb", "adb")),
                               remote_dir=str(self.options.get("remote_dir", REMOTE_DIR)))
        except AdbError as exc:
            raise DeviceError(f"adb: {exc}") from exc
        session = AdbSession(runner, artifact, self._accelerator(), int(self.options.get("repeats", 3)))
        device = describe_device(self.describe(), session.device, {"requested": session.accelerator})
        return AdbRemoteRuntime(artifact, session, engine, device)  # type: ignore[arg-type]
