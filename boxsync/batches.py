"""
Items taken a few at a time: L{batched}, as C{itertools.batched} of Python
3.12 does, for the pages of a query, the keys of one S3 call, the blocks of
one question or one notification.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Iterator, TypeVar

__all__ = ["batched"]

_T = TypeVar("_T")


def batched(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """
    C{items} in order, in lists of C{size} (the last one maybe shorter),
    taken as they are asked for.

    @raise ValueError: if C{size} is under 1.
    """
    if size < 1:
        raise ValueError("a batch holds at least one item")
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch
