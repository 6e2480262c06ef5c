"""A stand-in for Qualcomm AI Hub's ``qai_hub`` client in tests: NO device and no network are involved.

It has the names and result shapes of qai-hub 0.56 for what embg uses: Device, get_devices,
upload_model, submit_compile_job -> CompileJob (wait, get_status, get_target_model,
get_target_shapes), submit_inference_job -> InferenceJob (wait, download_output_data: name -> list
of arrays, download_profile: {"execution_summary": {...}}), JobStatus (code, message, success,
failure), Error/UserError. "Jobs" run at once, on this host, with the host runtimes (onnxruntime,
ai-edge-litert); the module says what it is (EMBG_STAND_IN) so its numbers are never taken for a phone's.

Faults for tests (environment variables):
  EMBG_FAKE_AIHUB_REFUSE_COMPILE=npu  compile jobs with --compute_unit npu fail with a farm-style reason
  EMBG_FAKE_AIHUB_FAIL_AFTER=N        every inference job after the N-th fails (device lost mid-run)
  EMBG_FAKE_AIHUB_PERTURB=X           X * N(0, 1) added to every output (a device that computes wrongly)
  EMBG_FAKE_AIHUB_NAN=1               every output row is NaN (what fp16 overflow gives)
  EMBG_FAKE_AIHUB_BARRIER=N           the first inference job submitted from each thread waits until N
                                      threads are inside one (fails after 60 s: devices ran one by one)
  EMBG_FAKE_AIHUB_LOG=FILE            every upload and job appended as a JSON line
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

EMBG_STAND_IN = True
__version__ = "0.56.0+embg-stand-in"

DEVICES = {
    "Samsung Galaxy S25 (Family)": ("15", ["chipset:qualcomm-snapdragon-8-elite", "os:android", "format:phone",
                                           "vendor:samsung", "framework:tflite", "framework:onnx", "framework:qnn"]),
    "Samsung Galaxy S24 (Family)": ("14", ["chipset:qualcomm-snapdragon-8gen3", "os:android", "format:phone",
                                           "vendor:samsung", "framework:tflite", "framework:onnx", "framework:qnn"]),
}
_lock = threading.Lock()
_counter = {"jobs": 0, "inference": 0}
_barrier: dict[str, Any] = {"barrier": None, "waited": set()}  # and "store": uploaded models


class Error(Exception):
    """Base class of the client's errors."""


class UserError(Error):
    """Something in the user input caused a failure."""


class SourceModelType(Enum):
    TFLITE = "tflite"
    ONNX = "onnx"


@dataclass
class Device:
    name: str = ""
    os: str = ""
    attributes: str | list[str] = field(default_factory=list)


@dataclass
class JobStatus:
    code: str
    message: str | None = None

    @property
    def success(self) -> bool:
        return self.code == "SUCCESS"

    @property
    def failure(self) -> bool:
        return self.code == "FAILED"

    @property
    def finished(self) -> bool:
        return self.code in ("SUCCESS", "FAILED")


@dataclass
class Model:
    model_id: str
    model_type: SourceModelType
    name: str
    path: Path
    input_spec: dict[str, tuple[tuple[int, ...], str]] | None = None  # set on compiled models


def _config() -> None:
    path = Path(os.environ.get("QAIHUB_CLIENT_INI") or "~/.qai_hub/client.ini").expanduser()
    if not path.is_file():
        raise UserError(f"Failed to load client configuration file: {path} not found")


def _log(record: dict[str, Any]) -> None:
    target = os.environ.get("EMBG_FAKE_AIHUB_LOG")
    if target:
        with _lock, open(target, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({**record, "thread": threading.current_thread().name}) + "\n")


def _job_id() -> str:
    with _lock:
        _counter["jobs"] += 1
        return f"jstand{_counter['jobs']:04d}"


def get_devices(name: str = "", os: str = "", attributes: str | list[str] | None = None) -> list[Device]:
    _config()
    return [Device(n, v, list(a)) for n, (v, a) in DEVICES.items() if not name or n == name]


def upload_model(model: str | Path, name: str | None = None) -> Model:
    """Copies the file (or a directory holding one .onnx and its .data) into this process's store."""
    _config()
    source = Path(model)
    files = sorted(source.iterdir()) if source.is_dir() else [source]
    onnx = [f for f in files if f.suffix == ".onnx"]
    if source.is_dir() and (len(onnx) != 1 or any(f.suffix not in (".onnx", ".data") for f in files)):
        raise UserError(f"Model directory '{model}' must hold one .onnx file and at most one .data file")
    kinds = {".tflite": SourceModelType.TFLITE, ".onnx": SourceModelType.ONNX}
    path = (onnx or files)[0]
    if path.suffix not in kinds:
        raise UserError(f"Unsupported model type for '{model}'")
    model_id = f"m{_job_id()}"
    with _lock:
        if "store" not in _barrier:
            _barrier["store"] = Path(tempfile.mkdtemp(prefix="qai-hub-stand-in-"))
            atexit.register(shutil.rmtree, _barrier["store"], True)  # the "farm" forgets uploads at exit
    stored = _barrier["store"] / model_id
    stored.mkdir()
    for f in files:
        shutil.copyfile(f, stored / f.name)  # follows symlinks, as the real upload reads the files
    _log({"op": "upload", "file": path.name, "files": [f.name for f in files]})
    return Model(model_id, kinds[path.suffix], name or path.stem, stored / path.name)


class CompileJob:
    def __init__(self, model: Model, device: Device, input_specs: dict, options: str) -> None:
        self.job_id = _job_id()
        self.url = f"https://stand-in.invalid/jobs/{self.job_id}"
        self.device = device
        self._target: Model | None = None
        self._shapes: dict[str, tuple[tuple[int, ...], str]] | None = None
        refuse = os.environ.get("EMBG_FAKE_AIHUB_REFUSE_COMPILE")
        if model.model_type is not SourceModelType.ONNX:
            self._status = JobStatus("FAILED", "Only ONNX and PyTorch models can be compiled")
        elif refuse and f"--compute_unit {refuse}" in options:
            self._status = JobStatus("FAILED", "Failed to compile model: Op 'Gelu' (node /layers.0/mlp/Gelu) is not "
                                               f"supported by the {refuse.upper()} backend")
        else:
            int32 = "--truncate_64bit_io" in options
            self._shapes = {name: (tuple(shape), "int32" if int32 and dtype == "int64" else dtype)
                            for name, (shape, dtype) in input_specs.items()}
            self._target = Model(f"m{self.job_id}", SourceModelType.ONNX, model.name, model.path, self._shapes)
            self._status = JobStatus("SUCCESS")
        _log({"op": "compile", "device": device.name, "options": options, "status": self._status.code})

    def wait(self, timeout: int | None = None) -> JobStatus:
        return self._status

    def get_status(self) -> JobStatus:
        return self._status

    def get_target_model(self) -> Model | None:
        return self._target

    def get_target_shapes(self, timeout: int | None = None) -> dict | None:
        return self._shapes


def submit_compile_job(model: Model, device: Device, name: str | None = None, input_specs: dict | None = None,
                       options: str = "", **_: Any) -> CompileJob:
    _config()
    return CompileJob(model, device, input_specs or {}, options)


def _wait_for_other_devices() -> None:
    parties = int(os.environ.get("EMBG_FAKE_AIHUB_BARRIER") or 0)
    if not parties:
        return
    me = threading.current_thread().name
    with _lock:
        if _barrier["barrier"] is None:
            _barrier["barrier"] = threading.Barrier(parties, timeout=60)
        first = me not in _barrier["waited"]
        _barrier["waited"].add(me)
    if first:
        _barrier["barrier"].wait()  # BrokenBarrierError: the devices did not run side by side


def _runner(model: Model):
    """(load seconds, run(sample inputs) -> output) with the host runtime for the model's format."""
    start = time.perf_counter()
    if model.model_type is SourceModelType.ONNX:
        import onnxruntime as ort

        session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
        wanted = {i.name: np.int64 if "int64" in i.type else np.int32 for i in session.get_inputs()}

        def run(sample: dict[str, np.ndarray]) -> np.ndarray:
            return session.run(None, {k: v.astype(wanted[k]) for k, v in sample.items()})[0]
    else:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(model.path))
        by_length = {}
        for signature, io in interpreter.get_signature_list().items():
            runner = interpreter.get_signature_runner(signature)
            by_length[int(runner.get_input_details()[io["inputs"][0]]["shape"][1])] = runner

        def run(sample: dict[str, np.ndarray]) -> np.ndarray:
            length = next(iter(sample.values())).shape[1]
            if length not in by_length:
                raise UserError(f"no signature of the model takes sequence length {length}")
            return next(iter(by_length[length](**sample).values()))
    return time.perf_counter() - start, run


class InferenceJob:
    def __init__(self, model: Model, device: Device, inputs: dict[str, list[np.ndarray]], options: str) -> None:
        self.job_id = _job_id()
        self.url = f"https://stand-in.invalid/jobs/{self.job_id}"
        self.device = device
        self._outputs: dict[str, list[np.ndarray]] | None = None
        self._profile: dict[str, Any] = {}
        with _lock:
            _counter["inference"] += 1
            number = _counter["inference"]
        fail_after = os.environ.get("EMBG_FAKE_AIHUB_FAIL_AFTER")
        try:
            if fail_after is not None and number > int(fail_after):
                raise Error("Device disconnected during inference (the device was lost; retry the job)")
            _wait_for_other_devices()
            self._run(model, inputs)
            self._status = JobStatus("SUCCESS")
        except Exception as exc:  # noqa: BLE001 - a job that fails on the farm is a FAILED status, not an exception
            self._status = JobStatus("FAILED", str(exc) or type(exc).__name__)
        _log({"op": "inference", "device": device.name, "options": options, "status": self._status.code,
              "samples": len(next(iter(inputs.values()))), "shape": list(next(iter(inputs.values()))[0].shape)})

    def _run(self, model: Model, inputs: dict[str, list[np.ndarray]]) -> None:
        count = len(next(iter(inputs.values())))
        if model.input_spec:  # a compiled model takes exactly its compiled shapes and dtypes
            for name, (shape, dtype) in model.input_spec.items():
                if any(a.shape != shape or a.dtype != np.dtype(dtype) for a in inputs[name]):
                    raise UserError(f"input {name} does not match the compiled spec {shape} {dtype}")
        load_s, run = _runner(model)
        run({name: arrays[0] for name, arrays in inputs.items()})  # warm-up, as the farm's profiler does
        rows, times = [], []
        for i in range(count):
            start = time.perf_counter()
            rows.append(np.asarray(run({name: arrays[i] for name, arrays in inputs.items()}), dtype=np.float32))
            times.append(int((time.perf_counter() - start) * 1e6))
        perturb = float(os.environ.get("EMBG_FAKE_AIHUB_PERTURB") or 0)
        if perturb:
            noise = np.random.default_rng(0)
            rows = [r + perturb * noise.standard_normal(r.shape).astype(np.float32) for r in rows]
        if os.environ.get("EMBG_FAKE_AIHUB_NAN"):
            rows = [np.full_like(r, np.nan) for r in rows]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # this host process, in bytes
        self._outputs = {"sentence_embedding": rows}
        self._profile = {"execution_summary": {
            "estimated_inference_time": int(np.median(times)), "all_inference_times": times,
            "first_load_time": int(load_s * 1e6), "warm_load_time": int(load_s * 1e6),
            "inference_memory_peak_range": (peak, peak), "first_load_memory_peak_range": (peak, peak)},
            "execution_detail": []}

    def wait(self, timeout: int | None = None) -> JobStatus:
        return self._status

    def get_status(self) -> JobStatus:
        return self._status

    def download_output_data(self, filename: str | None = None) -> dict[str, list[np.ndarray]] | None:
        return self._outputs

    def download_profile(self, filename: str | None = None) -> dict[str, Any]:
        return self._profile


def submit_inference_job(model: Model, device: Device, inputs: dict[str, list[np.ndarray]] | None = None,
                         name: str | None = None, options: str = "", profile: bool = True, **_: Any) -> InferenceJob:
    _config()
    if not inputs:
        raise UserError("inputs are required when profile is False")
    return InferenceJob(model, device, inputs, options)
