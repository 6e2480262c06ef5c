"""embg-device-setup qemu-arm64: build the emulated ARM64 Debian the qemu device runs in.

Idempotent: each step leaves a stamp file and is skipped when its stamp exists, so a rerun
after success only re-checks binfmt (which a reboot clears). Steps:
  host packages -> binfmt -> debootstrap bookworm arm64 (python3, venv, pip, openssh-server)
  -> sshd host key -> venv with numpy + onnxruntime + ai-edge-litert aarch64 wheels.
Wheels are resolved and downloaded on the host (fast) and installed inside from that
directory (pip under emulation is slow, and resolving there would be slower still).
Usage: embg-device-setup qemu-arm64 [--dir DIR]   or   python -m embg.devices.qemu_setup qemu-arm64
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from embg.devices.qemu_system import SSHD_DIR, SUITE, VENV, QemuSystem, binfmt_enabled, cache_dir
from embg.errors import EmbgError

HOST_PACKAGES = {"qemu-user-static": "/usr/bin/qemu-aarch64-static", "binfmt-support": "/usr/sbin/update-binfmts",
                 "debootstrap": "/usr/sbin/debootstrap"}
ROOTFS_PACKAGES = ["python3", "python3-venv", "python3-pip", "openssh-server", "ca-certificates"]
MIRROR = "http://deb.debian.org/debian"
# the same runtime versions as the host's validator, so host and ARM numbers compare like for like
WHEELS = ["numpy", "onnxruntime", "ai-edge-litert"]
# every manylinux tag bookworm's glibc 2.36 accepts (ai-edge-litert ships 2_27, onnxruntime 2_28)
PLATFORMS = [arg for tag in ["manylinux2014_aarch64", *(f"manylinux_2_{n}_aarch64" for n in range(17, 37))]
             for arg in ("--platform", tag)]


def say(message: str) -> None:
    print(f"[embg-device-setup] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout or "").strip().splitlines()[-15:])
        raise EmbgError(f"{' '.join(argv[:4])}... failed ({result.returncode}):\n{tail}")
    return result


def host_packages(system: QemuSystem) -> None:
    missing = [pkg for pkg, path in HOST_PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise EmbgError(f"install {' '.join(missing)} (needs root and apt-get)")
    say(f"apt-get install {' '.join(missing)}")
    run(["apt-get", "update", "-qq"])
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def binfmt(system: QemuSystem) -> None:
    """binfmt_misc is per boot, so this step has no stamp: it is checked on every run."""
    if binfmt_enabled():
        return
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"])
    run(["update-binfmts", "--enable", "qemu-aarch64"])
    if not binfmt_enabled():
        raise EmbgError("could not enable binfmt_misc for qemu-aarch64 (a container without it?)")


def rootfs(system: QemuSystem) -> None:
    if system.stamp("rootfs").exists():
        return
    if system.rootfs.exists():  # a half-finished debootstrap: start over rather than trust it
        say(f"removing the unfinished {system.rootfs}")
        shutil.rmtree(system.rootfs)
    say(f"debootstrap {SUITE} arm64 into {system.rootfs} (a few minutes)")
    system.rootfs.parent.mkdir(parents=True, exist_ok=True)
    run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(ROOTFS_PACKAGES)}",
         SUITE, str(system.rootfs), MIRROR])
    system.stamp("rootfs").touch()


def sshd_key(system: QemuSystem) -> None:
    key = system.rootfs / SSHD_DIR.lstrip("/") / "ssh_host_ed25519_key"
    if key.exists():
        return
    key.parent.mkdir(parents=True, exist_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "embg-qemu-arm64", "-f", str(key)])
    (system.rootfs / "run" / "sshd").mkdir(parents=True, exist_ok=True)


def host_versions() -> list[str]:
    from importlib import metadata

    pins = []
    for name in WHEELS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def venv(system: QemuSystem) -> None:
    if system.stamp("venv").exists():
        return
    wheels = system.rootfs / "opt" / "embg" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = host_versions()
    say(f"downloading aarch64 wheels: {' '.join(pins)}")
    # --isolated: the host's pip config may point at x86-only local indexes
    run([sys.executable, "-m", "pip", "download", "--isolated", "-q", "--only-binary=:all:",
         *PLATFORMS, "--python-version", "3.11", "--implementation", "cp",
         "-d", str(wheels), *pins])
    say(f"creating {VENV} inside and installing the wheels (pip under emulation: a few minutes)")
    for argv in (["/usr/bin/python3", "-m", "venv", VENV],
                 [f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links", "/opt/embg/wheels", *pins]):
        result = system.run(argv, timeout=3600)
        if result.returncode != 0:
            raise EmbgError(f"inside the emulated system, {' '.join(argv[:3])} failed:\n"
                            + "\n".join(result.stderr.strip().splitlines()[-15:]))
    check = system.run([system.python(), "-c", "import numpy, onnxruntime, ai_edge_litert.interpreter; "
                                               "print(onnxruntime.__version__)"], timeout=900)
    if check.returncode != 0:
        raise EmbgError("the emulated venv cannot import its runtimes:\n" + check.stderr.strip()[-2000:])
    system.stamp("venv").touch()


STEPS: list[tuple[str, Callable[[QemuSystem], None]]] = [
    ("host packages", host_packages), ("binfmt", binfmt), ("rootfs", rootfs), ("sshd key", sshd_key),
    ("venv", venv)]


def setup(directory: Path | None = None) -> QemuSystem:
    system = QemuSystem.default(directory)
    (system.directory / "stamps").mkdir(parents=True, exist_ok=True)
    for name, step in STEPS:
        started = time.perf_counter()
        step(system)
        say(f"{name}: ok ({time.perf_counter() - started:.1f} s)")
    return system


TARGETS: dict[str, Callable[[Path | None], object]] = {"qemu-arm64": setup}
try:  # the browser runner brings its own setup (npm packages, chromium); same signature
    from embg.devices.browser import setup as _browser_setup

    TARGETS["browser"] = _browser_setup
except ImportError:
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="embg-device-setup",
                                     description="Prepare a device target for embg-validate --device.")
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--dir", type=Path, help=f"where the emulated system lives (default {cache_dir()}; "
                                                 "$EMBG_CACHE/qemu-arm64 when EMBG_CACHE is set)")
    args = parser.parse_args(argv)
    try:
        TARGETS[args.target](args.dir)
    except EmbgError as exc:
        print(f"embg-device-setup: error: {exc}", file=sys.stderr)
        return 2
    except subprocess.TimeoutExpired as exc:
        print(f"embg-device-setup: error: timed out: {exc}", file=sys.stderr)
        return 1
    say("ready")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
