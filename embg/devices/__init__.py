"""Device runners: where a Runtime executes (this host, an SSH host, emulated ARM64, a browser, an Android device
over adb, a phone in Qualcomm AI Hub's farm).

Each runner moves the bundle and a small self-contained runner script (remote_runner.py, no embg
import) to the target, starts it, and exposes it as a :class:`RemoteRuntime`, a Runtime whose
``embed`` sends token ids over a JSON-lines pipe. Tokenization and comparison stay on the host,
so the validator drives every device exactly as it drives a local runtime.
"""

from embg.devices.base import DEVICES, DeviceError, DeviceRunner, RemoteRuntime, open_device, parse_device

__all__ = ["DEVICES", "DeviceError", "DeviceRunner", "RemoteRuntime", "open_device", "parse_device"]


def load_devices() -> None:
    """Import every device module so the registry is complete."""
    from embg.devices import adb, aihub, local, qemu, ssh  # noqa: F401

    try:  # the browser runner is optional (its own module and extra)
        from embg.devices import browser  # noqa: F401
    except ImportError:
        pass
