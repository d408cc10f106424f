"""
Where the blocks of a file on its way go: the spans a guess copies around.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from boxsync.client.prefetch import _merged, _overlap

spans = st.lists(st.tuples(st.integers(0, 200), st.integers(1, 50)), max_size=12)


def _bytes(spans: list[tuple[int, int]]) -> set[int]:
    return {at for offset, size in spans for at in range(offset, offset + size)}


@given(spans)
def test_merged_spans_cover_the_same_bytes_apart_and_in_order(given: list[tuple[int, int]]) -> None:
    merged = _merged(given)
    assert _bytes(merged) == _bytes(given)
    assert all(a[0] + a[1] < b[0] for a, b in zip(merged, merged[1:]))


@given(spans, st.tuples(st.integers(0, 260), st.integers(1, 50)))
def test_a_span_overlaps_spans_where_they_share_a_byte(given: list[tuple[int, int]], span: tuple[int, int]) -> None:
    assert _overlap(span, _merged(given)) == bool(_bytes([span]) & _bytes(given))
