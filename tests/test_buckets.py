"""Bucket choice per row: a row's bucket follows its own tokens, never its batch's width."""

from __future__ import annotations

import numpy as np

from embg.bundle import rows_by_bucket
from embg.bundle.buckets import row_widths


def test_row_width_ends_at_the_last_unmasked_column():
    mask = np.array([[1, 1, 1, 0, 0, 0],   # right padding is dropped
                     [0, 0, 1, 1, 0, 0],   # left padding is kept: only trailing columns go
                     [0, 0, 0, 0, 0, 0],   # an all-padding row still has one column
                     [1, 1, 1, 1, 1, 1]])
    assert row_widths(mask) == [3, 4, 1, 6]


def test_rows_group_by_their_own_bucket_in_first_seen_order():
    mask = np.zeros((4, 300), np.int64)
    for row, length in enumerate((300, 12, 40, 33)):
        mask[row, :length] = 1
    assert rows_by_bucket([32, 64, 512], mask) == {512: [0], 32: [1], 64: [2, 3]}
    assert rows_by_bucket([32, 64, 128], mask)[128] == [0]  # wider than every bucket: the largest
