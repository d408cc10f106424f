"""
What the client shows while it works: a live display with a bar per transfer
on a terminal (through C{rich}), plain log lines otherwise.
"""

from __future__ import annotations

from typing import Any, Protocol

from attrs import define, field
from twisted.logger import Logger

__all__ = ["Reporter", "LogReporter", "RichReporter", "reporter_for"]


class Reporter(Protocol):
    def started(self, kind: str, path: str, size: int) -> None:
        """
        A transfer of C{size} bytes began (C{kind}: upload or download).
        """

    def progress(self, path: str, count: int) -> None:
        """
        C{count} more bytes of C{path} moved.
        """

    def finished(self, path: str, note: str | None = None) -> None:
        """
        The transfer of C{path} ended (the first call for it counts).
        """

    def message(self, text: str) -> None:
        """
        Something happened that the user should see.
        """

    def close(self) -> None:
        """
        Stop drawing.
        """


#: A transfer larger than this gets a line (at debug level) as it starts too:
#: a smaller one ends about as soon.
NOTED_START = 1024 * 1024


@define
class LogReporter:
    """
    One log line per finished transfer and message.
    """

    log = Logger()
    _running: dict[str, tuple[str, int]] = field(factory=dict)

    def started(self, kind: str, path: str, size: int) -> None:
        self._running[path] = (kind, size)
        if size > NOTED_START:
            self.log.debug("{kind} {path} ({size} bytes) started", kind=kind, path=path, size=size)

    def progress(self, path: str, count: int) -> None:
        pass

    def finished(self, path: str, note: str | None = None) -> None:
        if path not in self._running:
            return
        kind, size = self._running.pop(path)
        self.log.info(
            "{kind}ed {path} ({size} bytes){note}",
            kind=kind.removesuffix("e"),
            path=path,
            size=size,
            note=f": {note}" if note else "",
        )

    def message(self, text: str) -> None:
        self.log.info("{text}", text=text)

    def close(self) -> None:
        self._running.clear()


@define
class RichReporter:
    """
    A live display: a bar per transfer, and a total with rate and ETA.
    """

    console: Any
    _progress: Any = None
    _tasks: dict[str, Any] = field(factory=dict)
    _total: Any = None

    def __attrs_post_init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._total = self._progress.add_task("all transfers", total=0)
        self._progress.start()

    def started(self, kind: str, path: str, size: int) -> None:
        arrow = "↑" if kind == "upload" else "↓"
        self._tasks[path] = self._progress.add_task(f"{arrow} {path}", total=size)
        total = self._progress.tasks[self._total].total or 0
        self._progress.update(self._total, total=total + size)

    def progress(self, path: str, count: int) -> None:
        task = self._tasks.get(path)
        if task is not None:
            self._progress.advance(task, count)
            self._progress.advance(self._total, count)

    def finished(self, path: str, note: str | None = None) -> None:
        task = self._tasks.pop(path, None)
        if task is not None:
            self._progress.remove_task(task)
            if note:
                self.message(f"{path}: {note}")

    def message(self, text: str) -> None:
        self._progress.console.print(text)

    def close(self) -> None:
        self._progress.stop()


def reporter_for(stream: Any, quiet: bool) -> Reporter:
    """
    A live display if C{stream} is a terminal (and not C{quiet}), else log
    lines.
    """
    if not quiet and hasattr(stream, "isatty") and stream.isatty():
        from rich.console import Console

        return RichReporter(Console(file=stream))
    return LogReporter()
