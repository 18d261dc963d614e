"""Sorted unique values and unions by sorting give exactly what numpy's set routines give; so do bitmaps."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import sortedsets


@pytest.mark.parametrize("size", [0, 1, 2, 17, 5_000])
@pytest.mark.parametrize("spread", [3, 2**62])
def test_unique_equals_numpy(size: int, spread: int) -> None:
    values = np.random.default_rng(size + spread % 97).integers(-spread, spread, size)
    found = sortedsets.unique(values)
    assert found.dtype == values.dtype
    np.testing.assert_array_equal(found, np.unique(values))
    assert len(values) == 0 or found is not values  # the caller's array is left as it was


def test_unique_leaves_its_input_unsorted() -> None:
    values = np.array([5, 1, 5, 3], dtype=np.int64)
    sortedsets.unique(values)
    np.testing.assert_array_equal(values, [5, 1, 5, 3])


def test_union_of_several_arrays() -> None:
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 50, n) for n in (0, 10, 40, 7)]
    np.testing.assert_array_equal(sortedsets.union(*arrays), np.unique(np.concatenate(arrays)))
    np.testing.assert_array_equal(sortedsets.union(arrays[1], arrays[2]), np.union1d(arrays[1], arrays[2]))


@pytest.mark.parametrize("size", [1, 8, 9, 1_000, 65_537])
@pytest.mark.parametrize("share", [0.0, 0.01, 0.5, 1.0])
def test_bitmap_membership_equals_numpy(size: int, share: float) -> None:
    rng = np.random.default_rng(size)
    members = np.flatnonzero(rng.random(size) < share)
    values = rng.integers(0, size, 3 * size)
    bitmap = sortedsets.Bitmap(members, size)
    np.testing.assert_array_equal(bitmap.contains(values), np.isin(values, members))
    repeated = sortedsets.Bitmap(np.concatenate([members, members[::-1]]), size)  # members given twice, unsorted
    np.testing.assert_array_equal(repeated.contains(values), np.isin(values, members))
    assert bool(bitmap) == bool(len(members))
    edges = np.array([0, size - 1])  # the first and last bit of the last byte, full or not
    np.testing.assert_array_equal(sortedsets.Bitmap(edges, size).contains(np.arange(size)), np.isin(np.arange(size), edges))
