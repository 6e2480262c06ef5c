"""The browser device: headless Chromium running onnxruntime-web or LiteRT.js (both WASM).

``embg/devices/browser/bridge.mjs`` (Node.js + playwright-core) serves a page, the bundle and the
runtime's WASM files from 127.0.0.1, launches Debian's /usr/bin/chromium on it and speaks the
remote_runner.py JSON-lines protocol, so the host side is an ordinary :class:`Session`.
Every request to anything but that 127.0.0.1 origin is aborted and counted; ``hello`` and the
extra ``stats`` op report the count.

Set-up (idempotent): ``python -m embg.devices.browser --setup`` installs chromium with apt-get when
missing and the pinned npm packages (package.json + package-lock.json here) into
``$EMBG_CACHE/browser`` (default ``~/.cache/embg/browser``). No browser is ever downloaded.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from embg.devices.base import DEVICES, DeviceError, DeviceRunner, RemoteRuntime, Session
from embg.errors import EmbgError
from embg.bundle import Artifact

CHROMIUM = "/usr/bin/chromium"
BROWSERS = ("chromium",)  # the spec after "browser:"; only Debian's Chromium is wired up
ENGINES = {"onnxruntime": "onnxruntime-web", "litert": "litert.js"}
PACKAGES = ("playwright-core", "onnxruntime-web", "@litertjs/core")
LOCK_FILES = ("package.json", "package-lock.json")
SETUP_HINT = "run `python -m embg.devices.browser --setup` (or `embg-device-setup browser`)"


def source_dir() -> Path:
    return Path(str(resources.files("embg.devices").joinpath("browser")))


def cache_dir() -> Path:
    from embg.cache_dir import cache_root

    return cache_root() / "browser"


def chromium_path() -> str:
    return os.environ.get("EMBG_CHROMIUM", CHROMIUM)


def missing_parts(directory: Path | None = None) -> list[str]:
    """What set-up still has to provide; empty when the runner can start."""
    directory = directory or cache_dir()
    missing = [] if shutil.which("node") else ["node (apt-get install nodejs)"]
    if not os.access(chromium_path(), os.X_OK):
        missing.append(f"{chromium_path()} (apt-get install chromium)")
    if not _packages_current(directory):
        missing.append(f"npm packages {', '.join(PACKAGES)} in {directory}")
    return missing


def _packages_current(directory: Path) -> bool:
    # the install is current when it was made from these package files and every package is there
    same = all((directory / name).is_file() and filecmp.cmp(directory / name, source_dir() / name, shallow=False)
               for name in LOCK_FILES)
    return (same and all((directory / "node_modules" / name / "package.json").is_file() for name in PACKAGES))


def package_version(name: str, directory: Path | None = None) -> str:
    path = (directory or cache_dir()) / "node_modules" / name / "package.json"
    return json.loads(path.read_text(encoding="utf-8"))["version"]


@DEVICES.register("browser")
class BrowserDevice(DeviceRunner):
    kind = "browser"

    def __init__(self, spec: str = "") -> None:
        super().__init__(spec)
        if spec and spec not in BROWSERS:
            raise EmbgError(f"unknown browser {spec!r} in --device browser:{spec}; choose one of {', '.join(BROWSERS)}")

    def open(self, artifact: Artifact, engine: str, threads: int | None = None) -> RemoteRuntime:
        artifact.verify()  # refuse a damaged bundle before it is copied anywhere
        if engine not in ENGINES:
            raise DeviceError(f"{self.label}: no browser runtime for engine {engine!r} "
                              f"(have {', '.join(ENGINES)}: onnxruntime-web for .onnx, LiteRT.js for .tflite)")
        missing = missing_parts()
        if missing:
            raise DeviceError(f"{self.label}: not set up, missing {'; '.join(missing)}: {SETUP_HINT}")
        modules = cache_dir() / "node_modules"
        argv = ["node", str(source_dir() / "bridge.mjs"), str(artifact.directory), engine, str(threads or 1),
                str(modules)]
        session = Session(argv, self.label)
        hello = session.hello
        device = {**self.describe(), "browser": hello.get("browser"), "engine": ENGINES[engine],
                  "version": hello.get("version"), "emulated": False, "real_device": True,
                  "machine": hello.get("machine"), "cross_origin_isolated": hello.get("cross_origin_isolated"),
                  "blocked_requests": hello.get("blocked")}
        return RemoteRuntime(artifact, session, engine, device)


def request_stats(runtime: RemoteRuntime) -> dict[str, Any]:
    """Requests the page made so far and those blocked for leaving 127.0.0.1."""
    return runtime.session.request({"op": "stats"})


def _run(argv: list[str], what: str, cwd: Path | None = None) -> None:
    print(f"[embg-device-setup] {what}: {' '.join(argv)}", file=sys.stderr, flush=True)
    result = subprocess.run(argv, cwd=cwd, stdout=sys.stderr, stderr=sys.stderr)
    if result.returncode:
        raise EmbgError(f"{what} failed (exit {result.returncode}): {' '.join(argv)}")


def setup(directory: Path | None = None) -> Path:
    """Install chromium (apt) and node (apt) when missing, then the pinned npm packages. Idempotent."""
    directory = Path(directory) if directory else cache_dir()
    present = {"chromium": os.access(chromium_path(), os.X_OK), "nodejs": shutil.which("node"),
               "npm": shutil.which("npm")}
    apt = [name for name, found in present.items() if not found]
    if apt:  # only touch apt when something is missing, so a rerun needs no network
        if os.geteuid() != 0:
            raise EmbgError(f"need root to apt-get install {' '.join(apt)}; install them, then rerun")
        _run(["apt-get", "update"], "refreshing apt lists")
        _run(["apt-get", "install", "-y", "--no-install-recommends", *apt], "installing Debian packages")
    if not _packages_current(directory):
        directory.mkdir(parents=True, exist_ok=True)
        for name in LOCK_FILES:
            shutil.copyfile(source_dir() / name, directory / name)
        # npm ci installs exactly the lock file; the env var keeps playwright from fetching a browser
        os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
        _run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], "installing npm packages", cwd=directory)
    missing = missing_parts(directory)
    if missing:
        raise EmbgError(f"browser set-up incomplete, still missing {'; '.join(missing)}")
    versions = ", ".join(f"{name} {package_version(name, directory)}" for name in PACKAGES)
    print(f"[embg-device-setup] browser ready in {directory}: {versions}; {chromium_path()}", file=sys.stderr)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embg.devices.browser",
                                     description="Set up the browser device runner (chromium + npm packages).")
    parser.add_argument("--setup", action="store_true", help="install what is missing (idempotent)")
    parser.add_argument("--dir", type=Path, help=f"npm cache directory (default {cache_dir()})")
    args = parser.parse_args(argv)
    try:
        if args.setup:
            setup(args.dir)
            return 0
        missing = missing_parts(args.dir)
        print("browser runner ready" if not missing else f"missing: {'; '.join(missing)}; {SETUP_HINT}")
        return 1 if missing else 0
    except EmbgError as exc:
        print(f"embg-device-setup: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
