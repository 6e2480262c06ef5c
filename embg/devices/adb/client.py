"""adb plumbing for android_demo's parity entry point: push a bundle and token ids, run
``am instrument``, pull embeddings and timings back (``AdbRunner(serial).run_parity(bundle, items)``).

embg.devices.adb wraps it as ``embg-validate --device adb[:SERIAL]``; ``python -m embg.cli.adb_parity``
runs it alone against host LiteRT.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from embg.devices.adb.protocol import (ACCELERATORS, PACKAGE, REMOTE_DIR, REMOTE_OUTPUT, SCHEMA, AdbError,
                                       AdbParityResult, DeviceInfo, STAND_IN_MODEL, instrumentation_status,
                                       parse_result)


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
            status = instrumentation_status(out)
            if status.get("status") != "ok":
                raise AdbError(f"the app's parity run failed after {time.perf_counter() - started:.0f} s: "
                               f"{status.get('error') or out.strip()[-800:]}\n(is android_demo installed on "
                               f"{device.label()}? see android_demo/README.md)")
            local_out = Path(tmp) / "output.json"
            self._adb("pull", status.get("output", self.remote_output), str(local_out))
            response = json.loads(local_out.read_text(encoding="utf-8"))
        return parse_result(response, items, device)
