"""
The routes of the clients boxsync replaces, served over the same core.

Their wire format is in L{boxsync.wire.legacy}. This adapter turns their
requests into the calls boxsync's own routes make — the same plan paging,
index, hub, box and streaming uploads — so both kinds of client share one
box and see each other's commits live. ``docs/protocol.md`` ("Legacy
clients") has the rules.
"""

from __future__ import annotations

import uuid
from typing import IO, Any, AsyncIterator, Callable, cast

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from ..paths import BadPath, normalize
from ..wire import CLIENT_HEADER, Event, ProtocolError, Upload
from ..wire.legacy import (
    FILE_PATH_HEADER,
    NDJSON,
    LegacyEntry,
    encode_action,
    legacy_entry,
)
from .auth import Principal
from .box import Box
from .events import EventStream, Framing
from .files import box_file
from .http import header, json_body
from .hub import Hub
from .index import IIndex
from .limits import MAX_MANIFEST_ENTRIES
from .manifest import PathSet, in_pages, members
from .plan import listed_rows, rows_since, unlisted
from .uploads import take_upload

__all__ = ["LegacyAdapter", "LEGACY", "StreamedFiles", "read_files", "legacy_plan"]

#: One JSON object a line, each line a write (an HTTP chunk) of its own, and
#: nothing else on the stream: no preamble, no keep-alive comments.
LEGACY = Framing(NDJSON, encode_action)


async def _entries(body: IO[bytes], clock: IReactorTime) -> AsyncIterator[tuple[int, LegacyEntry | None]]:
    """
    Each item of the C{files} of the legacy body in C{body}, checked, with
    its place in the list.
    """
    n = 0
    async for name, value, item in members(body, clock, ("files",)):
        if name != "files":
            continue
        if not item:
            if value is None:
                continue
            raise ProtocolError("files must be a list")
        yield n, legacy_entry(value)
        n += 1


@define
class StreamedFiles:
    """
    The files of a legacy C{POST /sync} body, checked whole, read again
    from the body a page at a time when the plan needs them (see
    L{boxsync.server.manifest}). A path listed twice counts once, as listed
    last.

    @ivar files: how many files it lists (a path listed twice counts twice).
    @ivar refused: how many it lists that boxsync refuses.
    @ivar listed: the paths it lists.
    @ivar _last: the place of the last listing of each path added twice to
        C{listed}.
    """

    files: int
    refused: int
    listed: PathSet
    _last: dict[str, int]
    _body: IO[bytes]
    _clock: IReactorTime

    def pages(self) -> AsyncIterator[list[LegacyEntry]]:
        """
        The files, L{PAGE} at a time, each where it was listed last.
        """
        return in_pages(self._kept())

    async def _kept(self) -> AsyncIterator[LegacyEntry]:
        async for n, entry in _entries(self._body, self._clock):
            if entry is not None and self._last.get(entry.path, n) == n:
                yield entry


async def read_files(body: IO[bytes], max_entries: int, clock: IReactorTime) -> StreamedFiles:
    """
    Check the legacy body in C{body}, item by item, giving the reactor a
    turn now and then.

    @raise ProtocolError: if it is not of the legacy shape, or lists over
        C{max_entries} files.
    """
    listed = PathSet()
    last: dict[str, int] = {}
    files = refused = 0
    async for n, entry in _entries(body, clock):
        if n >= max_entries:
            raise ProtocolError(f"over {max_entries} files")
        if entry is None:
            refused += 1
            continue
        files += 1
        if not listed.add(entry.path):
            last[entry.path] = n
    return StreamedFiles(files, refused, listed, last, body, clock)


async def legacy_plan(
    index: IIndex, account: str, entries: StreamedFiles, upto: int
) -> AsyncIterator[Event]:
    """
    The plan of a legacy client, by the old server's rule: a listed file is
    in sync if the server has it and the server's mtime (whole seconds) is
    not older than the client's; any other listed file is to upload; every
    live file up to seq C{upto} that is not listed is to download.
    Tombstones never show: legacy clients know no delete.
    """
    listed = entries.listed
    async for entry, row in listed_rows(index, account, entries.pages()):
        if row is None or row.deleted or row.mtime_ns // 10**9 < entry.last_update:
            yield Upload(entry.path, 0 if row is None else row.seq)
    async for row in rows_since(index, account, 0, upto):
        # With cursor 0, a live file gives a download and a tombstone nothing.
        event = unlisted(row, 0) if row.path not in listed else None
        if event is not None:
            yield event


def _file_path(request: IRequest) -> str:
    raw = request.getHeader(FILE_PATH_HEADER.encode())
    if not raw:
        raise BadPath(f"a legacy upload needs a {FILE_PATH_HEADER} header")
    assert isinstance(raw, bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Both old clients write header values as Latin-1.
        return raw.decode("latin-1")


@define
class LegacyAdapter:
    """
    The routes of the legacy clients (C{POST /sync} without C{Accept:
    text/event-stream}, C{POST /upload}, C{GET /download/<path>}), for
    L{boxsync.server.app.BoxsyncApp} to call once it has authenticated the
    request.
    """

    boxes: Callable[[str], Box]
    hub: Hub
    max_entries: int = MAX_MANIFEST_ENTRIES
    #: Gives the reactor a turn while a large body is read.
    clock: IReactorTime = field(kw_only=True)
    log = Logger()

    async def sync(self, request: IRequest, principal: Principal) -> None:
        entries = await read_files(request.content, self.max_entries, self.clock)
        box = self.boxes(principal.account)
        client = header(request, CLIENT_HEADER) or principal.client or "a legacy client"
        stream = EventStream(cast(Request, request), uuid.uuid4().hex, client, LEGACY)
        self.log.info(
            "{client} connected with the legacy protocol: {files} files, {refused} refused",
            client=client,
            files=entries.files,
            refused=entries.refused,
        )
        await stream.serve(
            self.hub,
            principal,
            box.index,
            lambda upto: legacy_plan(box.index, principal.account, entries, upto),
        )

    async def upload(self, request: IRequest, principal: Principal) -> bytes:
        # A bad path raises before the staging file is claimed: the request
        # discards it when it finishes.
        path = normalize(_file_path(request))
        record = await self.boxes(principal.account).upload(
            path,
            await take_upload(request),
            base=None,
            sha256=None,
            mtime_ns=None,
            origin=header(request, CLIENT_HEADER) or principal.client or "a legacy client",
        )
        return json_body(request, 200, {"path": record.path, "seq": record.seq})

    async def download(self, request: IRequest, principal: Principal, path: str) -> Any:
        return await box_file(self.boxes(principal.account), path)
