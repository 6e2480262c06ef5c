"""Where embg keeps what it builds or downloads: fixtures, XNNPACK weight caches, device set-ups."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$EMBG_CACHE, else ~/.cache/embg."""
    return Path(os.environ.get("EMBG_CACHE") or Path.home() / ".cache" / "embg")
