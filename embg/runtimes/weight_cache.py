"""XNNPACK weight-cache files for the LiteRT runtime: one per model file, checked before use, pruned.

XNNPACK packs a model's weights once per signature; a weight-cache file holds one packed copy for
all of them (see embg/runtimes/litert_rt.py). XNNPACK trusts that file: a cache with flipped bytes
or another model's cache under the same name gives wrong embeddings (cosine 0.85-0.96, or NaN)
without an error. So:

* an entry is keyed by the model file's sha256 (the bundle's verified hash) and the LiteRT
  version: the same model file exported twice shares one entry, a changed file gets a new one;
* when an entry is built, a sidecar ``<entry>.json`` records its size and sha256 and the model
  hash; before use all are checked, and on any doubt (no sidecar, other model, other size or
  checksum, unreadable) the entry is deleted and rebuilt, never used;
* after each build, entries without a sidecar (older embg, unfinished builds), entries unused for ``EMBG_XNNPACK_CACHE_MAX_DAYS`` days (default 30) are
  removed, then the least recently used until the directory holds at most
  ``EMBG_XNNPACK_CACHE_MAX_MB`` (default 2048 MB), and half-built files of dead processes;
* ``embg-validate --clear-cache`` removes every entry.

The directory is ``$EMBG_CACHE/xnnpack`` (default ~/.cache/embg/xnnpack); ``EMBG_XNNPACK_CACHE=DIR``
moves it, ``EMBG_XNNPACK_CACHE=off`` disables the cache.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from embg.atomic import pid_alive
from embg.bundle import file_sha256

log = logging.getLogger(__name__)

CACHE_ENV = "EMBG_XNNPACK_CACHE"
MAX_MB_ENV = "EMBG_XNNPACK_CACHE_MAX_MB"
MAX_DAYS_ENV = "EMBG_XNNPACK_CACHE_MAX_DAYS"
DEFAULT_MAX_MB = 2048
DEFAULT_MAX_DAYS = 30
SUFFIX = ".xnnpack_cache"
SIDECAR = ".json"
PARTIAL = re.compile(r"\.partial-(\d+)$")
OFF = ("off", "0", "no", "false")
UNSEALED_GRACE_S = 3600  # an entry renamed into place but not yet sealed by a concurrent process


def cache_dir() -> Path | None:
    """Where entries live, or None when the cache is switched off."""
    setting = os.environ.get(CACHE_ENV, "")
    if setting.lower() in OFF:
        return None
    from embg.cache_dir import cache_root

    return Path(setting) if setting else cache_root() / "xnnpack"


def runtime_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        return "unknown"


def entry_path(root: Path, model_sha256: str) -> Path:
    """The entry for a model file: its hash and the LiteRT version that packs it."""
    return root / f"{model_sha256[:32]}-litert{runtime_version()}{SUFFIX}"


def sidecar(entry: Path) -> Path:
    return entry.with_name(entry.name + SIDECAR)


def usable(entry: Path, model_sha256: str) -> bool:
    """True only when the entry is exactly the file sealed for this model; any doubt is False."""
    try:
        meta = json.loads(sidecar(entry).read_text(encoding="utf-8"))
        return (isinstance(meta, dict) and meta.get("model_sha256") == model_sha256
                and meta.get("runtime_version") == runtime_version()
                and meta.get("size") == entry.stat().st_size and meta.get("sha256") == file_sha256(entry))
    except (OSError, ValueError):
        return False


def seal(entry: Path, model_sha256: str) -> None:
    """Record what a finished entry holds (written atomically after the entry itself)."""
    from embg.atomic import atomic_write_bytes

    try:
        meta = {"model_sha256": model_sha256, "runtime_version": runtime_version(), "size": entry.stat().st_size,
                "sha256": file_sha256(entry), "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write_bytes(sidecar(entry), (json.dumps(meta, indent=1) + "\n").encode())
    except OSError as exc:  # e.g. removed meanwhile by --clear-cache: it is simply rebuilt next time
        log.info("could not record XNNPACK weight cache %s: %s", entry.name, exc)


def discard(entry: Path) -> None:
    for path in (entry, sidecar(entry)):
        path.unlink(missing_ok=True)


def mark_used(entry: Path) -> None:
    """The sidecar's mtime is the entry's last use (pruning removes the least recently used first)."""
    try:
        os.utime(sidecar(entry))
    except OSError:
        pass


def _limits() -> tuple[float, float]:
    def number(name: str, default: float) -> float:
        try:
            return float(os.environ.get(name) or default)
        except ValueError:
            log.warning("%s=%r is not a number; using %s", name, os.environ.get(name), default)
            return default

    return number(MAX_MB_ENV, DEFAULT_MAX_MB) * 2**20, number(MAX_DAYS_ENV, DEFAULT_MAX_DAYS) * 86400


def prune(root: Path, keep: Path | None = None) -> list[Path]:
    """Remove half-built files of dead processes, entries unused for too long, then the least
    recently used until the directory fits its size cap. ``keep`` (the entry in use) always stays."""
    if not root.is_dir():
        return []
    max_bytes, max_age = _limits()
    removed: list[Path] = []
    for path in root.iterdir():
        match = PARTIAL.search(path.name)
        if match and not pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    entries = []
    for entry in root.glob(f"*{SUFFIX}"):
        try:
            used = sidecar(entry).stat().st_mtime if sidecar(entry).exists() else entry.stat().st_mtime
            entries.append((used, entry.stat().st_size, entry))
        except OSError:
            continue
    now = time.time()
    total = sum(size for _, size, _ in entries)
    for used, size, entry in sorted(entries):  # least recently used first
        if entry == keep:
            continue
        # no sidecar: from an older embg, or a build that never finished sealing; never usable
        unsealed = not sidecar(entry).exists() and now - used > UNSEALED_GRACE_S
        if unsealed or now - used > max_age or total > max_bytes:
            discard(entry)
            removed.append(entry)
            total -= size
    for meta in root.glob(f"*{SUFFIX}{SIDECAR}"):  # a sidecar whose entry is gone
        if not meta.with_name(meta.name[:-len(SIDECAR)]).exists():
            meta.unlink(missing_ok=True)
    return removed


def clear() -> dict[str, Any]:
    """Remove every entry (and half-built file) from the cache directory; returns what was removed."""
    root = cache_dir()
    if root is None or not root.is_dir():
        return {"directory": str(root) if root else None, "removed": 0, "bytes": 0}
    count = size = 0
    for path in list(root.iterdir()):
        partial = PARTIAL.search(path.name)
        if partial and pid_alive(int(partial.group(1))):
            continue  # another process is building it right now
        if path.is_file() and (path.name.endswith((SUFFIX, SUFFIX + SIDECAR)) or partial):
            size += path.stat().st_size
            path.unlink(missing_ok=True)
            count += path.name.endswith(SUFFIX)
    return {"directory": str(root), "removed": count, "bytes": size}
