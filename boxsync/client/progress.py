"""
What the client shows while it works: a live display with a bar per transfer
on a terminal (through C{rich}), plain log lines otherwise.
"""

from __future__ import annotations

from typing import Any, Protocol

from attrs import define, field
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["MOVED_BACK", "Reporter", "LogReporter", "RichReporter", "reporter_for"]


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

    def deleted(self, path: str, on_server: bool = False, folder: bool = False) -> None:
        """
        The file (or C{folder}) C{path} was deleted here, or C{on_server}
        because it was deleted here.
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


#: How many transfers a second get a log line each; past that, the rest of
#: the second's are summed up in one line per kind.
LINES_PER_SECOND = 20

#: The note of a download taken from a file this client set aside (a rename
#: elsewhere): it ended well, and is summed up as those without a note are.
MOVED_BACK = "moved back in place"


def _deleted_text(path: str, on_server: bool, folder: bool) -> str:
    """
    What the user reads of a delete (see L{Reporter.deleted}).
    """
    return f"deleted {'the folder ' if folder else ''}{path}{' on the server' if on_server else ''}"


@define
class LogReporter:
    """
    One log line per finished transfer and message.

    A burst of small files (an unpacked archive, or a folder of them
    deleted) would log thousands of lines a second, and formatting them
    would cost more than the files: given a C{clock}, past C{burst} lines in
    a second the transfers that end well and the deletes are summed up in
    one line at the end of that second (per kind, and apart for those moved
    back in place). A transfer that ends with another note (a failure, a
    change meanwhile) always gets its line.

    @ivar clock: measures the seconds; C{None}: every transfer gets a line.
    """

    clock: IReactorTime | None = None
    burst: int = LINES_PER_SECOND
    log = Logger()
    _running: dict[str, tuple[str, int]] = field(factory=dict)
    _second: float = float("-inf")
    _lines: int = 0
    # Per kind (and note, for those moved back), the count and bytes of the
    # transfers summed up so far.
    _summed: dict[tuple[str, str], list[int]] = field(factory=dict)
    # Per (folder, on the server), the count of deletes summed up so far.
    _deletes: dict[tuple[bool, bool], int] = field(factory=dict)
    _summary: IDelayedCall | None = None

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
        if note in (None, MOVED_BACK) and self._over_burst():
            summed = self._summed.setdefault((kind, note or ""), [0, 0])
            summed[0] += 1
            summed[1] += size
            return
        self.log.info(
            "{kind}ed {path} ({size} bytes){note}",
            kind=kind.removesuffix("e"),
            path=path,
            size=size,
            note=f": {note}" if note else "",
        )

    def deleted(self, path: str, on_server: bool = False, folder: bool = False) -> None:
        if self._over_burst():
            self._deletes[folder, on_server] = self._deletes.get((folder, on_server), 0) + 1
            return
        self.log.info("{text}", text=_deleted_text(path, on_server, folder))

    def _over_burst(self) -> bool:
        """
        Whether this second has had its lines; if so, its summary is due at
        its end.
        """
        if self.clock is None:
            return False
        now = self.clock.seconds()
        if now - self._second >= 1:
            self._second, self._lines = now, 0
        if self._lines < self.burst:
            self._lines += 1
            return False
        if self._summary is None:
            self._summary = self.clock.callLater(self._second + 1 - now, self._sum_up)
        return True

    def _sum_up(self) -> None:
        self._summary = None
        for (kind, note), (count, size) in sorted(self._summed.items()):
            self.log.info(
                "{kind}ed {count} more {files} ({size} bytes) in the last second{note}",
                kind=kind.removesuffix("e"),
                count=count,
                files="file" if count == 1 else "files",
                size=size,
                note=f": {note}" if note else "",
            )
        self._summed.clear()
        for (folder, on_server), count in sorted(self._deletes.items()):
            what = "folder" if folder else "file"
            self.log.info(
                "deleted {count} more {what}{where} in the last second",
                count=count,
                what=what if count == 1 else f"{what}s",
                where=" on the server" if on_server else "",
            )
        self._deletes.clear()

    def message(self, text: str) -> None:
        self.log.info("{text}", text=text)

    def close(self) -> None:
        self._running.clear()
        if self._summary is not None:
            self._summary.cancel()
            self._sum_up()


@define
class RichReporter:
    """
    A live display: a bar per transfer, and a total with rate and ETA.

    A transfer that ends well counts whole in the total, whether or not its
    bytes were reported as they moved (those of a batch are not); one that
    fails takes what did not move out of the total. The total's line counts
    the files too.
    """

    console: Any
    _progress: Any = None
    _tasks: dict[str, Any] = field(factory=dict)
    _total: Any = None
    _started: int = 0
    _done: int = 0

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
        self._total = self._progress.add_task(self._counted(), total=0)
        self._progress.start()

    def _counted(self) -> str:
        return f"all transfers: {self._done} of {self._started} files"

    def _task(self, task: Any) -> Any:
        return next(each for each in self._progress.tasks if each.id == task)

    def started(self, kind: str, path: str, size: int) -> None:
        arrow = "↑" if kind == "upload" else "↓"
        self._tasks[path] = self._progress.add_task(f"{arrow} {path}", total=size)
        self._started += 1
        total = self._task(self._total).total or 0
        self._progress.update(self._total, total=total + size, description=self._counted())

    def progress(self, path: str, count: int) -> None:
        task = self._tasks.get(path)
        if task is not None:
            self._progress.advance(task, count)
            self._progress.advance(self._total, count)

    def finished(self, path: str, note: str | None = None) -> None:
        task = self._tasks.pop(path, None)
        if task is None:
            return
        ended = self._task(task)
        left = max(0, (ended.total or 0) - ended.completed)
        self._progress.remove_task(task)
        total = self._task(self._total)
        if note:
            # What did not move is no longer to move.
            self._started -= 1
            self._progress.update(self._total, total=(total.total or 0) - left, description=self._counted())
            self.message(f"{path}: {note}")
        else:
            self._done += 1
            self._progress.update(self._total, advance=left, description=self._counted())

    def deleted(self, path: str, on_server: bool = False, folder: bool = False) -> None:
        self.message(_deleted_text(path, on_server, folder))

    def message(self, text: str) -> None:
        self._progress.console.print(text)

    def close(self) -> None:
        self._progress.stop()


def reporter_for(
    stream: Any, quiet: bool, clock: IReactorTime | None = None, every_file: bool = False
) -> Reporter:
    """
    A live display if C{stream} is a terminal (and not C{quiet}), else log
    lines: one per transfer if C{every_file}, else summed up past a burst
    (measured by C{clock}).
    """
    if not quiet and hasattr(stream, "isatty") and stream.isatty():
        from rich.console import Console

        return RichReporter(Console(file=stream))
    return LogReporter(None if every_file else clock)
