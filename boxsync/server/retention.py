"""
How long what a box no longer shows is kept.

The versions overwritten or deleted are kept for C{--keep-versions} (30
days by default), thinned as they age (C{--thin-versions}, like Syncthing's
staggered versioning: every version for the first hour but one per 30
seconds, then one per hour for a day, then one per day), and the oldest
go first once the history is over C{--history-max} (a size or a share of
the disk, counting what the versions that stay take once they share
their blocks: a version that shares most of its blocks with a newer one
takes only the rest, punched out of its file yet or not), or the box's
disk is full; the last version of a file deleted since (the only copy of
it left) goes only once no other version is left to go. The newest kept
version of each path stays whatever the thinning: it is the file as it was when it was last overwritten or deleted.
The blocks sent ahead of a commit that never came are kept a day. All of
it is tidied away once an hour while the server runs, or at once with
C{boxsync-admin prune}, and the versions kept then share the disk space of
their common blocks (L{boxsync.server.sharing}).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Container, Iterable, Mapping, Sequence

from attrs import field, frozen
from twisted.logger import Logger

from ..config import size
from .blockstore import pending_deadline
from .box import Box
from .index import VersionRecord

__all__ = [
    "KEEP_VERSIONS",
    "THIN_VERSIONS",
    "ROOM_FLOOR",
    "ROOM_SHARE",
    "TIDY_SECONDS",
    "HistoryMax",
    "Retention",
    "Thinning",
    "Tidied",
    "only_copies",
    "parse_duration",
    "room_wanted",
    "shared_sizes",
    "tidy",
]

#: How long an overwritten or deleted version is kept by default: 30 days.
KEEP_VERSIONS = 30 * 86400.0

#: How versions are thinned by default: up to an hour old, one per 30
#: seconds; up to a day, one per hour; older, one per day.
THIN_VERSIONS = "1h:30s,1d:1h,30d:1d"

#: How often the boxes are tidied.
TIDY_SECONDS = 3600.0

#: A kept version's file is put in place just after the commit that ends
#: it: one whose file is missing is taken for lost only once it ended this
#: many seconds before the tidying.
LOST_GRACE_SECONDS = 60.0

#: When a commit finds the box's disk full, the oldest kept versions go
#: until this share of the disk is free (L{ROOM_FLOOR} at least): the files
#: the clients have now come before their history.
ROOM_SHARE = 0.05

#: The least room a full disk is given back, whatever its size.
ROOM_FLOOR = 64 * 1024 * 1024

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

log = Logger()


def parse_duration(text: str) -> float:
    """
    A duration such as C{30d}, C{12h}, C{90m}, C{45s} or C{3600} (seconds),
    in seconds.

    @raise ValueError: if C{text} is not one.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 30d, 12h, 90m or 45s")
    return float(match.group(1)) * _UNITS[match.group(2)]


@frozen
class Thinning:
    """
    Which of a path's kept versions stay as they age.

    @ivar steps: (age, every) pairs, youngest first: of the versions that
        ended up to C{age} seconds ago (and after the previous step's age),
        the newest of each C{every} seconds stays. Past the last age, the
        last C{every} goes on. No steps: every version stays.
    """

    steps: tuple[tuple[float, float], ...] = ()
    text: str = field(default="off", eq=False)

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, text: str) -> Thinning:
        """
        A thinning such as C{1h:30s,1d:1h,30d:1d}; C{off} (or C{none}) for
        none.

        @raise ValueError: if C{text} is not one.
        """
        if text.strip().lower() in ("off", "none", ""):
            return cls()
        steps = []
        for part in text.split(","):
            age, sep, every = part.partition(":")
            if not sep:
                raise ValueError(f"{part.strip()!r} is not AGE:EVERY, such as 1d:1h")
            steps.append((parse_duration(age), parse_duration(every)))
        if any(every <= 0 for _, every in steps) or [age for age, _ in steps] != sorted({age for age, _ in steps}):
            raise ValueError(f"{text!r}: each step needs a longer age than the one before and EVERY over 0")
        return cls(tuple(steps), text.strip())

    def _every(self, age: float) -> tuple[int, float] | None:
        """
        The step a version of C{age} seconds falls in, and its interval.
        """
        if not self.steps:
            return None
        for i, (limit, every) in enumerate(self.steps):
            if age <= limit:
                return i, every
        return len(self.steps) - 1, self.steps[-1][1]

    def thinned(self, versions: Iterable[VersionRecord], now_ns: int) -> list[VersionRecord]:
        """
        Those of C{versions} that thinning removes.
        """
        by_path: dict[str, list[VersionRecord]] = {}
        for version in versions:
            by_path.setdefault(version.path, []).append(version)
        gone = []
        for kept in by_path.values():
            kept.sort(key=lambda version: (version.ended_ns, version.seq), reverse=True)
            taken: set[tuple[int, int]] = set()
            for n, version in enumerate(kept):
                step = self._every((now_ns - version.ended_ns) / 1e9)
                if step is None:
                    continue
                bucket = (step[0], version.ended_ns // int(step[1] * 1e9))
                if bucket in taken and n > 0:
                    gone.append(version)
                taken.add(bucket)
        return gone


@frozen
class HistoryMax:
    """
    The most the kept versions of all accounts may take: C{size} bytes, or a
    C{share} of the box's disk. Neither: no limit.
    """

    size: int | None = None
    share: float | None = None
    text: str = field(default="none", eq=False)

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, text: str) -> HistoryMax:
        """
        A limit such as C{50G}, C{800M}, C{10%}; C{0} or C{none} for none.

        @raise ValueError: if C{text} is not one.
        """
        text = text.strip()
        if text.lower() in ("", "0", "none", "off"):
            return cls()
        share = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
        if share is not None:
            if not 0 < float(share.group(1)) <= 100:
                raise ValueError(f"{text!r}: a share of the disk is over 0 % and at most 100 %")
            return cls(share=float(share.group(1)) / 100, text=text)
        try:
            return cls(size=size(text), text=text)
        except ValueError:
            raise ValueError(f"{text!r} is not a size such as 50G or 800M, or a share of the disk such as 10%") from None

    def bytes_for(self, disk: Path) -> int | None:
        """
        The limit in bytes for a box on the file system of C{disk}.
        """
        if self.share is not None:
            stat = os.statvfs(disk)
            return int(stat.f_blocks * stat.f_frsize * self.share)
        return self.size


@frozen
class Retention:
    """
    What of the history is kept: see the module's description.
    """

    keep_seconds: float = KEEP_VERSIONS
    thinning: Thinning = field(factory=lambda: Thinning.parse(THIN_VERSIONS))
    history_max: HistoryMax = field(factory=HistoryMax)

    def doomed(
        self,
        versions: dict[str, Sequence[VersionRecord]],
        now: float,
        disk: Path,
        blocks: Mapping[str, Mapping[int, Sequence[tuple[str, int]]]] | None = None,
        wanted: int = 0,
        only_copies: Mapping[str, Container[int]] | None = None,
    ) -> dict[str, set[int]]:
        """
        The seqs of the versions to forget, by account, of the kept
        C{versions} of each account.

        @param blocks: by account, the blocks of the versions, by seq (as
            L{IIndex.kept_blocks} gives them): the size limit counts what
            the versions that stay take once they share their blocks
            (L{shared_sizes}), not their sizes.
        @param wanted: how many bytes of the disk to free besides (the disk
            is full): the oldest versions left go until they make that
            much, counted as the size limit counts them.
        @param only_copies: by account, the seqs of the versions that are
            the last of a file deleted since (L{only_copies}): for size,
            they go after every other version.
        """
        now_ns = int(now * 1e9)
        oldest_kept = now_ns - int(self.keep_seconds * 1e9)
        doomed: dict[str, set[int]] = {account: set() for account in versions}
        left: list[tuple[int, str, VersionRecord]] = []
        for account, kept in versions.items():
            # Nothing is kept for 0 seconds, whatever the clock's resolution.
            young = [version for version in kept if version.ended_ns >= oldest_kept and self.keep_seconds > 0]
            staying = {version.seq for version in young}
            doomed[account].update(version.seq for version in kept if version.seq not in staying)
            doomed[account].update(version.seq for version in self.thinning.thinned(young, now_ns))
            left.extend((version.ended_ns, account, version) for version in young if version.seq not in doomed[account])
        limit = self.history_max.bytes_for(disk)
        if limit is None and not wanted:
            return doomed
        taken: dict[tuple[str, int], int] = {}
        for account in versions:
            stay = [version for _, each, version in left if each == account]
            sizes = shared_sizes(stay, (blocks or {}).get(account, {}))
            taken.update(((account, seq), size) for seq, size in sizes.items())
        total = sum(taken.values())
        goal = total - wanted if limit is None else min(limit, total - wanted)
        # The oldest go first: no version of the same path left is older,
        # so none of them takes more once it is gone. The only copies of
        # deleted files go last (each is its path's newest, so no other
        # version of it is left to take more then).
        last = only_copies or {}

        def order(entry: tuple[int, str, VersionRecord]) -> tuple[bool, int, int]:
            ended_ns, account, version = entry
            return version.seq in last.get(account, ()), ended_ns, version.seq

        for _, account, version in sorted(left, key=order):
            if total <= goal:
                break
            doomed[account].add(version.seq)
            total -= taken[account, version.seq]
        return doomed


def shared_sizes(
    versions: Sequence[VersionRecord], blocks: Mapping[int, Sequence[tuple[str, int]]]
) -> dict[int, int]:
    """
    What each of C{versions} (of one account) takes on disk once they share
    their blocks (L{boxsync.server.sharing}): its size, less its C{blocks}
    that a newer one of them (a higher seq) holds too. A version with no
    blocks known is taken whole.
    """
    newer: set[str] = set()
    taken: dict[int, int] = {}
    for version in sorted(versions, key=lambda version: version.seq, reverse=True):
        own = blocks.get(version.seq, ())
        taken[version.seq] = max(0, version.size - sum(size for sha256, size in own if sha256 in newer))
        newer.update(sha256 for sha256, _ in own)
    return taken


@frozen
class Tidied:
    versions: int
    blocks: int


def room_wanted(disk: Path) -> int:
    """
    How many bytes to free on the full disk of C{disk}: up to L{ROOM_SHARE}
    of it free (L{ROOM_FLOOR} at least, the whole disk at most).
    """
    stat = os.statvfs(disk)
    total = stat.f_blocks * stat.f_frsize
    goal = min(max(int(total * ROOM_SHARE), ROOM_FLOOR), total)
    return max(goal - stat.f_bavail * stat.f_frsize, 0)


async def only_copies(box: Box, kept: Sequence[VersionRecord]) -> set[int]:
    """
    The seqs of the versions among C{kept} (of C{box}'s account) that
    are the last version of a file deleted since: its delete ended
    them, and the path is still deleted.
    """
    newest: dict[str, VersionRecord] = {}
    for version in kept:
        if version.path not in newest or version.seq > newest[version.path].seq:
            newest[version.path] = version
    rows = await box.index.get_many(box.account, list(newest))
    return {
        version.seq
        for path, version in newest.items()
        if (row := rows.get(path)) is not None and row.deleted and row.seq == version.ended_seq
    }


async def tidy(boxes: Iterable[Box], retention: Retention, now: float, share: bool = True, full: bool = False) -> Tidied:
    """
    Forget the versions of C{boxes} that C{retention} no longer keeps at
    C{now} and remove their files, make those kept share their common
    blocks (if C{share}), and sweep the blocks sent ahead of commits that
    never came. If the disk is C{full}, the oldest kept versions go too,
    until there is room again (L{room_wanted}).
    """
    boxes = list(boxes)
    if not boxes:
        return Tidied(0, 0)
    for box in boxes:
        await box.shared.forget_lost(int((now - LOST_GRACE_SECONDS) * 1e9))
    kept = {box.account: await box.index.kept_versions(box.account) for box in boxes}
    recipes = {box.account: await box.index.kept_blocks(box.account) for box in boxes}
    disk = boxes[0].storage.root
    wanted = room_wanted(disk) if full else 0
    last = (
        {box.account: await only_copies(box, kept[box.account]) for box in boxes}
        if wanted or retention.history_max.bytes_for(disk) is not None
        else None
    )
    doomed = retention.doomed(kept, now, disk, recipes, wanted, last)
    versions = blocks = 0
    for box in boxes:
        forgotten: list[VersionRecord] = await box.shared.forget(sorted(doomed[box.account]))
        versions += len(forgotten)
        if share:
            await box.shared.share()
        blocks += await box.blocks.sweep(pending_deadline(now))
    if versions or blocks:
        log.info(
            "tidied the box: {versions} old versions and {blocks} unused blocks removed",
            versions=versions,
            blocks=blocks,
        )
    return Tidied(versions, blocks)
