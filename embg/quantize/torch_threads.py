"""Calibration and its simulations run torch on one thread.

Their work is many small ops and medium matmuls. On a shared 2-core machine OpenMP's barriers made
two threads 7x slower than one (tiny fixture, 4 calibration batches: 23.7 s vs 3.2 s; one small
op 9 ms vs 0.07 ms); on an idle machine two threads would save less than half.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
