"""
What libraries say through the standard library's C{logging} (psycopg's
connection pool, boto3), carried into C{twisted.logger}: one event per
record, on one line, under the logger's name, at its level.

Without it, a record no handler takes goes to C{logging.lastResort}, which
writes it to standard error; C{twistd} then logs each of its lines as an
error of C{stderr} (PostgreSQL out of reach: two such lines per attempt to
connect, with neither the level nor who said it).
"""

from __future__ import annotations

import logging

from twisted.application.service import Service
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher

__all__ = ["LibraryLogs", "TwistedHandler"]


def _level(levelno: int) -> LogLevel:
    if levelno >= logging.CRITICAL:
        return LogLevel.critical
    if levelno >= logging.ERROR:
        return LogLevel.error
    if levelno >= logging.WARNING:
        return LogLevel.warn
    if levelno >= logging.INFO:
        return LogLevel.info
    return LogLevel.debug


class TwistedHandler(logging.Handler):
    """
    A C{logging} handler that emits each record to C{observer} as a
    C{twisted.logger} event in the namespace of the record's logger, its
    lines joined into one.
    """

    def __init__(self, observer: ILogObserver = globalLogPublisher) -> None:
        super().__init__()
        self.observer = observer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = " ".join(line.strip() for line in self.format(record).splitlines() if line.strip())
            Logger(namespace=record.name, observer=self.observer).emit(
                _level(record.levelno), "{message}", message=message
            )
        except Exception:
            self.handleError(record)


class LibraryLogs(Service):
    """
    While running, what libraries log at C{level} or above (through the
    root logger) reaches C{observer}.
    """

    def __init__(self, observer: ILogObserver = globalLogPublisher, level: int = logging.WARNING) -> None:
        self.handler = TwistedHandler(observer)
        self.handler.setLevel(level)

    def startService(self) -> None:
        super().startService()
        logging.getLogger().addHandler(self.handler)

    def stopService(self) -> None:
        super().stopService()
        logging.getLogger().removeHandler(self.handler)
