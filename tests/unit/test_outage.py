"""
A repeated task's trouble reaching the index, said once.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.logger import Logger, formatEvent

from boxsync.server.index import IndexUnavailable
from boxsync.server.outage import Outage


@pytest_twisted.ensureDeferred
async def test_an_outage_is_said_once_and_its_end_once() -> None:
    said: list[dict[str, Any]] = []
    outage = Outage("reading the thing", Logger(observer=said.append))
    outcomes: list[BaseException | None] = [
        None, IndexUnavailable("gone"), IndexUnavailable("gone"), None, None, ValueError("odd"), None
    ]

    async def work() -> None:
        failure = outcomes.pop(0)
        if failure is not None:
            raise failure

    for _ in range(7):
        await outage.round(work)
    lines = [formatEvent(event) for event in said]
    assert lines == [
        "reading the thing: cannot for now: gone",
        "reading the thing again",
        "reading the thing",
        "reading the thing again",
    ]
    assert said[2]["log_failure"].check(ValueError)
    assert not outage.down
