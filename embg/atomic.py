"""Atomic artifact writes: build in a temporary sibling, then rename into place.

A failed or interrupted run therefore never leaves a half-written bundle behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from embg.errors import EmbgError


def check_writable_destination(dest: Path) -> None:
    """Fail early, before any expensive work, if ``dest`` cannot become a directory we own."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise EmbgError(f"output path {dest} exists and is a file; pass a directory with --out")
    parent = dest.parent if not dest.exists() else dest
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EmbgError(f"output directory {parent} is not writable; choose another --out")


@contextlib.contextmanager
def atomic_directory(dest: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``dest``; on success it replaces ``dest``.

    On any exception the temporary directory is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    check_writable_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            backup = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, backup)
            os.replace(tmp, dest)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
