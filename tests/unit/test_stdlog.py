"""
What libraries log through the standard library's C{logging} reaches
C{twisted.logger} as one event per record, on one line, while the service
runs.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.logger import LogLevel, formatEvent

from boxsync.stdlog import LibraryLogs, TwistedHandler


def _pool() -> logging.Logger:
    pool = logging.getLogger("psycopg.pool")
    pool.propagate = True
    return pool


def test_a_record_is_one_event_on_one_line_under_its_logger() -> None:
    events: list[dict[str, Any]] = []
    handler = TwistedHandler(events.append)
    record = logging.LogRecord(
        "psycopg.pool",
        logging.WARNING,
        __file__,
        1,
        "error connecting in %r: connection failed: refused\n\tIs the server running on that host?",
        ("boxsync-index",),
        None,
    )
    handler.emit(record)
    (event,) = events
    assert event["log_namespace"] == "psycopg.pool"
    assert event["log_level"] == LogLevel.warn
    assert formatEvent(event) == (
        "error connecting in 'boxsync-index': connection failed: refused Is the server running on that host?"
    )


def test_each_level_keeps_its_rank() -> None:
    events: list[dict[str, Any]] = []
    handler = TwistedHandler(events.append)
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        handler.emit(logging.LogRecord("boto3", level, __file__, 1, "said", (), None))
    assert [event["log_level"] for event in events] == [
        LogLevel.debug,
        LogLevel.info,
        LogLevel.warn,
        LogLevel.error,
        LogLevel.critical,
    ]


def test_only_while_the_service_runs_and_from_its_level_on() -> None:
    events: list[dict[str, Any]] = []
    service = LibraryLogs(events.append)
    _pool().warning("before")
    service.startService()
    try:
        _pool().info("below the level")
        _pool().warning("while %s", "running")
    finally:
        service.stopService()
    _pool().warning("after")
    assert [formatEvent(event) for event in events] == ["while running"]
