"""Run the memory probe in a separate process and read back its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from embg.errors import EmbgError

PROBE_MODULE = "embg.validate.memory_probe"


def measure_peak_rss(bundle: Path, runtime: str, threads: int | None, seq_len: int,
                     timeout: float = 900.0) -> dict[str, Any]:
    """Peak RSS (MB) of a fresh process that loads ``bundle`` in ``runtime`` and embeds one sequence."""
    command = [sys.executable, "-m", PROBE_MODULE, str(bundle), "--runtime", runtime, "--seq-len", str(seq_len)]
    if threads:
        command += ["--threads", str(threads)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EmbgError(f"the memory probe for {bundle} did not finish in {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise EmbgError(f"the memory probe for {bundle} failed (exit {done.returncode}):\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])
