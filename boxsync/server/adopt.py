"""
Start-up reconciliation: make the index agree with what is really in the box;
and, while the server runs, the same for what a person changes in it by hand.

Files put into the box by hand while the server was down become new versions;
files removed by hand become deletions (and so do folders synced as folders
of their own); an empty folder made by hand becomes such a folder; a file whose upload was renamed into
place just before a crash (but not committed) is committed now. Whatever it
commits is published, for the streams of an account adopted while the server
runs.
"""

from __future__ import annotations

import time
from typing import Callable

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .box import Box
from .http import as_event
from .index import FileRecord
from .storage import BoxStorage, LocalFile, LocalFolder
from .plan import PAGE

__all__ = ["LOOK_SECONDS", "QUIET_SECONDS", "adopt", "Adopted", "look_for_hand_changes"]

log = Logger()

#: Seconds between two looks at a box for what a person changed in it by
#: hand (a walk of the box; a file is read only if its stamps changed).
LOOK_SECONDS = 300.0

#: How long a file must have been left alone before a look takes it: one
#: changed more recently is taken for one still being written (a copy into
#: the box under way) and left for a later look, so that no client gets it
#: torn.
QUIET_SECONDS = 2.0

#: Rows committed per transaction.
_BATCH = 1000


@frozen
class Adopted:
    """
    @ivar unsettled: the files left for a later look, changed too recently
        (L{QUIET_SECONDS}) to be taken for whole.
    """

    added: int
    changed: int
    removed: int
    checked: int
    unsettled: int = 0


def _unsettled(file: LocalFile, now_ns: int) -> bool:
    """
    Whether C{file} changed (its bytes, or anything of it) less than
    L{QUIET_SECONDS} before C{now_ns}: maybe still being written. Told by
    its ctime, which the system sets at every change (an mtime is what a
    program or a copy says it is); a ctime past C{now_ns} (the clock set
    back since) tells nothing.
    """
    return 0 <= now_ns - file.ctime_ns < QUIET_SECONDS * 1e9


async def _all_rows(box: Box) -> dict[str, FileRecord]:
    rows: dict[str, FileRecord] = {}
    after = ""
    while True:
        page = await box.index.page(box.account, after, PAGE * 10)
        if not page:
            return rows
        for row in page:
            rows[row.path] = row
        after = page[-1].path


def _as_it_was(live: FileRecord | None, file: LocalFile, sha256: str | None = None) -> bool:
    """
    Whether C{file} is still the version of its live row C{live}: by its
    stamps, its ctime among them (a same-size edit whose mtime was set back
    still moved the ctime); or, given its C{sha256}, by its bytes, only its
    ctime or its mtime having moved (a box copied without its dates, a
    C{touch}: the row's mtime is put back, L{BoxStorage.set_mtime}). A file
    made executable (or not) by hand is a new version either way.
    """
    if live is None:
        return False
    if sha256 is None:
        stamps = (file.size, file.mtime_ns, file.executable, file.ctime_ns)
        return (live.size, live.mtime_ns, live.executable, live.ctime_ns) == stamps
    return (live.size, live.executable, live.sha256) == (file.size, file.executable, sha256)


async def _put_back(storage: BoxStorage, live: FileRecord) -> LocalFile | None:
    """
    Give the file of C{live} its row's mtime again; the file as it is then.
    """
    return await storage.in_thread(lambda: storage.set_mtime(live.path, live.mtime_ns))


def _version(file: LocalFile, sha256: str) -> FileRecord:
    """
    The new version that C{file}, found in the box by hand, is.
    """
    return FileRecord(file.path, file.size, sha256, file.mtime_ns, 0, False, "box", file.ctime_ns, file.executable)


def _removal(row: FileRecord) -> FileRecord:
    """
    The delete of C{row}, whose file (or folder) was removed by hand.
    """
    return FileRecord(row.path, 0, row.sha256, row.mtime_ns, 0, True, "box", folder=row.folder)


async def adopt(box: Box, clock: IReactorTime, progress_seconds: float = 5.0) -> Adopted:
    """
    Bring the index of C{box} in line with its files, hashing (off the
    reactor thread) only files whose size, mtime or ctime differ from their
    row: a same-size edit whose mtime was set back still moved the ctime.
    A file made executable (or not) by hand is a new version too.
    """
    storage = box.storage

    rows = await _all_rows(box)
    found = await storage.in_thread(lambda: list(storage.walk()))
    files = [file for file in found if isinstance(file, LocalFile)]
    pending: list[FileRecord] = []
    restamped: list[tuple[str, int]] = []
    added = changed = 0
    last_report = clock.seconds()

    async def flush() -> None:
        if pending:
            # What each replaces is gone: changed or removed by hand, or
            # (renamed into place just before a crash) its kept name was
            # in the staging folder, emptied at start-up.
            for record in await box.index.commit_many(box.account, list(pending), None, [False] * len(pending)):
                box.hub.publish(box.account, as_event(record))
            pending.clear()

    for done, file in enumerate(files, start=1):
        row = rows.pop(file.path, None)
        live = row if row is not None and not row.deleted else None
        if _as_it_was(live, file):
            continue
        sha256 = await storage.in_thread(lambda: storage.hash(file.path))
        if sha256 is None:
            # Gone since the walk, or no longer a regular file: as if the
            # walk had not found it.
            if row is not None:
                rows[file.path] = row
            continue
        if _as_it_was(live, file, sha256):
            assert live is not None
            now = file if file.mtime_ns == live.mtime_ns else await _put_back(storage, live)
            if now is not None:
                restamped.append((file.path, now.ctime_ns))
            continue
        if live is not None:
            changed += 1
        else:
            added += 1
        pending.append(_version(file, sha256))
        if len(pending) >= _BATCH:
            await flush()
        if clock.seconds() - last_report >= progress_seconds:
            last_report = clock.seconds()
            log.info("adopting the box: {done}/{total} files checked", done=done, total=len(files))
    for folder in found:
        if not isinstance(folder, LocalFolder):
            continue
        row = rows.get(folder.path)
        if row is not None and row.folder and not row.deleted:
            del rows[folder.path]  # still there
        elif folder.empty:
            # Made by hand, or left empty by files removed by hand: a
            # folder of its own, as a client's scan would find it.
            rows.pop(folder.path, None)
            added += 1
            pending.append(FileRecord(folder.path, 0, "", folder.mtime_ns, 0, False, "box", folder=True))
    removed = [row for row in rows.values() if not row.deleted]
    pending.extend(_removal(row) for row in removed)
    await flush()
    if restamped:
        await box.index.restamp(box.account, restamped)
    result = Adopted(added, changed, len(removed), len(files))
    log.info(
        "box checked: {checked} files, {added} new, {changed} changed, {removed} removed by hand",
        checked=result.checked,
        added=result.added,
        changed=result.changed,
        removed=result.removed,
    )
    return result


async def look_for_hand_changes(box: Box, now_ns: Callable[[], int] = time.time_ns) -> Adopted:
    """
    What a person changed by hand in the box of C{box} while the server
    runs, taken as L{adopt} takes it at start-up: a file written or put
    there is a new version, a file removed is deleted. Each is committed on
    its own, in the box's turn, only if neither the file nor its row moved
    since they were looked at (L{Box.take_by_hand}): a client's commit made
    meanwhile wins, and what still differs is found at the next look. The
    removals go first (a file replaced by a folder by hand). Folders are
    left to the start-up adoption. A file changed in the last
    L{QUIET_SECONDS} is left for a later look (L{Adopted.unsettled}).

    @param now_ns: the time now, in ns since the epoch, as the file
        system's stamps count it.
    """
    storage = box.storage
    rows = await _all_rows(box)
    found = await storage.in_thread(lambda: list(storage.walk()))
    files = {file.path: file for file in found if isinstance(file, LocalFile)}
    removed = 0
    for gone in rows.values():
        if not gone.deleted and not gone.folder and gone.path not in files:
            removed += await box.take_by_hand(_removal(gone), gone, None) is not None
    added = changed = read = unsettled = 0
    now = now_ns()
    for path, file in files.items():
        row = rows.get(path)
        live = row if row is not None and not row.deleted else None
        if _as_it_was(live, file) or (live is not None and live.folder):
            continue
        if _unsettled(file, now):
            unsettled += 1
            continue
        sha256 = await storage.in_thread(lambda: storage.hash(path))
        read += 1
        if sha256 is None:
            continue
        if _as_it_was(live, file, sha256):
            assert live is not None
            await box.restamp_by_hand(live, file)
            continue
        if await box.take_by_hand(_version(file, sha256), row, file) is not None:
            changed += live is not None
            added += live is None
    log.debug(
        "looked at the box for changes by hand: {files} files, {read} read, {added} new, {changed} changed, "
        "{removed} removed, {unsettled} still being written",
        files=len(files),
        read=read,
        added=added,
        changed=changed,
        removed=removed,
        unsettled=unsettled,
    )
    return Adopted(added, changed, removed, len(files), unsettled)
