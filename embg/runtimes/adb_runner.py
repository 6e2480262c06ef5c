"""Device runner for Android over adb: push a bundle and token ids, run the demo app's parity
entry point, pull embeddings and timings back.

``AdbRunner(serial).run_parity(bundle, items)`` returns an ``AdbParityResult``; embg.devices.adb
wraps the same runner as ``embg-validate --device adb[:SERIAL]``. The device side
is android_demo's ``ParityInstrumentation`` (``am instrument -w``), reading and writing the JSON
files described in android_demo/core/.../ParityProtocol.java (schema 1).

A result is labelled a device result only when the device said so: the test stand-in
(tests/fakes/adb) reports ``ro.product.model`` = ``embg-stand-in`` and ``"stand_in": true``,
and then every summary and metadata field says plainly that no device was used.

    python -m embg.runtimes.adb_runner BUNDLE_DIR [--serial SERIAL] [--accelerator cpu|gpu|npu]
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embg.errors import EmbgError

PACKAGE = "dev.embg.demo"
INSTRUMENTATION = f"{PACKAGE}/.ParityInstrumentation"
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


class AdbRunner:
    """One device (``serial``, or adb's default when there is exactly one) reached through ``adb``."""

    def __init__(self, serial: str | None = None, adb: str = "adb", package: str = PACKAGE,
                 remote_dir: str = REMOTE_DIR, timeout: float = 900.0) -> None:
        found = shutil.which(adb)
        if found is None:
            raise AdbError(f"{adb!r} not found on PATH: install Android platform-tools (adb)")
        self.adb = found
        self.serial = serial
        self.package = package
        self.remote_dir = remote_dir.rstrip("/")
        self.remote_output = REMOTE_OUTPUT.replace(PACKAGE, package)
        self.timeout = timeout

    # -- adb plumbing -----------------------------------------------------------------------------
    def _adb(self, *args: str, timeout: float | None = None) -> str:
        cmd = [self.adb, *(("-s", self.serial) if self.serial else ()), *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise AdbError(f"adb {' '.join(args[:2])} timed out after {exc.timeout:.0f} s") from exc
        if proc.returncode != 0:
            raise AdbError(f"adb {' '.join(args[:2])} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
        return proc.stdout

    def shell(self, *argv: str, timeout: float | None = None) -> str:
        """Run argv on the device; every argument is quoted because adb hands one string to the remote sh."""
        return self._adb("shell", " ".join(shlex.quote(str(a)) for a in argv), timeout=timeout)

    def device_info(self) -> DeviceInfo:
        props = {}
        for key in ("ro.product.model", "ro.product.manufacturer", "ro.build.version.sdk", "ro.product.cpu.abi"):
            props[key] = self.shell("getprop", key, timeout=60).strip()
        model = props["ro.product.model"]
        return DeviceInfo(self.serial, model, props["ro.product.manufacturer"], props["ro.build.version.sdk"],
                          props["ro.product.cpu.abi"], stand_in=model == STAND_IN_MODEL)

    def push_bundle(self, bundle: Path) -> str:
        """Push the bundle's files (manifest, model, tokenizer) to REMOTE_DIR/bundle; returns that path.

        The bundle is verified first (Artifact.verify): a damaged or tampered bundle never reaches the device."""
        from embg.bundle import Artifact

        bundle = Path(bundle)
        manifest = Artifact.load(bundle).verify().manifest
        names = ["manifest.json", manifest["model_file"], *manifest.get("tokenizer", {}).get("files", {})]
        remote = f"{self.remote_dir}/bundle"
        self.shell("rm", "-rf", remote)
        self.shell("mkdir", "-p", remote)
        for name in dict.fromkeys(names):
            if (bundle / name).is_file():
                self._adb("push", str(bundle / name), f"{remote}/{name}")
        return remote

    # -- the parity run ---------------------------------------------------------------------------
    def run_parity(self, bundle: Path, items: list[dict[str, Any]], accelerator: str = "cpu",
                   repeats: int = 3) -> AdbParityResult:
        """Embed ``items`` ({"name", "ids", optional "text"/"prompt"}) on the device."""
        if accelerator not in ACCELERATORS:
            raise AdbError(f"accelerator must be one of {', '.join(ACCELERATORS)}")
        if not items:
            raise AdbError("no texts to run")
        device = self.device_info()
        remote_bundle = self.push_bundle(bundle)
        return self.run_items(remote_bundle, items, device, accelerator, repeats)

    def run_items(self, remote_bundle: str, items: list[dict[str, Any]], device: DeviceInfo,
                  accelerator: str = "cpu", repeats: int = 3) -> AdbParityResult:
        """One ``am instrument`` run over ``items`` with a bundle already pushed to ``remote_bundle``."""
        request = {"schema": SCHEMA, "accelerator": accelerator, "repeats": int(repeats),
                   "items": [{k: v for k, v in it.items() if k in ("name", "ids", "text", "prompt")} for it in items]}
        remote_input = f"{self.remote_dir}/input.json"
        with tempfile.TemporaryDirectory(prefix="embg-adb-") as tmp:
            local_in = Path(tmp) / "input.json"
            local_in.write_text(json.dumps(request, ensure_ascii=False), encoding="utf-8")
            self._adb("push", str(local_in), remote_input)
            self.shell("rm", "-f", self.remote_output)
            started = time.perf_counter()
            out = self.shell("am", "instrument", "-w", "-e", "bundle", remote_bundle, "-e", "input", remote_input,
                             "-e", "output", self.remote_output, f"{self.package}/.ParityInstrumentation")
            status = _instrumentation_status(out)
            if status.get("status") != "ok":
                raise AdbError(f"the app's parity run failed after {time.perf_counter() - started:.0f} s: "
                               f"{status.get('error') or out.strip()[-800:]}\n(is android_demo installed on "
                               f"{device.label()}? see android_demo/README.md)")
            local_out = Path(tmp) / "output.json"
            self._adb("pull", status.get("output", self.remote_output), str(local_out))
            response = json.loads(local_out.read_text(encoding="utf-8"))
        return _result(response, items, device)


def _instrumentation_status(output: str) -> dict[str, str]:
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


def _result(response: dict[str, Any], items: list[dict[str, Any]], device: DeviceInfo) -> AdbParityResult:
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


def items_from_texts(bundle: Path, texts: list[Any]) -> list[dict[str, Any]]:
    """Token ids for EvalText-like rows (``.text``, ``.task``) with the bundle's own tokenizer and prompts."""
    from embg.model.tokenizer import EmbedTokenizer

    manifest = json.loads((Path(bundle) / "manifest.json").read_text(encoding="utf-8"))
    largest = max(int(s["seq_len"]) for s in manifest["signatures"])
    tok = EmbedTokenizer(Path(bundle), manifest["prompts"], max_length=largest)
    items = []
    for i, row in enumerate(texts):
        batch = tok.encode([row.text], prompt=row.task or None, max_length=largest)
        n = int(batch.attention_mask[0].sum())
        items.append({"name": f"t{i:03d}", "ids": [int(x) for x in batch.input_ids[0, :n]],
                      "text": row.text, "prompt": row.task})
    return items


def host_embeddings(bundle: Path, items: list[dict[str, Any]]) -> np.ndarray:
    """The same ids through LiteRT on this host: the device result is compared with this."""
    from embg.bundle import Artifact
    from embg.runtimes import load_all, load_runtime

    load_all()
    runtime = load_runtime("litert", Artifact.load(Path(bundle)), threads=1)
    rows = []
    for it in items:
        ids = np.asarray([it["ids"]], dtype=np.int64)
        rows.append(runtime.embed(ids, np.ones_like(ids))[0])
    return np.asarray(rows, dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    from embg.textdata.sets import builtin_texts

    p = argparse.ArgumentParser(prog="python -m embg.runtimes.adb_runner",
                                description="Run a bundle in android_demo on a phone or emulator and compare with host LiteRT.")
    p.add_argument("bundle", type=Path)
    p.add_argument("--serial", help="adb device serial (adb devices); default: the only device")
    p.add_argument("--accelerator", default="cpu", choices=ACCELERATORS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--remote-dir", default=REMOTE_DIR)
    p.add_argument("--min-cosine", type=float, default=0.99)
    p.add_argument("--json", type=Path, help="write metadata and per-text cosines here")
    args = p.parse_args(argv)
    try:
        runner = AdbRunner(args.serial, remote_dir=args.remote_dir)
        items = items_from_texts(args.bundle, builtin_texts())
        result = runner.run_parity(args.bundle, items, args.accelerator, args.repeats)
        host = host_embeddings(args.bundle, items)
    except EmbgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cos = (result.embeddings * host).sum(1) / (np.linalg.norm(result.embeddings, axis=1) * np.linalg.norm(host, axis=1))
    print(result.summary())
    print(f"cosine vs host LiteRT: min {cos.min():.6f}, mean {cos.mean():.6f} (threshold {args.min_cosine})")
    if args.json:
        args.json.write_text(json.dumps({**result.metadata(), "cosine": dict(zip(result.names, map(float, cos)))},
                                        indent=2) + "\n", encoding="utf-8")
    return 0 if cos.min() >= args.min_cosine else 1


if __name__ == "__main__":
    raise SystemExit(main())
