"""The emulated ARM64 Debian on disk: where it lives, how a process is started inside it, its sshd.

Everything that runs inside goes through :func:`inside_argv`: a private mount namespace
(``unshare --mount``) that mounts /proc, /dev and /sys into the rootfs and lays a fake ARM
/proc/cpuinfo over the real one, then chroots. The kernel's binfmt_misc entry for aarch64
(qemu-user-static, flag F) runs every ARM binary under qemu, so child processes (pip, sshd's
shells) are emulated too. The namespace dies with the process: no mount outlives a run.

Why the fake cpuinfo: qemu 7.2 passes the x86 host's /proc/cpuinfo through, and onnxruntime's
cpuinfo library cannot initialise on an ARM build from it; LiteRT does not care.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

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
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)
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

    # ------------------------------------------------------------ sshd inside the emulated system

    def start_sshd(self, port: int, authorized_keys: str, cpu: str = DEFAULT_CPU,
                   user_environment: dict[str, str] | None = None) -> subprocess.Popen:
        """Start the emulated system's sshd on 127.0.0.1:port in the foreground (caller stops it).

        ``authorized_keys`` replaces root's keys. ``user_environment`` goes in as
        environment="..." options (PermitUserEnvironment), e.g. a PATH without python3 for tests.
        """
        self.check_ready()
        ssh_dir = self.rootfs / "root" / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # sshd builds a fresh environment per session: QEMU_CPU goes in through authorized_keys
        environment = {"QEMU_CPU": cpu, **(user_environment or {})}
        options = ",".join(f'environment="{k}={v}"' for k, v in environment.items())
        lines = [f"{options} {line}" if options else line for line in authorized_keys.strip().splitlines()]
        (ssh_dir / "authorized_keys").write_text("\n".join(lines) + "\n")
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        config = self.rootfs / SSHD_DIR.lstrip("/") / "sshd_config"
        config.write_text(sshd_config(port))
        argv = ["/usr/sbin/sshd", "-D", "-e", "-f", f"{SSHD_DIR}/sshd_config"]
        return subprocess.Popen(self.inside_argv(argv, cpu), env=self.env(cpu), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    @staticmethod
    def stop_sshd(process: subprocess.Popen) -> None:
        """Kill the sshd listener AND its connection children (they setsid(), so killpg misses them)."""
        for pid in reversed(descendants(process.pid)):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)

    def host_public_key(self) -> str:
        return (self.rootfs / SSHD_DIR.lstrip("/") / "ssh_host_ed25519_key.pub").read_text().strip()


def sshd_config(port: int) -> str:
    return "\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {SSHD_DIR}/ssh_host_ed25519_key",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "PermitUserEnvironment yes", f"PidFile {SSHD_DIR}/sshd.pid",
        "Subsystem sftp internal-sftp", "LogLevel INFO", ""])


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, parents first (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    order, queue = [], [root]
    while queue:
        pid = queue.pop(0)
        order.append(pid)
        queue += children.get(pid, [])
    return order


def binfmt_enabled() -> bool:
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    try:
        return entry.read_text().splitlines()[0].strip() == "enabled"
    except OSError:
        return False
