"""Silence converters that print pages of native logs, keeping them for when something fails."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

VERBOSE_ENV = "EMBG_VERBOSE"


@contextlib.contextmanager
def captured_native_output(label: str) -> Iterator[None]:
    """Redirect fds 1 and 2 to a temp file; on error, print the tail so the cause is visible."""
    if os.environ.get(VERBOSE_ENV):
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
