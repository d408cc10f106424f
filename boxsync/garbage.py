"""
Python's cyclic garbage collector, set for programs that make many small
objects that live a short while.

A client joining a box of 10,000 small files makes a few hundred thousand
Deferreds, coroutines and paths within seconds; the server makes as many
for a burst of commits. Collecting every 700 objects made (Python's
default) walks the modules, classes and functions loaded at start-up over
and over, none of which is ever garbage: a quarter of the client's CPU time
in such a join. Most objects are freed by their counts as they go; the
collector is there for the cycles, which a larger first generation still
finds, a few times a second instead of hundreds.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

__all__ = ["FIRST_GENERATION", "collect_less_often", "collection_paused"]

#: Objects made (less those freed) before the first generation is collected.
FIRST_GENERATION = 20_000


def collect_less_often() -> None:
    """
    Set aside for good what the program has loaded so far (after freeing
    what of it is garbage already), and collect the first generation every
    L{FIRST_GENERATION} objects made: to call once, at start-up, once the
    program's modules are imported.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(FIRST_GENERATION, older, oldest)


@contextmanager
def collection_paused() -> Iterator[None]:
    """
    Pause the collector while a command reads and prints one large
    listing. Its 100,000s of rows hold no cycles, yet the collector, woken
    by every few thousand objects made, would walk them over and over. The
    command ends soon after; its rows are freed by their counts as ever.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
