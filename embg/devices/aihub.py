"""The aihub device: a phone in Qualcomm AI Hub's device farm, reached through the qai-hub client.

``--device aihub:"Samsung Galaxy S25 (Family)"`` (device names as ``qai-hub list-devices`` prints
them). The bundle's model file is uploaded once per bundle; where the target runtime needs it the
farm compiles it (ONNX: shapes are dynamic and the farm compiles fixed ones, so one compile job per
sequence length of ONNX_LENGTHS, batch 1, all submitted at once). Each embed call is one inference
job whose dataset holds one batch-1 sample per row, padded to the bucket the host chose (TFLite: the
bundle's signatures). The outputs come back here and the validator compares them on this host like
every device's. Latency, load time and peak memory come from the job's profile: the farm's clock.

Options (devices.toml keys, ``--device-option KEY=VALUE``, or environment variables):
  compute_unit    EMBG_AIHUB_COMPUTE_UNIT    cpu | gpu | npu (default cpu; GPUs and NPUs compute in
                                             fp16, where the plain graph overflows: NaN rows fail)
  target_runtime  EMBG_AIHUB_TARGET_RUNTIME  tflite (TFLite bundles, run as uploaded) | onnx | qnn
                                             (ONNX bundles, compiled on the farm); default: the bundle's
Credentials: qai-hub's own configuration (``qai-hub configure --api_token ...`` writes
~/.qai_hub/client.ini; QAIHUB_CLIENT_INI points elsewhere). The token is never read into a message.

Never a device result that no device produced: unless ``qai_hub`` is the installed qai-hub
distribution, it is a stand-in (tests/fakes/qai_hub computes outputs with host runtimes) and every
description of the device says NO DEVICE USED.
"""

from __future__ import annotations

import base64
import configparser
import importlib
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np

from embg.devices.base import DEVICES, DeviceError, DeviceRunner, RemoteRuntime
from embg.errors import EmbgError
from embg.bundle import Artifact
from embg.bundle import DYNAMIC_LENGTHS

ENV_OPTIONS = {"compute_unit": "EMBG_AIHUB_COMPUTE_UNIT", "target_runtime": "EMBG_AIHUB_TARGET_RUNTIME"}
COMPUTE_UNITS = ("cpu", "gpu", "npu")
CLIENT_INI_ENV = "QAIHUB_CLIENT_INI"  # qai-hub's own variable
DEFAULT_CLIENT_INI = "~/.qai_hub/client.ini"
INSTALL_HINT = "pip install 'embg-export[aihub]' (docs/devices.md: protobuf must be 6.31.1 beside onnx)"
CONFIGURE_HINT = ("run `qai-hub configure --api_token TOKEN` (the token is on your AI Hub account page) "
                  f"or set {CLIENT_INI_ENV} to a client.ini")
NO_DEVICE = "NO DEVICE USED: a stand-in qai_hub answered; embeddings and timings come from this host"
# Fixed ONNX shapes the farm compiles (the validator's latency lengths among them), capped per bundle.
ONNX_LENGTHS = tuple(sorted({*DYNAMIC_LENGTHS, 512, 1024, 2048}))


@dataclass(frozen=True)
class TargetRuntime:
    bundle_target: str            # the bundle target it takes
    compile_options: str | None   # None: the uploaded file runs as it is


TARGET_RUNTIMES = {
    "tflite": TargetRuntime("tflite", None),
    "onnx": TargetRuntime("onnx", "--target_runtime onnx"),
    # QNN has no 64-bit tensors: the farm narrows the int64 ids and mask to int32
    "qnn": TargetRuntime("onnx", "--target_runtime qnn_dlc --truncate_64bit_io"),
}
DEFAULT_RUNTIME = {"tflite": "tflite", "onnx": "onnx"}


# ---------------------------------------------------------------- checks before any slow work

def client_ini() -> Path:
    return Path(os.environ.get(CLIENT_INI_ENV) or DEFAULT_CLIENT_INI).expanduser()


def check_credentials() -> None:
    """qai-hub's client.ini with its [api] fields, or one line saying how to configure (exit 2)."""
    path = client_ini()
    problem = None
    if not path.is_file():
        problem = f"{path} not found"
    else:
        parser = configparser.ConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):  # the parser's own message quotes lines: the token
            problem = f"{path} is not a readable INI file"
        else:
            missing = [k for k in ("api_token", "api_url", "web_url") if not parser.get("api", k, fallback="").strip()]
            if missing:
                problem = f"{path} has no {'/'.join(missing)} in [api]"
    if problem:
        raise EmbgError(f"aihub: no Qualcomm AI Hub credentials ({problem}): {CONFIGURE_HINT}")


def import_client() -> ModuleType:
    """The qai_hub module, imported only when an aihub device is used."""
    try:
        return importlib.import_module("qai_hub")
    except ImportError as exc:
        raise EmbgError(f"aihub: the Qualcomm AI Hub client is not installed ({exc}): {INSTALL_HINT}") from None
    except Exception as exc:  # noqa: BLE001 - e.g. protobuf's gencode/runtime VersionError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise EmbgError(f"aihub: importing qai_hub failed ({type(exc).__name__}: {first}): {INSTALL_HINT}") from None


def is_stand_in(hub: ModuleType) -> bool:
    """Only the installed qai-hub distribution reaches the farm; any other ``qai_hub`` is a stand-in."""
    if getattr(hub, "EMBG_STAND_IN", False):
        return True
    try:
        installed = Path(str(metadata.distribution("qai-hub").locate_file("qai_hub/__init__.py"))).resolve()
    except metadata.PackageNotFoundError:
        return True
    return Path(getattr(hub, "__file__", "") or "").resolve() != installed


# ---------------------------------------------------------------- one bundle on one farm device

def _mb(value: Any) -> float | None:
    return round(value / 2**20, 3) if isinstance(value, (int, float)) else None


def _ms(value: Any) -> float | None:
    return round(value / 1000.0, 3) if isinstance(value, (int, float)) else None


def _mb_range(value: Any) -> list[float] | None:
    return [_mb(v) for v in value] if isinstance(value, (list, tuple)) and len(value) == 2 else None


class FarmSession:
    """Speaks the device protocol of embg.devices.base.Session, one farm inference job per embed."""

    def __init__(self, hub: ModuleType, label: str, device_name: str, artifact: Artifact, runtime_name: str,
                 compute_unit: str) -> None:
        self.hub = hub
        self.label = label
        self.stand_in = is_stand_in(hub)
        self.runtime = TARGET_RUNTIMES[runtime_name]
        self.compute_unit = compute_unit
        farm = "STAND-IN qai_hub" if self.stand_in else "Qualcomm AI Hub"
        self.hello = {"engine": f"{farm} {runtime_name} ({compute_unit})",
                      "version": getattr(hub, "__version__", None)}
        listed = self._farm("listing devices", lambda: hub.get_devices(name=device_name))
        if not listed:
            raise DeviceError(f"{label}: Qualcomm AI Hub has no device named {device_name!r} "
                              "(`qai-hub list-devices` lists them)")
        self.farm_device = listed[0]
        self.device = hub.Device(device_name)
        self.inputs = [(i["name"], i["dtype"]) for i in artifact.manifest["inputs"]]
        self.name = artifact.directory.name
        self.model = self._upload(artifact)
        limit = int(artifact.manifest.get("max_sequence_length") or ONNX_LENGTHS[-1])
        self.lengths = [n for n in ONNX_LENGTHS if n <= limit] or [limit]
        self.compiles: dict[int, Any] = {}
        if self.runtime.compile_options is not None:  # all at once: the farm runs them side by side
            for length in self.lengths:
                self.compiles[length] = self._farm(f"submitting the compile for seq {length}",
                                                   lambda n=length: self._submit_compile(n))
        self.targets: dict[int, tuple[Any, list[tuple[str, str]]]] = {}
        self.profiles: dict[int, dict[str, Any]] = {}
        self._last: tuple[tuple, dict[str, Any]] | None = None

    def _farm(self, what: str, call: Callable[[], Any]) -> Any:
        """Any failure of the client or the farm ends this device's row with its reason."""
        try:
            return call()
        except EmbgError:
            raise
        except Exception as exc:  # noqa: BLE001 - network, API and job errors all end the row
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise DeviceError(f"{self.label}: {what}: {type(exc).__name__}: {reason}") from exc

    def _upload(self, artifact: Artifact) -> Any:
        files = artifact.manifest.get("files") or [artifact.manifest["model_file"]]
        if len(files) == 1:
            return self._farm("uploading the model", lambda: self.hub.upload_model(str(artifact.model_path),
                                                                                     name=self.name))
        # .onnx + external .data: qai-hub uploads a directory holding exactly those files
        with tempfile.TemporaryDirectory(prefix="embg-aihub-") as tmp:
            folder = Path(tmp) / artifact.model_path.stem
            folder.mkdir()
            for name in files:
                (folder / name).symlink_to((artifact.directory / name).resolve())
            return self._farm("uploading the model", lambda: self.hub.upload_model(str(folder), name=self.name))

    def _submit_compile(self, length: int) -> Any:
        specs = {name: ((1, length), dtype) for name, dtype in self.inputs}
        return self.hub.submit_compile_job(self.model, device=self.device, name=f"{self.name}-seq{length}",
                                           input_specs=specs,
                                           options=f"{self.runtime.compile_options} --compute_unit {self.compute_unit}")

    def _wait(self, job: Any, what: str) -> None:
        status = self._farm(what, job.wait)
        if not status.success:
            raise DeviceError(f"{self.label}: {what} failed on the farm (job {getattr(job, 'job_id', '?')}): "
                              f"{status.message or status.code}")

    def _target(self, length: int) -> tuple[Any, list[tuple[str, str]]]:
        """The model to run at this sequence length and its input names and dtypes."""
        if length not in self.targets:
            if self.runtime.compile_options is None:
                self.targets[length] = (self.model, self.inputs)
            else:
                job = self.compiles.get(length) or self._farm(f"submitting the compile for seq {length}",
                                                              lambda: self._submit_compile(length))
                self._wait(job, f"compile for seq {length}")
                model = self._farm("fetching the compiled model", job.get_target_model)
                shapes = self._farm("reading the compiled inputs", job.get_target_shapes) or {}
                inputs = [(name, spec[1]) for name, spec in shapes.items()] or self.inputs
                self.targets[length] = (model, inputs)
        return self.targets[length]

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        if message.get("op") != "embed":
            return {"ok": True}
        # latency repeats send the same inputs: the one job that ran them answers (its profile has the timings)
        key = (tuple(message["shape"]), message.get("signature"), message["ids"], message["mask"])
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        shape = message["shape"]
        ids = np.frombuffer(base64.b64decode(message["ids"]), dtype=np.int32).reshape(shape)
        mask = np.frombuffer(base64.b64decode(message["mask"]), dtype=np.int32).reshape(shape)
        length = int(shape[1])
        model, inputs = self._target(length)
        data = {name: [np.ascontiguousarray(rows[i:i + 1], dtype=dtype) for i in range(len(rows))]
                for (name, dtype), rows in zip(inputs, (ids, mask))}
        job = self._farm("submitting the inference job", lambda: self.hub.submit_inference_job(
            model, device=self.device, inputs=data, name=f"{self.name}-seq{length}",
            options=f"--compute_unit {self.compute_unit}"))
        self._wait(job, f"inference at seq {length}")
        embeddings = self._embeddings(self._farm("downloading the outputs", job.download_output_data), len(ids))
        profile = self._farm("downloading the profile", job.download_profile) or {}
        summary = profile.get("execution_summary") or {}
        per_row_us = summary.get("estimated_inference_time")
        if not isinstance(per_row_us, (int, float)):
            raise DeviceError(f"{self.label}: the farm's profile has no estimated_inference_time")
        self.profiles[length] = summary
        # the samples run one after another on the phone: a call costs the sum of its rows
        reply = {"ok": True, "shape": list(embeddings.shape), "seconds": per_row_us * len(ids) / 1e6,
                 "embeddings": base64.b64encode(embeddings.tobytes()).decode("ascii")}
        self._last = (key, reply)
        return reply

    def _embeddings(self, outputs: Any, rows: int) -> np.ndarray:
        """The farm's outputs as [rows, D] float32; NaN/inf stay what they are (the validator fails them)."""
        if not outputs:
            raise DeviceError(f"{self.label}: the farm returned no output data")
        name = "sentence_embedding" if "sentence_embedding" in outputs else next(iter(outputs))
        if len(outputs) > 1 and name != "sentence_embedding":
            raise DeviceError(f"{self.label}: outputs {sorted(outputs)}: none is sentence_embedding")
        arrays = list(outputs[name])
        if len(arrays) != rows:
            raise DeviceError(f"{self.label}: the farm returned {len(arrays)} outputs for {rows} rows")
        return np.ascontiguousarray(np.concatenate([np.asarray(a).reshape(1, -1) for a in arrays]), dtype=np.float32)

    def measurements(self) -> dict[str, Any]:
        """Peak memory and load times per sequence length, as the farm's profiles give them."""
        if not self.profiles:
            return {}
        source = "NO DEVICE USED (stand-in profile)" if self.stand_in else "Qualcomm AI Hub job profile"
        # said in the row itself so the gate reports it as not applicable instead of missing
        memory: dict[str, Any] = {"source": source, "buckets": {}, "not_measured": {
            "runtime_rss_mb": "the farm reports its own peak memory (inference_peak_mb), not this host's RSS probe"}}
        load: dict[str, Any] = {"source": source, "buckets": {}}
        for length, s in sorted(self.profiles.items()):
            memory["buckets"][f"seq{length}"] = {"inference_peak_mb": _mb_range(s.get("inference_memory_peak_range")),
                                                 "first_load_peak_mb": _mb_range(s.get("first_load_memory_peak_range"))}
            load["buckets"][f"seq{length}"] = {"first_load_ms": _ms(s.get("first_load_time")),
                                               "warm_load_ms": _ms(s.get("warm_load_time"))}
        peaks = [r[1] for b in memory["buckets"].values() for r in [b["inference_peak_mb"]] if r and r[1] is not None]
        memory["inference_peak_mb"] = max(peaks) if peaks else None
        return {"memory": memory, "load": load}

    def describe(self) -> dict[str, Any]:
        attributes = list(getattr(self.farm_device, "attributes", None) or [])
        chipset = next((a.split(":", 1)[1] for a in attributes if a.startswith("chipset:")), None)
        return {"model": getattr(self.farm_device, "name", None), "os": getattr(self.farm_device, "os", None),
                "machine": chipset}

    def close(self) -> None:
        """Nothing runs between calls: each embed was a complete farm job."""


class AihubRuntime(RemoteRuntime):
    """Buckets for ONNX too (the farm's fixed shapes), the farm's clock, and its profile."""

    def __init__(self, artifact: Artifact, session: FarmSession, engine: str, device: dict[str, Any]) -> None:
        super().__init__(artifact, session, engine, device)  # type: ignore[arg-type]
        if not self.buckets:
            self.buckets = list(session.lengths)
            self.signatures = {n: f"seq{n}" for n in session.lengths}
            self._max = self.buckets[-1]

    def last_call_ms(self) -> float:
        return self.remote_seconds[-1] * 1000.0

    def device_measurements(self) -> dict[str, Any]:
        return self.session.measurements()


@DEVICES.register("aihub")
class AihubDevice(DeviceRunner):
    kind = "aihub"
    env_options = ENV_OPTIONS

    def __init__(self, spec: str = "") -> None:
        super().__init__(spec)
        if not spec.strip():
            raise EmbgError('--device aihub:NAME needs a device name, e.g. aihub:"Samsung Galaxy S25 (Family)" '
                            "(`qai-hub list-devices` lists them)")

    def _compute_unit(self) -> str:
        unit = str(self.options.get("compute_unit", "cpu")).lower()
        if unit not in COMPUTE_UNITS:
            raise EmbgError(f"aihub compute_unit {unit!r}: choose one of {', '.join(COMPUTE_UNITS)}")
        return unit

    def _runtime_name(self, target: str | None) -> str:
        name = str(self.options.get("target_runtime") or DEFAULT_RUNTIME.get(target or "", "tflite")).lower()
        if name not in TARGET_RUNTIMES:
            raise EmbgError(f"aihub target_runtime {name!r}: choose one of {', '.join(TARGET_RUNTIMES)}")
        return name

    def preflight(self) -> None:
        self._compute_unit()
        self._runtime_name(None)
        import_client()
        check_credentials()

    def describe(self) -> dict[str, Any]:
        described = {**super().describe(), "farm": "Qualcomm AI Hub", "device_name": self.spec,
                     "compute_unit": self.options.get("compute_unit", "cpu"),
                     "target_runtime": self.options.get("target_runtime"), "emulated": False}
        try:
            stand_in = is_stand_in(import_client())
        except EmbgError:
            stand_in = True  # no client: nothing can have come from the farm
        return {**described, **no_device_fields(stand_in)}

    def open(self, artifact: Artifact, engine: str, threads: int | None = None) -> RemoteRuntime:
        runtime_name = self._runtime_name(artifact.target)
        if TARGET_RUNTIMES[runtime_name].bundle_target != artifact.target:
            raise EmbgError(f"aihub target_runtime {runtime_name} takes {TARGET_RUNTIMES[runtime_name].bundle_target} "
                            f"bundles; {artifact.directory.name} is a {artifact.target} bundle")
        artifact.verify()  # every file's sha256 and the model's structure, before anything is uploaded
        session = FarmSession(import_client(), self.label, self.spec, artifact, runtime_name, self._compute_unit())
        device = {**self.describe(), "target_runtime": runtime_name, **session.describe(),
                  "latency_source": "the farm's profile: estimated_inference_time per row, summed over a call's rows",
                  **no_device_fields(session.stand_in)}
        return AihubRuntime(artifact, session, engine, device)


def no_device_fields(stand_in: bool) -> dict[str, Any]:
    """What a description says about whether a device answered at all."""
    if not stand_in:
        return {"real_device": True, "stand_in": False}
    return {"real_device": False, "stand_in": True, "machine": NO_DEVICE, "note": NO_DEVICE}
