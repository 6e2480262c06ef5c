"""Where embg keeps what it builds or downloads: fixtures, XNNPACK weight caches, device set-ups."""

from __future__ import annotations

import os
from pathlib import Path

OFF = ("off", "0", "no", "false")


def cache_root() -> Path:
    """$EMBG_CACHE, else ~/.cache/embg."""
    return Path(os.environ.get("EMBG_CACHE") or Path.home() / ".cache" / "embg")


def cache_dir(env_var: str, default: str) -> Path | None:
    """A cache directory a user can move (``env_var=DIR``) or turn off (``env_var=off``: None);
    by default ``cache_root() / default``."""
    setting = os.environ.get(env_var, "")
    if setting.lower() in OFF:
        return None
    return Path(setting) if setting else cache_root() / default
