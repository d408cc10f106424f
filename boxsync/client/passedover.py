"""
What a client passes over in its folder: links, special files, names the
wire cannot carry, what cannot be read, what a default ignore rule leaves
out. Each path is kept with why, as the last scan found it and the watcher
has seen since, and logged once, as it is first found; C{boxsync-client
status} lists them.
"""

from __future__ import annotations

import bisect
from typing import Iterable, Iterator

from attrs import define, field
from twisted.logger import Logger, LogLevel

from .ignore import BY_DEFAULT

__all__ = ["PassedOver"]


@define
class PassedOver:
    """
    The paths passed over (relative to the folder, as it has them), each
    with why, kept in path order so that what lies below a folder is found
    without a look at every other.
    """

    log = Logger()

    _reasons: dict[str, str] = field(factory=dict)
    _sorted: list[str] = field(factory=list)

    def __len__(self) -> int:
        return len(self._reasons)

    def items(self) -> Iterator[tuple[str, str]]:
        """
        Each path with why, in path order.
        """
        return ((path, self._reasons[path]) for path in self._sorted)

    def add(self, path: str, reason: str) -> None:
        """
        Count C{path} as passed over for C{reason}; logged if it was not so
        already.
        """
        known = self._reasons.get(path)
        if known != reason:
            self._said(path, reason)
        if known is None:
            bisect.insort(self._sorted, path)
        self._reasons[path] = reason

    def found(self, passed_over: Iterable[tuple[str, str]]) -> None:
        """
        What a scan of the whole folder found passed over, in place of what
        was counted: only what is new (or has a new reason) is logged.
        """
        known, self._reasons = self._reasons, dict(passed_over)
        for path, reason in self._reasons.items():
            if known.get(path) != reason:
                self._said(path, reason)
        self._sorted = sorted(self._reasons)

    def gone(self, path: str) -> None:
        """
        Nothing at C{path}, or below it, is passed over any more.
        """
        if not self._reasons:
            return
        if self._reasons.pop(path, None) is not None:
            del self._sorted[bisect.bisect_left(self._sorted, path)]
        # The paths below it are one run of the sorted paths.
        prefix = path + "/"
        start = end = bisect.bisect_left(self._sorted, prefix)
        while end < len(self._sorted) and self._sorted[end].startswith(prefix):
            del self._reasons[self._sorted[end]]
            end += 1
        del self._sorted[start:end]

    def _said(self, path: str, reason: str) -> None:
        # Listed on its own by the status, not as its last error. What a
        # default rule leaves out comes and goes with each program's use.
        level = LogLevel.info if BY_DEFAULT in reason else LogLevel.warn
        self.log.emit(level, "not syncing {path}: {why}", path=path, why=reason, passed_over=True)
