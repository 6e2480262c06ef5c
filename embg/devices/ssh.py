"""The ssh device: any SSH host with Python 3 (a Raspberry Pi, an ARM server, the emulated ARM64).

``--device ssh:USER@HOST[:PORT]``. Key auth only (BatchMode=yes: never a password prompt),
host keys verified (StrictHostKeyChecking=yes) unless the user explicitly asks for accept-new.
On the target, under ~/.cache/embg (relative to the login directory, so no "~" needs expanding):
  bundles/<manifest sha256>/  the bundle, copied once (streamed as tar over the ssh pipe)
  runner-<sha12>.py           remote_runner.py, keyed by its own hash
  venv/                       numpy + the runtime wheel, pip-installed only when an import fails
Every remote command is one string built from shlex.quote'd parts: paths, user names and
options never reach the remote shell unquoted.

Options (devices.toml keys, or environment variables for one-off --device runs):
  identity          EMBG_SSH_IDENTITY          private key file (-i, IdentitiesOnly=yes)
  known_hosts       EMBG_SSH_KNOWN_HOSTS       UserKnownHostsFile to verify against
  insecure_host_key EMBG_SSH_INSECURE_HOST_KEY=1   StrictHostKeyChecking=accept-new (trust on first use)
  venv              EMBG_SSH_VENV              a venv to use instead of ~/.cache/embg/venv
  python            EMBG_SSH_PYTHON            the target's interpreter (default python3)
  pip_args          -                          extra pip install arguments, e.g. a wheelhouse for
                                               offline targets: ["--no-index", "--find-links", "/srv/wheels"]
  emulated          -                          say in the report that the host is emulated
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from embg.devices.base import DEVICES, DeviceError, DeviceRunner, RemoteRuntime, Session, runner_script
from embg.errors import EmbgError
from embg.bundle import Artifact

CACHE = ".cache/embg"
# engine -> (import that proves it is there, pip requirement)
ENGINE_WHEELS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("onnxruntime", "onnxruntime"),
    "litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
}
SSH_FAILED = 255  # ssh's own exit status: could not connect, host key, auth
NO_PYTHON = 127
TARGET = re.compile(r"^(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])"
                    r"(?::(?P<port>\d{1,5}))?$")
ENV_OPTIONS = {"identity": "EMBG_SSH_IDENTITY", "known_hosts": "EMBG_SSH_KNOWN_HOSTS",
               "insecure_host_key": "EMBG_SSH_INSECURE_HOST_KEY", "venv": "EMBG_SSH_VENV",
               "python": "EMBG_SSH_PYTHON"}


def q(*parts: str) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


@DEVICES.register("ssh")
class SSHDevice(DeviceRunner):
    kind = "ssh"
    env_options = ENV_OPTIONS

    def __init__(self, spec: str = "") -> None:
        super().__init__(spec)
        match = TARGET.match(spec or "")
        if not match:
            raise EmbgError(f"--device ssh:{spec}: expected ssh:USER@HOST[:PORT], e.g. ssh:pi@raspberrypi.local")
        self.user, self.host = match["user"], match["host"].strip("[]")
        self.port = int(match["port"] or 22)
        if not 0 < self.port < 65536:
            raise EmbgError(f"--device ssh:{spec}: port {self.port} out of range")
        self.machine: str | None = None

    # ------------------------------------------------------------ ssh plumbing

    def ssh_argv(self, remote_command: str) -> list[str]:
        strict = "accept-new" if _truthy(self.options.get("insecure_host_key", "")) else "yes"
        argv = ["ssh", "-T", "-p", str(self.port), "-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={strict}",
                "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", "LogLevel=ERROR"]
        if self.options.get("identity"):
            argv += ["-i", str(self.options["identity"]), "-o", "IdentitiesOnly=yes"]
        if self.options.get("known_hosts"):
            argv += ["-o", f"UserKnownHostsFile={self.options['known_hosts']}"]
        return argv + ["--", f"{self.user}@{self.host}", remote_command]

    def remote(self, command: str, stdin: bytes | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run(self.ssh_argv(command), input=stdin, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(f"{self.label}: no answer within {timeout:.0f} s") from exc
        except OSError as exc:
            raise DeviceError(f"{self.label}: cannot run ssh: {exc}") from exc
        if result.returncode == SSH_FAILED:
            raise DeviceError(f"{self.label}: ssh failed: {_tail(result.stderr)}" + _hint(result.stderr))
        return result

    @property
    def python(self) -> str:
        return str(self.options.get("python") or "python3")

    @property
    def venv(self) -> str:
        return str(self.options.get("venv") or f"{CACHE}/venv")

    # ------------------------------------------------------------ steps

    def probe(self) -> dict[str, str]:
        """Connect once: proves auth + host key and finds the interpreter before anything is copied."""
        script = ("import platform, sys; print(platform.machine()); "
                  "print('%d.%d' % sys.version_info[:2])")
        command = (f"command -v {shlex.quote(self.python)} >/dev/null 2>&1 || exit {NO_PYTHON}; "
                   f"{q(self.python, '-c', script)}")
        result = self.remote(command, timeout=120)
        if result.returncode == NO_PYTHON:
            raise DeviceError(f"{self.label}: no {self.python} on the target's PATH; install Python 3 there "
                              "(e.g. apt-get install python3 python3-venv)")
        if result.returncode != 0:
            raise DeviceError(f"{self.label}: {self.python} does not run: {_tail(result.stderr)}")
        lines = result.stdout.decode().split()
        if len(lines) < 2 or not lines[1].startswith("3."):
            raise DeviceError(f"{self.label}: {self.python} is not Python 3: {result.stdout.decode()[:200]!r}")
        self.machine = lines[0]
        return {"machine": lines[0], "python": lines[1]}

    def copy(self, artifact: Artifact) -> tuple[str, str]:
        """The bundle and runner on the target; skipped when the same hashes are already there."""
        runner = runner_script().read_bytes()
        runner_path = f"{CACHE}/runner-{hashlib.sha256(runner).hexdigest()[:12]}.py"
        bundle_path = f"{CACHE}/bundles/{artifact.manifest_sha256}"
        check = self.remote(f"test -f {q(bundle_path + '/.complete')} && test -f {q(runner_path)}", timeout=120)
        if check.returncode == 0:
            return bundle_path, runner_path
        stream = io.BytesIO()
        with tarfile.open(fileobj=stream, mode="w") as tar:
            for path in sorted(Path(artifact.directory).iterdir()):
                if path.is_file():
                    tar.add(path, arcname=f"bundle/{path.name}")
            info = tarfile.TarInfo("runner.py")
            info.size, info.mode = len(runner), 0o755
            tar.addfile(info, io.BytesIO(runner))
        staging = f"{CACHE}/.incoming-{artifact.manifest_sha256[:16]}-{os.getpid()}"
        # unpack in a staging dir, then move: an interrupted copy never looks complete
        command = (f"set -e; rm -rf {q(staging)}; mkdir -p {q(staging, f'{CACHE}/bundles')}; "
                   f"tar xf - -C {q(staging)}; touch {q(staging + '/bundle/.complete')}; "
                   f"rm -rf {q(bundle_path)}; mv {q(staging + '/bundle', bundle_path)}; "
                   f"mv {q(staging + '/runner.py', runner_path)}; rm -rf {q(staging)}")
        result = self.remote(command, stdin=stream.getvalue(), timeout=3600)
        if result.returncode != 0:
            raise DeviceError(f"{self.label}: copying the bundle failed: {_tail(result.stderr)}")
        return bundle_path, runner_path

    def ensure_runtime(self, engine: str) -> str:
        """The venv's python, with numpy + the engine importable; pip installs only what is missing."""
        if engine not in ENGINE_WHEELS:
            raise DeviceError(f"{self.label}: no wheel known for engine {engine!r}")
        module, requirement = ENGINE_WHEELS[engine]
        python = f"{self.venv}/bin/python"
        probe = q(python, "-c", f"import numpy, {module}")
        if self.remote(f"test -x {q(python)} && {probe}", timeout=600).returncode == 0:
            return python
        extra = self.options.get("pip_args") or []
        extra = shlex.split(extra) if isinstance(extra, str) else [str(a) for a in extra]
        pip = q(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *extra, "numpy", requirement)
        command = f"set -e; test -x {q(python)} || {q(self.python, '-m', 'venv', self.venv)}; {pip}; {probe}"
        result = self.remote(command, timeout=3600)
        if result.returncode != 0:
            raise DeviceError(f"{self.label}: could not install numpy + {requirement} into {self.venv}: "
                              f"{_tail(result.stderr)}")
        return python

    def open(self, artifact: Artifact, engine: str, threads: int | None = None) -> RemoteRuntime:
        artifact.verify()  # refuse a damaged bundle before it is copied anywhere
        facts = self.probe()
        python = self.ensure_runtime(engine)
        bundle, runner = self.copy(artifact)
        argv = self.ssh_argv("exec " + q(python, runner, bundle, engine, str(threads or "")))
        try:
            session = Session(argv, self.label)
        except DeviceError as exc:
            raise DeviceError(f"{exc} (the target's {engine} could not load or run {artifact.directory.name})") from exc
        device = {**self.describe(), "machine": session.hello.get("machine") or facts["machine"],
                  "python": facts["python"], "host": self.host, "port": self.port,
                  "emulated": _truthy(self.options.get("emulated", False)), "real_device": True}
        return RemoteRuntime(artifact, session, engine, device)


def _tail(stderr: bytes | str, lines: int = 4) -> str:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    return " | ".join(text.strip().splitlines()[-lines:]) or "no output"


def _hint(stderr: bytes) -> str:
    text = stderr.decode(errors="replace")
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return (" (the host key is unknown or changed: check it and add it to known_hosts; "
                "--insecure-host-key accepts a NEW key on first use, never a changed one)")
    if "Permission denied" in text:
        return " (key auth only: install your public key in the target's authorized_keys)"
    return ""
