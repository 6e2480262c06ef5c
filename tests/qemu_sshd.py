"""Test support: an sshd inside the emulated ARM64 system (embg/devices/qemu_system.py), so the ssh
device runner is tested against a real, emulated board. Only tests use it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from embg.devices.qemu_system import DEFAULT_CPU, SSHD_DIR, QemuSystem


def start_sshd(system: QemuSystem, port: int, authorized_keys: str, cpu: str = DEFAULT_CPU,
               user_environment: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the emulated system's sshd on 127.0.0.1:port in the foreground (caller stops it).

    ``authorized_keys`` replaces root's keys. ``user_environment`` goes in as
    environment="..." options (PermitUserEnvironment), e.g. a PATH without python3 for tests.
    """
    system.check_ready()
    ssh_dir = system.rootfs / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # sshd builds a fresh environment per session: QEMU_CPU goes in through authorized_keys
    environment = {"QEMU_CPU": cpu, **(user_environment or {})}
    options = ",".join(f'environment="{k}={v}"' for k, v in environment.items())
    lines = [f"{options} {line}" if options else line for line in authorized_keys.strip().splitlines()]
    (ssh_dir / "authorized_keys").write_text("\n".join(lines) + "\n")
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    config = system.rootfs / SSHD_DIR.lstrip("/") / "sshd_config"
    config.write_text(sshd_config(port))
    argv = ["/usr/sbin/sshd", "-D", "-e", "-f", f"{SSHD_DIR}/sshd_config"]
    return subprocess.Popen(system.inside_argv(argv, cpu), env=system.env(cpu), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


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


def host_public_key(system: QemuSystem) -> str:
    return (system.rootfs / SSHD_DIR.lstrip("/") / "ssh_host_ed25519_key.pub").read_text().strip()


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
