"""
The client's text log writes the same lines as Twisted's text observer.
"""

from __future__ import annotations

import io
from typing import Any, Callable

from boxsync.logs import text_observer
from twisted.logger import LogLevel, textFileLogObserver
from twisted.python.failure import Failure


def _events() -> list[dict[str, Any]]:
    try:
        1 / 0
    except ZeroDivisionError:
        failure = Failure()
    # Within one second, across seconds, back in time, and with no time.
    times = [1_790_000_000.1, 1_790_000_000.9, 1_790_000_001.0, 1_789_999_000.5, None]
    events: list[dict[str, Any]] = [
        {
            "log_format": "moved {path} ({size} bytes)",
            "path": f"d/f{n}.bin",
            "size": n,
            "log_time": when,
            "log_level": LogLevel.info,
            "log_namespace": "boxsync.client.engine",
        }
        for n, when in enumerate(times)
    ]
    events.append(dict(events[0], log_format="a job failed", log_failure=failure, log_level=LogLevel.critical))
    return events


def _write(observer_for: Callable[[Any], Callable[[dict[str, Any]], None]]) -> str:
    out = io.StringIO()
    observer = observer_for(out)
    for event in _events():
        observer(event)
    return out.getvalue()


def test_lines_are_those_of_the_text_observer() -> None:
    ours = _write(text_observer)
    assert ours == _write(textFileLogObserver)
    lines = ours.splitlines()
    stamps = [line.split(" [")[0] for line in lines[:4]]
    # One stamp for the first second, a new one for each other second.
    assert stamps[0] == stamps[1] and len(set(stamps)) == 3 and stamps[0].startswith("2026-09-2")
    assert lines[4].startswith("- [boxsync.client.engine#info] moved d/f4.bin")
    assert "ZeroDivisionError" in ours
