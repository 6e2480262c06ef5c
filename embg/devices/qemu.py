"""The qemu-arm64 device: the runner inside the emulated ARM64 Debian (qemu-user + binfmt + chroot).

``--device qemu-arm64[:CPU]``, CPU a qemu model: cortex-a72 (Raspberry Pi 4), cortex-a76
(Pi 5, recent phones; the default), cortex-a53, max. The bundle is copied into the rootfs under
/opt/embg/bundles/<manifest sha256> (once per bundle), the runner next to it, and started with
the venv's python from ``embg-device-setup qemu-arm64``. Expect 100-400x the host's latency:
numbers measure the emulator, not an ARM chip; parity (bit-identical outputs) is the point.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from embg.atomic import atomic_write_bytes
from embg.bundle import Artifact
from embg.devices.base import DEVICES, DeviceRunner, RemoteRuntime, Session, runner_script
from embg.devices.qemu_system import CPUS, DEFAULT_CPU, QemuSystem
from embg.errors import EmbgError

INSIDE = "/opt/embg"


@DEVICES.register("qemu-arm64")
class QemuArm64Device(DeviceRunner):
    kind = "qemu-arm64"

    def __init__(self, spec: str = "") -> None:
        super().__init__(spec)
        self.cpu = spec or DEFAULT_CPU
        if self.cpu not in CPUS:
            raise EmbgError(f"--device qemu-arm64:{spec}: unknown CPU model; choose one of {', '.join(sorted(CPUS))}")
        self.system = QemuSystem.default(Path(os.environ["EMBG_QEMU_DIR"]) if os.environ.get("EMBG_QEMU_DIR")
                                         else None)

    def configure(self, options: dict) -> None:
        super().configure(options)
        if options.get("dir"):
            self.system = QemuSystem.default(Path(options["dir"]))

    def copy(self, artifact: Artifact) -> tuple[str, str]:
        runner = runner_script().read_bytes()
        runner_inside = f"{INSIDE}/runner-{hashlib.sha256(runner).hexdigest()[:12]}.py"
        bundle_inside = f"{INSIDE}/bundles/{artifact.manifest_sha256}"
        runner_host = self.system.rootfs / runner_inside.lstrip("/")
        bundle_host = self.system.rootfs / bundle_inside.lstrip("/")
        if not runner_host.exists():
            atomic_write_bytes(runner_host, runner)
        if not (bundle_host / ".complete").exists():
            bundle_host.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=bundle_host.parent))
            for path in Path(artifact.directory).iterdir():
                if path.is_file():
                    shutil.copy2(path, staging / path.name)
            (staging / ".complete").touch()
            shutil.rmtree(bundle_host, ignore_errors=True)
            staging.rename(bundle_host)
        return bundle_inside, runner_inside

    def open(self, artifact: Artifact, engine: str, threads: int | None = None) -> RemoteRuntime:
        artifact.verify()  # refuse a damaged bundle before it is copied anywhere
        self.system.check_ready()
        bundle, runner = self.copy(artifact)
        argv = self.system.inside_argv([self.system.python(), runner, bundle, engine, str(threads or "")], self.cpu)
        session = Session(argv, self.label, env=self.system.env(self.cpu))
        device = {**self.describe(), "machine": session.hello.get("machine"), "cpu": self.cpu, "emulated": True,
                  "real_device": False, "emulator": "qemu-user (binfmt) + chroot",
                  "rootfs": str(self.system.rootfs)}
        return RemoteRuntime(artifact, session, engine, device)

