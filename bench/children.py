"""Run a bench worker in a child process; measure its wall time and peak RSS from outside.

Peak RSS is taken two ways and the larger kept: the child's own VmHWM (reported in its JSON;
exact, but misses grandchildren) and the parent polling the child's process tree with psutil
(catches helpers the converters spawn, but can miss a spike shorter than the poll interval).
RUSAGE_CHILDREN is no use here: it is the maximum over every child this process ever reaped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
POLL_S = 0.2


class WorkerError(RuntimeError):
    pass


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def run_worker(args: list[str], log_path: Path | None = None, timeout: float = 3600.0) -> dict[str, Any]:
    """``python -m bench.worker ARGS``: its JSON plus ``wall_s`` and ``polled_peak_rss_mb``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    start = time.perf_counter()
    try:
        child = subprocess.Popen([sys.executable, "-m", "bench.worker", *args], stdout=subprocess.PIPE,
                                 stderr=log, text=True, cwd=REPO, env=env)
        watched = psutil.Process(child.pid)
        peak = 0
        while child.poll() is None:
            try:
                peak = max(peak, _tree_rss(watched))
            except psutil.NoSuchProcess:
                break
            if time.perf_counter() - start > timeout:
                child.kill()
                raise WorkerError(f"worker {args[0]} timed out after {timeout:.0f} s")
            time.sleep(POLL_S)
        stdout = child.stdout.read() if child.stdout else ""
        child.wait()
    finally:
        if log_path:
            log.close()
    wall = time.perf_counter() - start
    if child.returncode != 0:
        tail = Path(log_path).read_text(errors="replace").strip().splitlines()[-8:] if log_path else []
        raise WorkerError(f"worker {' '.join(args[:2])} failed (exit {child.returncode}): " + " | ".join(tail))
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise WorkerError(f"worker {args[0]} printed no result")
    result = json.loads(lines[-1])
    result["wall_s"] = round(wall, 2)
    result["polled_peak_rss_mb"] = round(peak / 2**20, 1)
    return result
