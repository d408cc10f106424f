"""
What a client passes over in its folder: links, special files, names the
wire cannot carry, what cannot be read, what a default ignore rule leaves
out. Each path is kept with why, as the last scan found it and the watcher
has seen since, and logged once, as it is first found; C{boxsync-client
status} lists them.

Beside them, the box's files a default rule keeps from coming here (a
C{*.part} put in the box through the web page): no scan finds those, so
they are kept apart, each with the seq of the version left in the box, as
the events said them.
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
    # The box's paths not brought here: the seq left in the box and why.
    _in_box: dict[str, tuple[int, str]] = field(factory=dict)

    def __len__(self) -> int:
        return len(self._reasons) + sum(path not in self._reasons for path in self._in_box)

    def items(self) -> Iterator[tuple[str, str]]:
        """
        Each path with why, in path order; a path passed over here as well
        as in the box with why it is here.
        """
        if not self._in_box:
            return ((path, self._reasons[path]) for path in self._sorted)
        merged = {path: reason for path, (_, reason) in self._in_box.items()} | self._reasons
        return iter(sorted(merged.items()))

    def in_box(self) -> dict[str, tuple[int, str]]:
        """
        The box's paths not brought here: each with the seq of the version
        left in the box, and why.
        """
        return dict(self._in_box)

    def left_in_box(self, path: str, seq: int, reason: str, said: bool = False) -> bool:
        """
        Count the box's version C{seq} of C{path} as not brought here, for
        C{reason}; logged unless it was so already (or C{said} before).

        @return: whether this is news (to be remembered).
        """
        known = self._in_box.get(path)
        if known is not None and known[0] >= seq:
            return False
        if not said and (known is None or known[1] != reason):
            self._said(path, reason)
        self._in_box[path] = (seq, reason)
        return True

    def gone_from_box(self, path: str, seq: int) -> bool:
        """
        The box's version of C{path} left out is gone: deleted in the box,
        or replaced by version C{seq}, which came here.

        @return: whether it was counted (to be forgotten).
        """
        known = self._in_box.get(path)
        if known is None or known[0] > seq:
            return False
        del self._in_box[path]
        return True

    def forget_box(self) -> None:
        """
        Forget every path left in the box: the box is to tell them all
        again.
        """
        self._in_box.clear()

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
