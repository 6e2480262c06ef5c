"""Silence native libraries (converters, LiteRT's runtime) that print pages of logs on stdout/stderr,
keeping them for when something fails. With --verbose (EMBG_VERBOSE) they are shown, on stderr:
stdout carries only a command's result."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

VERBOSE_ENV = "EMBG_VERBOSE"


@contextlib.contextmanager
def captured_native_output(label: str) -> Iterator[None]:
    """Redirect fds 1 and 2 to a temp file; on error, print the tail so the cause is visible.

    Verbose: native output is shown, but what would go to stdout goes to stderr instead.
    """
    if os.environ.get(VERBOSE_ENV):
        with _stdout_to_stderr():
            yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            log.seek(0)
            tail = log.read().decode("utf-8", "replace").splitlines()[-30:]
            if tail:
                print(f"--- last lines of {label} output ---", *tail, sep="\n", file=sys.stderr)
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


quiet_native = captured_native_output  # the same guard around native runtime calls (LiteRT logs on load)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def silence_native_teardown() -> None:
    """LiteRT logs again when the interpreter exits (its environments are destroyed after our last line):
    once a command has printed its result, send what native code writes to fd 2 at exit to /dev/null.
    Only for the real process stderr and without --verbose (in-process callers keep their streams)."""
    if os.environ.get(VERBOSE_ENV) or sys.stderr is not sys.__stderr__:
        return

    def redirect() -> None:
        try:
            sys.stderr.flush()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except (OSError, ValueError):
            pass

    atexit.register(redirect)
