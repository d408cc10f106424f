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


def test_what_the_box_holds_and_is_not_brought_here_is_kept_apart_by_seq(said: list[str]) -> None:
    """
    The box's paths not brought here are listed beside what the folder
    passes over (that reason first, for a path in both), survive a scan,
    and go only for their version or a newer one.
    """
    passed = PassedOver()
    passed.add("here.part", "here")
    assert passed.left_in_box("a.part", 5, "in the box")
    assert passed.left_in_box("here.part", 6, "in the box")
    assert not passed.left_in_box("a.part", 4, "in the box")  # an older version: nothing new
    assert passed.left_in_box("b.part", 7, "in the box", said=True)
    assert said == ["here.part: here", "a.part: in the box", "here.part: in the box"]
    passed.found([("z", "symbolic link")])
    assert list(passed.items()) == [
        ("a.part", "in the box"), ("b.part", "in the box"), ("here.part", "in the box"), ("z", "symbolic link")
    ]
    assert len(passed) == 4
    passed.found([("here.part", "here")])
    assert dict(passed.items())["here.part"] == "here" and len(passed) == 3
    assert not passed.gone_from_box("a.part", 4)  # the delete of an older version
    assert passed.gone_from_box("a.part", 9)
    assert not passed.gone_from_box("a.part", 9)
    assert passed.in_box() == {"here.part": (6, "in the box"), "b.part": (7, "in the box")}
    passed.forget_box()
    assert list(passed.items()) == [("here.part", "here")] and passed.in_box() == {}
