"""The files exchanged with android_demo's ParityInstrumentation (schema 1; the Java side is
android_demo/core/.../ParityProtocol.java): constants, the device description, and the parsed result.

A result is labelled a device result only when the device said so: the test stand-in
(tests/fakes/adb) reports ``ro.product.model`` = ``embg-stand-in`` and ``"stand_in": true``,
and then every summary and metadata field says plainly that no device was used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embg.errors import EmbgError

PACKAGE = "dev.embg.demo"
REMOTE_DIR = "/data/local/tmp/embg"
# The app may write only inside its own storage; adb's shell user can read this one.
REMOTE_OUTPUT = f"/sdcard/Android/data/{PACKAGE}/files/embg/output.json"
STAND_IN_MODEL = "embg-stand-in"
SCHEMA = 1
ACCELERATORS = ("cpu", "gpu", "npu")


class AdbError(EmbgError):
    """adb failed, the app is missing, or the device answered with something unusable."""


@dataclass(frozen=True)
class DeviceInfo:
    serial: str | None
    model: str
    manufacturer: str
    sdk: str
    abi: str
    stand_in: bool

    def label(self) -> str:
        if self.stand_in:
            return "STAND-IN adb (no device was used: host LiteRT ran the parity logic)"
        return f"{self.manufacturer} {self.model} (Android SDK {self.sdk}, {self.abi}, serial {self.serial or 'default'})"


@dataclass
class AdbParityResult:
    names: list[str]
    embeddings: np.ndarray            # float32 [N, D]
    buckets: list[int]
    token_counts: list[int]
    timings_ms: list[list[float]]
    load_ms: float
    accelerator: dict[str, Any]       # requested, used, note
    tokenizer_match: list[bool | None]
    device: DeviceInfo
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def device_used(self) -> bool:
        return not self.device.stand_in

    def metadata(self) -> dict[str, Any]:
        """For reports: where the numbers came from, never claiming a device that was not there."""
        med = [float(np.median(t)) for t in self.timings_ms if t]
        meta = {
            "runner": "adb",
            "device_used": self.device_used,
            "device": {"serial": self.device.serial, "model": self.device.model,
                       "manufacturer": self.device.manufacturer, "sdk": self.device.sdk, "abi": self.device.abi},
            "accelerator": self.accelerator,
            "load_ms": self.load_ms,
            "median_ms": float(np.median(med)) if med else None,
            "texts": len(self.names),
        }
        if not self.device_used:
            meta["note"] = ("no device was used: the stand-in adb ran the parity logic on this host with the LiteRT "
                            "Python interpreter; these are not phone numbers")
        return meta

    def summary(self) -> str:
        med = [float(np.median(t)) for t in self.timings_ms if t]
        lines = []
        if not self.device_used:
            lines.append("NO DEVICE USED: stand-in adb detected; embeddings and timings come from this host.")
        lines.append(f"adb parity on {self.device.label()}")
        acc = self.accelerator
        lines.append(f"accelerator requested {acc.get('requested')}, used {acc.get('used')}"
                     + (f" ({acc['note']})" if acc.get("note") else ""))
        if med:
            lines.append(f"{len(self.names)} texts, model load {self.load_ms:.1f} ms, median {np.median(med):.2f} ms/text")
        checked = [m for m in self.tokenizer_match if m is not None]
        if checked:
            lines.append(f"app tokenizer agreed with the host ids on {sum(checked)}/{len(checked)} texts")
        else:
            lines.append("app tokenizer not checked (the runner did not report it)")
        return "\n".join(lines)


def instrumentation_status(output: str) -> dict[str, str]:
    """key=value pairs of `am instrument -w` INSTRUMENTATION_RESULT lines, plus the result code."""
    status: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("INSTRUMENTATION_RESULT:") and "=" in line:
            key, _, value = line.split(":", 1)[1].strip().partition("=")
            status[key] = value
        elif line.startswith("INSTRUMENTATION_CODE:"):
            status["code"] = line.split(":", 1)[1].strip()
        elif line.startswith("INSTRUMENTATION_FAILED") or line.startswith("INSTRUMENTATION_ABORTED"):
            status.setdefault("error", line)
    if status.get("code") not in ("-1", None) and status.get("status") == "ok":
        status["status"] = "failed"
    return status


def parse_result(response: dict[str, Any], items: list[dict[str, Any]], device: DeviceInfo) -> AdbParityResult:
    if response.get("schema") != SCHEMA:
        raise AdbError(f"the app wrote schema {response.get('schema')!r}; this runner reads {SCHEMA}")
    if response.get("error"):
        raise AdbError(f"the app reported: {response['error']}")
    # Either side saying "stand-in" makes it one: a device result must never be claimed by default.
    reported = response.get("device") or {}
    if reported.get("stand_in") or response.get("runner") == STAND_IN_MODEL or reported.get("model") == STAND_IN_MODEL:
        device = DeviceInfo(device.serial, device.model, device.manufacturer, device.sdk, device.abi, stand_in=True)
    results = response.get("results") or []
    names = [it["name"] for it in items]
    if [r.get("name") for r in results] != names:
        raise AdbError(f"the app returned {len(results)} results for {len(names)} texts, or in another order")
    rows = []
    for r in results:
        emb = r.get("embedding") or []
        if any(v is None or not math.isfinite(v) for v in emb):
            raise AdbError(f"non-finite embedding from the device for {r['name']!r}")
        rows.append(emb)
    if len({len(e) for e in rows}) != 1:
        raise AdbError("embeddings of different lengths from the device")
    return AdbParityResult(
        names=names, embeddings=np.asarray(rows, dtype=np.float32), buckets=[int(r["bucket"]) for r in results],
        token_counts=[int(r["token_count"]) for r in results], timings_ms=[list(map(float, r.get("ms", []))) for r in results],
        load_ms=float(response.get("load_ms") or 0.0), accelerator=dict(response.get("accelerator") or {}),
        tokenizer_match=[r.get("tokenizer_match") for r in results], device=device, raw=response)
