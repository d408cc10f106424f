"""
The wire format of the clients boxsync replaces, served over the same core.

The Go server before boxsync had two clients, in Node.js and in Python, that
people still run. They send a list of paths with whole-second mtimes and get
back one JSON line per file to move; they upload with a C{File-Path} header
and download from C{/download/<path>}. This adapter turns those requests into
the calls boxsync's own routes make — the same plan paging, index, hub, box
and streaming uploads — so both kinds of client share one box and see each
other's commits live. ``docs/protocol.md`` ("Legacy clients") has the rules.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import IO, Any, AsyncIterator, Callable, cast

from attrs import define, field, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.server import Request

from ..paths import BadPath, normalize
from ..protocol import CLIENT_HEADER, Download, Event, ProtocolError, Upload
from .app import box_file, header, json_body
from .auth import Principal
from .box import Box
from .events import EventStream, Framing
from .hub import Hub
from .index import IIndex
from .limits import MAX_MANIFEST_ENTRIES
from .manifest import PathSet, in_pages, members
from .plan import listed_rows, rows_since, unlisted
from .uploads import take_upload

__all__ = [
    "LegacyAdapter",
    "LegacyEntry",
    "LEGACY",
    "DOWNLOAD",
    "UPLOAD",
    "FILE_PATH_HEADER",
    "encode_action",
    "parse_files",
    "legacy_plan",
]

#: The actions of a legacy stream line.
DOWNLOAD = 1
UPLOAD = 2

#: The header of a legacy upload that names the file, raw (not encoded).
FILE_PATH_HEADER = "File-Path"


def encode_action(event: Event, with_id: bool = False) -> bytes:
    """
    The line a legacy client reads for C{event}: C{Download} is action 1,
    C{Upload} action 2; every other event is left out (C{b""}).
    """
    if isinstance(event, Download):
        action = DOWNLOAD
    elif isinstance(event, Upload):
        action = UPLOAD
    else:
        return b""
    line = {"Path": event.path, "Action": action}
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


#: One JSON object a line, each line a write (an HTTP chunk) of its own, and
#: nothing else on the stream: no preamble, no keep-alive comments.
LEGACY = Framing("application/x-ndjson", encode_action)


@frozen
class LegacyEntry:
    """
    One file a legacy client has, with its mtime in whole seconds.
    """

    path: str
    last_update: int


def _last_update(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError("lastUpdate must be a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProtocolError("lastUpdate must be a finite number")
        return math.floor(value)
    return value


def parse_files(body: bytes, max_entries: int = 1_000_000) -> tuple[list[LegacyEntry], int]:
    """
    The files of a legacy C{POST /sync} body, and how many were left out
    because boxsync refuses their paths (they are never synced, but do not
    stop the rest from syncing). A path listed twice counts once, as listed
    last.

    @raise ProtocolError: if the body is not of the legacy shape.
    """
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ProtocolError(f"body is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ProtocolError("body must be a JSON object")
    files = raw.get("files")
    if files is None:
        files = []
    if not isinstance(files, list):
        raise ProtocolError("files must be a list")
    if len(files) > max_entries:
        raise ProtocolError(f"over {max_entries} files")
    entries: dict[str, LegacyEntry] = {}
    refused = 0
    for item in files:
        entry = _entry(item)
        if entry is None:
            refused += 1
            continue
        entries.pop(entry.path, None)
        entries[entry.path] = entry
    return list(entries.values()), refused


def _entry(item: object) -> LegacyEntry | None:
    """
    One item of a legacy body's C{files}, checked; C{None} if boxsync
    refuses its path.

    @raise ProtocolError: if it is not of the legacy shape.
    """
    if not isinstance(item, dict) or not isinstance(item.get("path"), str):
        raise ProtocolError('each file must be an object with a "path" string')
    last_update = _last_update(item.get("lastUpdate"))
    try:
        return LegacyEntry(normalize(item["path"]), last_update)
    except BadPath:
        return None


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
        yield n, _entry(value)
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
