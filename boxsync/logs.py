"""
The text log a client writes: the lines of C{twisted.logger}'s
C{textFileLogObserver}, at half its cost.

A sync logs a line per file moved; on a burst of small files, formatting
each line's time stamp (a time zone computed anew for every event) was the
larger part of that line's cost. The stamp has whole seconds, so it is
formatted once a second.
"""

from __future__ import annotations

from typing import IO, Any

from attrs import define
from twisted.logger import FileLogObserver, formatEventAsClassicLogText, formatTime

__all__ = ["text_observer"]


@define
class _Stamps:
    """
    Formats a log time as C{formatTime} does, once per second.
    """

    _second: int | None = None
    _text: str = ""

    def __call__(self, when: float | None) -> str:
        if when is None:
            return formatTime(when)
        second = int(when)
        if second != self._second:
            self._second, self._text = second, formatTime(second)
        return self._text


def text_observer(stream: IO[Any]) -> FileLogObserver:
    """
    An observer that writes each event to C{stream} as a line of text, as
    C{textFileLogObserver(stream)} does.
    """
    stamps = _Stamps()
    return FileLogObserver(stream, lambda event: formatEventAsClassicLogText(event, formatTime=stamps))
