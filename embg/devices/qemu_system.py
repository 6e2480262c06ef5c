"""The emulated ARM64 Debian on disk: where it lives and how a process is started inside it.

Everything that runs inside goes through :func:`inside_argv`: a private mount namespace
(``unshare --mount``) that mounts /proc, /dev and /sys into the rootfs and lays a fake ARM
/proc/cpuinfo over the real one, then chroots. The kernel's binfmt_misc entry for aarch64
(qemu-user-static, flag F) runs every ARM binary under qemu, so child processes (pip, sshd's
shells) are emulated too. The namespace dies with the process: no mount outlives a run.
The sshd the tests start inside it lives with the tests (tests/qemu_sshd.py).

Why the fake cpuinfo: qemu 7.2 passes the x86 host's /proc/cpuinfo through, and onnxruntime's
cpuinfo library cannot initialise on an ARM build from it; LiteRT does not care.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from embg.atomic import atomic_write_bytes
from embg.devices.base import DeviceError

VENV = "/opt/embg/venv"  # inside the rootfs
SSHD_DIR = "/etc/embg-sshd"  # inside the rootfs: config + host key of the test sshd
SUITE = "bookworm"

# CPU models qemu knows, with the MIDR fields ARM Linux prints for them (for the fake cpuinfo).
CPUS: dict[str, dict[str, str]] = {
    "cortex-a53": {"variant": "0x0", "part": "0xd03", "revision": "4",
                   "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"},
    "cortex-a72": {"variant": "0x0", "part": "0xd08", "revision": "3",
                   "features": "fp asimd evtstrm crc32 cpuid"},
    "cortex-a76": {"variant": "0x4", "part": "0xd0b", "revision": "1",
                   "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                               "asimdrdm lrcpc dcpop asimddp"},
    "max": {"variant": "0x0", "part": "0xd0b", "revision": "1",
            "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                        "asimdrdm lrcpc dcpop asimddp"},
}
DEFAULT_CPU = "cortex-a76"


def cache_dir() -> Path:
    from embg.cache_dir import cache_root

    return cache_root() / "qemu-arm64"


def fake_cpuinfo(cpu: str, count: int | None = None) -> str:
    fields = CPUS[cpu]
    blocks = []
    for n in range(count or os.cpu_count() or 1):
        blocks.append(f"processor\t: {n}\nBogoMIPS\t: 50.00\nFeatures\t: {fields['features']}\n"
                      f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {fields['variant']}\n"
                      f"CPU part\t: {fields['part']}\nCPU revision\t: {fields['revision']}\n")
    return "\n".join(blocks) + "\n"


@dataclass
class QemuSystem:
    directory: Path

    @classmethod
    def default(cls, directory: Path | None = None) -> "QemuSystem":
        return cls(Path(directory) if directory else cache_dir())

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs"

    def stamp(self, name: str) -> Path:
        return self.directory / "stamps" / name

    @property
    def ready(self) -> bool:
        return self.stamp("venv").exists()

    def python(self) -> str:
        return f"{VENV}/bin/python"

    def check_ready(self) -> None:
        if not self.ready:
            raise DeviceError(f"no emulated ARM64 system in {self.directory}; run: embg-device-setup qemu-arm64"
                              + (f" --dir {shlex.quote(str(self.directory))}" if self.directory != cache_dir() else ""))
        if not binfmt_enabled():
            raise DeviceError("binfmt_misc has no enabled qemu-aarch64 entry (after a reboot?); rerun "
                              "embg-device-setup qemu-arm64, which re-registers it")

    def cpuinfo_file(self, cpu: str) -> Path:
        if cpu not in CPUS:
            raise DeviceError(f"unknown qemu CPU model {cpu!r}; choose one of {', '.join(sorted(CPUS))}")
        path = self.directory / f"cpuinfo-{cpu}.txt"
        text = fake_cpuinfo(cpu)
        if not path.exists() or path.read_text() != text:
            atomic_write_bytes(path, text.encode())
        return path

    def inside_argv(self, argv: list[str], cpu: str = DEFAULT_CPU) -> list[str]:
        """Host argv that runs ``argv`` (paths inside the rootfs) in the emulated system."""
        root = shlex.quote(str(self.rootfs))
        cpuinfo = shlex.quote(str(self.cpuinfo_file(cpu)))
        script = (f"mount -t proc proc {root}/proc && mount --bind {cpuinfo} {root}/proc/cpuinfo && "
                  f"mount --rbind /dev {root}/dev && mount --rbind /sys {root}/sys && "
                  f"exec chroot {root} " + " ".join(shlex.quote(a) for a in argv))
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]

    def env(self, cpu: str = DEFAULT_CPU) -> dict[str, str]:
        # qemu-user reads QEMU_CPU at every exec through binfmt, so children get the same CPU model
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                "LANG": "C.UTF-8", "QEMU_CPU": cpu}

    def run(self, argv: list[str], cpu: str = DEFAULT_CPU, timeout: float = 1800) -> subprocess.CompletedProcess:
        return subprocess.run(self.inside_argv(argv, cpu), env=self.env(cpu), capture_output=True, text=True,
                              timeout=timeout)


def binfmt_enabled() -> bool:
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    try:
        return entry.read_text().splitlines()[0].strip() == "enabled"
    except OSError:
        return False
