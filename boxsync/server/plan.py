"""
The plan: what one client must do to be in sync, from its manifest and the
index, by the three-way rules of ``docs/protocol.md``.

L{decide} is the rule for one path, pure and total. L{plan} applies it to a
whole manifest and the index, reading the manifest (a L{StreamedManifest},
from its body) and the index a page at a time and yielding events one by
one, so a plan of any size is produced as the client drains it.
"""

from __future__ import annotations

from typing import AsyncIterable, AsyncIterator, Container, Protocol, Sequence, TypeVar

from ..batches import batched
from ..paths import folders_above
from ..wire import (
    Conflict,
    Delete,
    DeletedEntry,
    Event,
    Folder,
    FolderEntry,
    InSync,
    Manifest,
    Remove,
    Upload,
)
from .http import as_download, as_event
from .index import FileRecord, IIndex
from .manifest import PAGE, Entry, StreamedManifest

__all__ = ["decide", "unlisted", "plan", "listed_rows", "rows_since", "PAGE"]


def decide(entry: Entry, row: FileRecord | None) -> Event | None:
    """
    What a client with C{entry} must do about the server's C{row}.
    """
    if isinstance(entry, DeletedEntry):
        if row is None or row.deleted:
            return None
        if row.seq == entry.base:
            return Remove(entry.path, row.seq)
        return as_event(row)
    if isinstance(entry, FolderEntry):
        return _decide_folder(entry, row)
    if row is None:
        return Upload(entry.path, 0)
    if row.deleted:
        if entry.changed or entry.base == 0:
            return Upload(entry.path, row.seq)
        return Delete(entry.path, row.seq)
    if row.folder:
        # A folder in the box where the client has a file: the client is
        # told, and says why it cannot make it.
        return as_event(row)
    if row.sha256 == entry.sha256:
        if entry.executable in (None, row.executable):
            return None if row.seq == entry.base else InSync(entry.path, row.seq)
        # The same bytes, another mode: a change of the client's goes up;
        # a client that did not change it (or never had a version) takes
        # the server's.
        if entry.changed and entry.base > 0:
            return Upload(entry.path, row.seq)
        return as_download(row)
    if row.seq == entry.base:
        return Upload(entry.path, row.seq) if entry.changed else None
    if entry.changed:
        return Conflict(row.path, row.sha256, row.size, row.mtime_ns, row.seq, row.executable)
    return as_download(row)


async def _files_above(index: IIndex, account: str, paths: Sequence[str]) -> set[str]:
    """
    Which of the folders above C{paths} are live files in the box.
    """
    above = {folder for path in paths for folder in folders_above(path)}
    if not above:
        return set()
    rows = await index.get_many(account, sorted(above))
    return {path for path, row in rows.items() if not (row.deleted or row.folder)}


async def _holds_files(index: IIndex, account: str, path: str) -> bool:
    """
    Whether the box has live files (or folders of their own) below C{path}.
    """
    prefix = after = path + "/"
    while True:
        rows: list[FileRecord] = await index.page(account, after, PAGE)
        for row in rows:
            if not row.path.startswith(prefix):
                return False
            if not row.deleted:
                return True
        if len(rows) < PAGE:
            return False
        after = rows[-1].path


def _decide_folder(entry: FolderEntry, row: FileRecord | None) -> Event | None:
    """
    What a client that syncs the folder C{entry} must do about C{row}: a
    folder has no content, only a life, so the client's is new (base 0) or
    unchanged.
    """
    if row is None:
        return Upload(entry.path, 0)
    if row.deleted:
        return Upload(entry.path, row.seq) if entry.base == 0 else Delete(entry.path, row.seq)
    if not row.folder:
        # A file in the box where the client has a folder: as above.
        return as_event(row)
    return None if row.seq == entry.base else InSync(entry.path, row.seq)


def unlisted(row: FileRecord, cursor: int) -> Event | None:
    """
    What a client must do about a path it did not list (so it has not
    changed it since C{cursor}).
    """
    if row.seq <= cursor:
        return None
    if row.deleted and cursor == 0:
        return None
    return as_event(row)


class HasPath(Protocol):
    @property
    def path(self) -> str: ...


_Entry = TypeVar("_Entry", bound=HasPath)


async def _chunks(entries: Sequence[_Entry]) -> AsyncIterator[Sequence[_Entry]]:
    """
    C{entries}, L{PAGE} at a time.
    """
    for page in batched(entries, PAGE):
        yield page


async def listed_rows(
    index: IIndex, account: str, pages: AsyncIterable[Sequence[_Entry]]
) -> AsyncIterator[tuple[_Entry, FileRecord | None]]:
    """
    Each entry of C{pages} with the server's row for its path (C{None}:
    none), the index read a page at a time.
    """
    async for chunk in pages:
        rows = await index.get_many(account, [entry.path for entry in chunk])
        for entry in chunk:
            yield entry, rows.get(entry.path)


async def rows_since(
    index: IIndex, account: str, cursor: int, upto: int
) -> AsyncIterator[FileRecord]:
    """
    Every row with a seq above C{cursor} and up to C{upto}, tombstones
    included, in seq order, the index read a page at a time.
    """
    seq = cursor
    while seq < upto:
        rows = await index.since(account, seq, PAGE)
        if not rows:
            return
        for row in rows:
            if row.seq > upto:
                return
            seq = row.seq
            yield row


async def plan(
    index: IIndex, account: str, manifest: Manifest | StreamedManifest, upto: int
) -> AsyncIterator[Event]:
    """
    Every event of the plan for C{manifest}, covering the index up to seq
    C{upto} (later commits reach the client live).
    """
    pages: AsyncIterable[Sequence[Entry]]
    listed: Container[str]
    if isinstance(manifest, Manifest):
        entries: Sequence[Entry] = (*manifest.files, *manifest.deleted, *manifest.folders)
        pages, listed = _chunks(entries), {entry.path for entry in entries}
    else:
        pages, listed = manifest.pages(), manifest.listed
    # Uploads below a file the client lists as deleted (it made a folder
    # there): after that file's event, its delete, which they then wait for.
    later: list[Event] = []
    async for chunk in pages:
        rows = await index.get_many(account, [entry.path for entry in chunk])
        decided = [(entry, rows.get(entry.path)) for entry in chunk]
        events = [decide(entry, row) for entry, row in decided]
        files = await _files_above(index, account, [event.path for event in events if isinstance(event, Upload)])
        for (entry, row), event in zip(decided, events):
            if isinstance(event, Upload):
                above = files.intersection(folders_above(event.path))
                if any(path not in listed for path in above):
                    # A folder of the client's is a file in the box it never
                    # had: the client takes that file (its commit is later
                    # than its cursor) and keeps its folder, this path
                    # included, as a conflict copy. An upload here would be
                    # refused.
                    continue
                if above:
                    later.append(event)
                    continue
                if row is not None and row.deleted and await _holds_files(index, account, row.path):
                    # The client's file where the box has files below its
                    # deleted one: the box's path is a folder now (a file
                    # made in it), which the client makes, keeping its file
                    # as a conflict copy.
                    event = Folder(row.path, row.seq)
            if event is not None:
                yield event
    for event in later:
        yield event
    async for row in rows_since(index, account, manifest.cursor, upto):
        if row.path not in listed:
            event = unlisted(row, manifest.cursor)
            if event is not None:
                yield event
