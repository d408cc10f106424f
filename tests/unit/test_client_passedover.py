"""
What a client passes over (L{boxsync.client.passedover}): kept with why,
logged once, and forgotten when gone, with what lay below it.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from twisted.logger import globalLogPublisher

from boxsync.client.passedover import PassedOver


@pytest.fixture
def said() -> Iterator[list[str]]:
    """
    The paths of the "not syncing" lines logged while a test runs.
    """
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("passed_over"):
            lines.append(f"{event['path']}: {event['why']}")

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def test_each_path_is_said_once_and_again_with_a_new_reason(said: list[str]) -> None:
    passed = PassedOver()
    passed.add("link", "symbolic link")
    passed.add("link", "symbolic link")
    passed.add("pipe", "not a regular file")
    passed.add("link", "not a regular file")
    assert said == ["link: symbolic link", "pipe: not a regular file", "link: not a regular file"]
    assert list(passed.items()) == [("link", "not a regular file"), ("pipe", "not a regular file")]
    assert len(passed) == 2


def test_a_scan_replaces_what_was_counted_and_says_only_what_is_new(said: list[str]) -> None:
    passed = PassedOver()
    passed.add("b", "symbolic link")
    passed.add("a", "symbolic link")
    passed.found([("c", "symbolic link"), ("a", "symbolic link")])
    assert list(passed.items()) == [("a", "symbolic link"), ("c", "symbolic link")]
    assert said == ["b: symbolic link", "a: symbolic link", "c: symbolic link"]
    passed.add("b", "symbolic link")
    assert list(passed.items()) == [("a", "symbolic link"), ("b", "symbolic link"), ("c", "symbolic link")]


def test_a_path_gone_takes_what_was_below_it_and_nothing_beside_it() -> None:
    passed = PassedOver()
    names = ["a", "a b", "a!", "a/x", "a/y/z", "a0", "ab/c", "b/a/x"]
    for name in reversed(names):
        passed.add(name, "symbolic link")
    passed.gone("a")
    assert [path for path, _ in passed.items()] == ["a b", "a!", "a0", "ab/c", "b/a/x"]
    passed.gone("b/a")
    passed.gone("nothing/here")
    assert [path for path, _ in passed.items()] == ["a b", "a!", "a0", "ab/c"]
    passed.gone("a0")
    assert [path for path, _ in passed.items()] == ["a b", "a!", "ab/c"]
    assert len(passed) == 3
