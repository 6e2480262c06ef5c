"""The local device: the runner script in a separate process on this host.

It exercises the same protocol and self-contained runner every remote device uses, so a device
problem can be told apart from a protocol problem.
"""

from __future__ import annotations

import platform
import sys

from embg.devices.base import DEVICES, DeviceRunner, RemoteRuntime, Session, runner_script
from embg.bundle import Artifact


@DEVICES.register("local")
class LocalDevice(DeviceRunner):
    kind = "local"

    def open(self, artifact: Artifact, engine: str, threads: int | None = None) -> RemoteRuntime:
        artifact.verify()  # refuse a damaged bundle before it is copied anywhere
        argv = [sys.executable, str(runner_script()), str(artifact.directory), engine, str(threads or "")]
        session = Session(argv, self.label)
        device = {**self.describe(), "machine": platform.machine(), "emulated": False, "real_device": True}
        return RemoteRuntime(artifact, session, engine, device)
