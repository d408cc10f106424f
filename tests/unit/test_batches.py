"""
L{boxsync.batches.batched}: items a few at a time, in order.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boxsync.batches import batched


@given(st.lists(st.integers()), st.integers(min_value=1, max_value=20))
def test_batches_keep_every_item_in_order(items: list[int], size: int) -> None:
    batches = list(batched(items, size))
    assert [item for batch in batches for item in batch] == items
    assert all(len(batch) == size for batch in batches[:-1])
    assert all(1 <= len(batch) <= size for batch in batches)


def test_items_are_taken_as_batches_are_asked_for() -> None:
    counted = itertools.count()
    first = next(batched(counted, 3))
    assert first == [0, 1, 2] and next(counted) == 3


def test_a_batch_holds_at_least_one_item() -> None:
    with pytest.raises(ValueError):
        list(batched([1, 2], 0))
