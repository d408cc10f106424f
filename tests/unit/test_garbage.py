"""
The collector as the two programs set it at start-up: what is loaded is set
aside, and the first generation is collected less often; cycles made after
are still found.
"""

from __future__ import annotations

import gc
import weakref

from boxsync.garbage import FIRST_GENERATION, collect_less_often, collection_paused


class Node:
    other: object = None


def test_what_is_loaded_is_set_aside_and_collected_less_often() -> None:
    _, older, oldest = gc.get_threshold()
    collect_less_often()
    assert gc.get_threshold() == (FIRST_GENERATION, older, oldest)
    assert gc.get_freeze_count() > 1000  # the modules' objects, at least


def test_a_cycle_made_after_is_still_collected() -> None:
    collect_less_often()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    # A first generation's worth of objects made (and kept), as a program
    # makes them: the generation is collected by itself.
    made = [[None] for _ in range(FIRST_GENERATION + 1)]
    assert gone() is None
    assert len(made) > FIRST_GENERATION


def test_a_listing_pauses_the_collector_and_resumes_it() -> None:
    with collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
