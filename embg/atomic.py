"""Atomic artifact writes: build in a temporary sibling, then rename into place.

A failed or interrupted run therefore never leaves a half-written bundle behind, and a user's
files are never deleted: an existing output directory is replaced only when it is an earlier
output of the same kind (recognised by its own record, e.g. a bundle's manifest.json) and holds
nothing but the files that output wrote (a note or a report the user put beside them is refused).
A run killed with SIGKILL cannot clean up; its ``.NAME.partial-<pid>-*`` directory is removed by
the next run writing to the same place once that pid is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path, PurePosixPath

from embg.errors import EmbgError

#: Recognises an earlier output of ours in a directory: the relative paths of the files it wrote, or None
#: when the directory is not one.
Recognise = Callable[[Path], Collection[str] | None]
FOREIGN_SHOWN = 5  # how many of the user's files an error names


def check_writable_destination(dest: Path, is_ours: Recognise | None = None, what: str = "bundle") -> None:
    """Fail early, before any expensive work, if ``dest`` cannot become a directory we own.

    ``is_ours`` recognises an earlier output, which may be replaced when it holds only the files it
    wrote; any other non-empty directory, or an earlier output with anything else in it, is refused.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise EmbgError(f"output path {dest} exists and is a file; pass a directory with --out")
    if dest.is_dir() and any(dest.iterdir()):
        owned = is_ours(dest) if is_ours else None
        if owned is None:
            raise EmbgError(f"--out {dest} is a non-empty directory that is not an embg {what}; refusing to replace "
                            "it (its files would be deleted): choose a new or empty directory")
        foreign = foreign_entries(dest, owned)
        if foreign:
            shown = ", ".join(foreign[:FOREIGN_SHOWN]) + (f" and {len(foreign) - FOREIGN_SHOWN} more"
                                                          if len(foreign) > FOREIGN_SHOWN else "")
            raise EmbgError(f"--out {dest} holds an earlier embg {what} and also {shown}, which that {what} did not "
                            f"write; refusing to replace it (they would be deleted): move them out of {dest} or "
                            "choose another --out")
    _check_can_create(dest.parent if not dest.exists() else dest, "--out")


def foreign_entries(directory: Path, owned: Collection[str]) -> list[str]:
    """What in ``directory`` an earlier output did not write (relative paths; a directory ends with "/")."""
    owned = {PurePosixPath(name).as_posix() for name in owned}
    parents = {parent.as_posix() for name in owned for parent in PurePosixPath(name).parents} - {"."}
    found: list[str] = []

    def walk(folder: Path, prefix: str) -> None:
        for entry in sorted(folder.iterdir()):
            name = prefix + entry.name
            if entry.is_dir() and not entry.is_symlink():
                if name in parents:
                    walk(entry, name + "/")
                else:
                    found.append(name + "/")
            elif name not in owned:
                found.append(name)

    walk(Path(directory), "")
    return found


def check_writable_directory(path: Path, option: str) -> None:
    """``path`` is (or can become) a directory we can write files into; for options like --report."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EmbgError(f"{option} {path} exists and is a file; pass a directory")
    _check_can_create(path, option)


def _check_can_create(directory: Path, option: str) -> None:
    while not directory.exists():
        directory = directory.parent
    if not os.access(directory, os.W_OK | os.X_OK) or not _can_create_in(directory):
        raise EmbgError(f"output directory {directory} is not writable; choose another {option}")


def _can_create_in(directory: Path) -> bool:
    """Really create (and remove) a directory there: access() says yes to root on /proc or read-only mounts."""
    try:
        probe = tempfile.mkdtemp(prefix=".embg-probe-", dir=directory)
    except OSError:
        return False
    os.rmdir(probe)
    return True


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a name carrying a dead pid marks an abandoned file)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_partials(dest: Path) -> list[Path]:
    """Temporary siblings of ``dest`` left by runs that were killed (their pid no longer exists)."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(dest.name)}\.(?:partial|old)-(\d+)(?:-.*)?$")
    removed = []
    for path in dest.parent.iterdir():
        match = pattern.match(path.name)
        if match and path.is_dir() and not path.is_symlink() and not pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_directory(dest: Path, is_ours: Recognise | None = None, what: str = "bundle",
                     say: Callable[[str], None] = lambda message: None) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``dest``; on success it replaces ``dest``.

    ``dest`` may exist only as an empty directory or an earlier output recognised by ``is_ours``
    (``say`` announces the replacement). On any exception the temporary directory is removed and
    ``dest`` is left untouched. The result has the directory permissions the umask gives.
    """
    dest = Path(dest)
    check_writable_destination(dest, is_ours, what)
    for stale in remove_stale_partials(dest):
        say(f"removed {stale.name}, left by an interrupted run")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-{os.getpid()}-", dir=dest.parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; a bundle is an ordinary directory
    except OSError as exc:
        raise EmbgError(f"cannot create the output next to {dest}: {exc.strerror or exc}") from exc
    try:
        yield tmp
        if dest.exists():
            check_writable_destination(dest, is_ours, what)  # still ours: nothing changed it meanwhile
            if any(dest.iterdir()):
                say(f"replacing the earlier {what} in {dest}")
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
    """Write ``data`` to ``path`` through a temporary file and a rename (the one atomic file writer).

    The file gets the permissions an ordinary write gives (0666 minus the umask), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
