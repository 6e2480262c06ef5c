"""The device-runner interface, the JSON-lines session and the RemoteRuntime proxy."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import time
from abc import ABC, abstractmethod
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from embg.errors import EmbgError
from embg.bundle import Artifact
from embg.registry import Registry
from embg.runtimes.base import Runtime, truncate_to
from embg.bundle import fit_to, rows_by_bucket

log = logging.getLogger(__name__)

DEVICES: Registry[type["DeviceRunner"]] = Registry("device")


class DeviceError(EmbgError):
    """The device could not be reached or failed mid-run (exit status 1 in matrix runs)."""


def runner_script() -> Path:
    return Path(str(resources.files("embg.devices").joinpath("remote_runner.py")))


class Session:
    """A started remote_runner.py process, spoken to over its stdin/stdout."""

    def __init__(self, argv: list[str], label: str, timeout: float = 600.0, env: dict[str, str] | None = None) -> None:
        self.label = label
        self.timeout = timeout
        try:
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True, bufsize=1, env=env)
        except OSError as exc:
            raise DeviceError(f"{label}: cannot start {argv[0]}: {exc}") from exc
        self.hello = self.request({"op": "hello"})

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.process.poll() is not None:
            raise DeviceError(f"{self.label}: the runner exited ({self.process.returncode}): {self._stderr_tail()}")
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (BrokenPipeError, OSError) as exc:
            raise DeviceError(f"{self.label}: connection lost: {exc}; {self._stderr_tail()}") from exc
        if not line:
            self.process.wait(timeout=10)
            raise DeviceError(f"{self.label}: the runner stopped answering (exit {self.process.returncode}): "
                              f"{self._stderr_tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise DeviceError(f"{self.label}: {reply.get('error', 'unknown error')}")
        return reply

    def _stderr_tail(self) -> str:
        if self.process.poll() is None:
            return ""
        text = (self.process.stderr.read() or "").strip().splitlines()
        return " | ".join(text[-5:]) or "no output"

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()


class RemoteRuntime(Runtime):
    """A Runtime whose engine runs on a device; bucket choice and truncation happen on the host."""

    def __init__(self, artifact: Artifact, session: Session, engine: str, device: dict[str, Any]) -> None:
        self.name = f"{engine}@{device['name']}"
        self.target = artifact.target
        self.session = session
        self.device = device
        self.remote_seconds: list[float] = []
        signatures = artifact.manifest.get("signatures")
        self.buckets = sorted(int(s["seq_len"]) for s in signatures) if signatures else None
        self.signatures = {int(s["seq_len"]): s["name"] for s in signatures} if signatures else {}
        self._max = self.buckets[-1] if self.buckets else int(artifact.manifest.get("max_sequence_length") or 2048)

    @property
    def max_length(self) -> int:
        return self._max

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids, mask = truncate_to(np.asarray(input_ids), np.asarray(attention_mask), self._max)
        if not self.buckets or not len(ids):
            return self._embed_remote(ids, mask, None)
        # as the LiteRT runtime: each row in the smallest bucket that holds its own tokens
        out: np.ndarray | None = None
        for bucket, rows in rows_by_bucket(self.buckets, mask).items():
            part = self._embed_remote(*fit_to(ids[rows], mask[rows], bucket), self.signatures[bucket])
            if out is None:
                out = np.zeros((len(ids), part.shape[1]), np.float32)
            out[rows] = part
        return out

    def _embed_remote(self, ids: np.ndarray, mask: np.ndarray, signature: str | None) -> np.ndarray:
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        mask = np.ascontiguousarray(mask, dtype=np.int32)
        reply = self.session.request({"op": "embed", "signature": signature, "shape": list(ids.shape),
                                      "ids": base64.b64encode(ids.tobytes()).decode(),
                                      "mask": base64.b64encode(mask.tobytes()).decode()})
        self.remote_seconds.append(float(reply["seconds"]))
        return np.frombuffer(base64.b64decode(reply["embeddings"]), dtype=np.float32).reshape(reply["shape"]).copy()

    def version_info(self) -> dict[str, Any]:
        return {"runtime": self.name, "engine": self.session.hello.get("engine"),
                "version": self.session.hello.get("version"), "device": self.device}

    def device_measurements(self) -> dict[str, Any]:
        """Peak memory ("memory") and load times ("load") the device itself reported; {} when it reports none."""
        return {}

    def close(self) -> None:
        self.session.close()


class DeviceRunner(ABC):
    """Where bundles run. ``spec`` is the part after the colon in ``--device kind:spec``."""

    kind: str = ""
    env_options: dict[str, str] = {}  # option name -> environment variable, for one-off --device runs

    def __init__(self, spec: str = "") -> None:
        self.spec = spec
        self.options: dict[str, Any] = {k: os.environ[v] for k, v in self.env_options.items() if os.environ.get(v)}

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.spec}" if self.spec else self.kind

    @abstractmethod
    def open(self, artifact: Artifact, engine: str, threads: int | None = None) -> RemoteRuntime:
        """Copy the bundle and runner to the device, start it, return the proxy runtime.

        Implementations call ``artifact.verify()`` first: a damaged or tampered bundle is refused
        (EmbgError naming the file) before anything is copied, pushed or uploaded.
        """

    def describe(self) -> dict[str, Any]:
        return {"name": self.label, "kind": self.kind}

    def preflight(self) -> None:
        """Checks that need neither the device nor slow work (tools, credentials, option values).

        Raises EmbgError (exit 2); run before the reference model loads.
        """

    def configure(self, options: dict[str, Any]) -> None:
        """Per-device settings from devices.toml (identity file, venv, ...), over the environment's."""
        self.options.update(options)


def parse_device(text: str, options: dict[str, Any] | None = None) -> DeviceRunner:
    kind, _, spec = text.partition(":")
    runner = DEVICES.get(kind)(spec)
    if options:
        runner.configure(options)
    return runner


def open_device(device: str, artifact: Artifact, engine: str, threads: int | None = None,
                options: dict[str, Any] | None = None) -> RemoteRuntime:
    started = time.perf_counter()
    runtime = parse_device(device, options).open(artifact, engine, threads)
    log.debug("opened %s in %.1f s", device, time.perf_counter() - started)
    return runtime
